// Training runs that cannot lie or lose work: runs whose every
// step is skipped fail loudly with honest metrics, absurd optimizer settings are
// refused at the config boundary, an update that would write non-finite weights is
// skipped, SIGINT/SIGTERM/SIGHUP checkpoint and exit 128 + signo, and image-folder
// runs never end early with exit 0.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { listCheckpoints, readState } from '../src/checkpoint/index.js';
import { loadConfig } from '../src/config/index.js';
import { ConfigError } from '../src/errors.js';
import { encodePng } from '../src/generate/images.js';
import { encodeNpyParts } from '../src/io/npy.js';
import { DiTModel } from '../src/native.js';
import { checkOptimizerConfig, NoProgressError, signalExitCode, signalNamed, signalNumber, skipReason, SkipGuard, STOP_SIGNALS, type StopSignal } from '../src/train/guard.js';
import { accumulate, emptyAccum, summarise, type MetricsLine } from '../src/train/metrics.js';
import { tinyConfigFile, useAddon } from './helpers-e2e.js';
import { HYPER, SMALL, linearTables, uniformF32 } from './helpers/native-fixtures.js';

useAddon();
const CLI = path.resolve('src/cli.ts');
const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { encoding: 'utf8', env: process.env });
const metrics = (exp: string) => readFileSync(path.join(exp, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as MetricsLine);

// ---- units: reasons, the guard, the metrics of skipped steps ---------------------------

const step = (loss: number[], gradNorm: number, skipped: boolean) =>
  ({ loss: Float32Array.from(loss), mse: Float32Array.from(loss), vb: new Float32Array(loss.length), gradNorm, skipped });

test('skipReason: loss, then gradient, else the update; null for an applied step', () => {
  assert.equal(skipReason(step([1, 2], 0.5, false)), null);
  assert.equal(skipReason(step([1, NaN], NaN, true)), 'loss');
  assert.equal(skipReason(step([1, 2], Infinity, true)), 'gradient');
  assert.equal(skipReason(step([1, 2], 0.5, true)), 'update');
});

test('SkipGuard stops after max_consecutive_skips in a row, and fails a run that applied no step', () => {
  const g = new SkipGuard(3, 10, () => '/x/checkpoints/0000010');
  g.record(11, 'loss');
  g.record(12, 'update');
  g.record(13, null); // an applied step resets the streak
  g.record(14, 'gradient');
  g.record(15, 'gradient');
  assert.throws(() => g.record(16, 'update'), (e: unknown) => {
    assert.ok(e instanceof NoProgressError);
    assert.match(e.message, /training stopped at step 16: the last 3 steps were all skipped \(max_consecutive_skips = 3\)/);
    assert.match(e.message, /2 because the gradient was not finite.*1 because loss and gradient were finite but the AdamW update/);
    assert.match(e.message, /weights are those of step 13.*last checkpoint is \/x\/checkpoints\/0000010; no checkpoint was written/);
    return true;
  });
  assert.deepEqual(g.skipped, { count: 5, byReason: { loss: 1, gradient: 2, update: 2 } });
  const never = new SkipGuard(0, 0, () => '');
  for (let s = 1; s <= 200; s++) never.record(s, 'loss'); // 0: never stops on a streak ...
  assert.throws(() => never.finish(200), /training made no progress: all 200 steps of this run \(to step 200\) were skipped; 200 because the loss was not finite/);
  const fine = new SkipGuard(5, 0, () => '');
  fine.record(1, 'loss');
  fine.record(2, null);
  fine.finish(2); // ... but a run that applied a step ends normally
  assert.equal(fine.skipped.count, 1);
});

test('metrics: skipped steps are counted by reason and kept out of the means (null, not 0, when all were skipped)', () => {
  const T = 100;
  const t = Int32Array.from([5, 95]);
  const all = emptyAccum();
  accumulate(all, T, t, step([NaN, NaN], NaN, true));
  accumulate(all, T, t, step([3, 4], 1e3, true));
  const a = summarise(all, { step: 2, epoch: 0, lr: 1, imagesPerSec: 1, T });
  assert.equal(a.loss, null);
  assert.equal(a.mse, null);
  assert.equal(a.vb, null);
  assert.equal(a.grad_norm, null);
  assert.equal(a.skipped, 2);
  assert.deepEqual(a.skipped_by, { loss: 1, gradient: 0, update: 1 });
  assert.ok(a.loss_per_bucket.every((v) => v === null));
  assert.equal(a.t_hist.reduce((x, y) => x + y, 0), 4, 'the drawn time steps are still counted');
  const mixed = emptyAccum();
  accumulate(mixed, T, t, step([1, 3], 2, false));
  accumulate(mixed, T, t, step([100, 100], 50, true)); // finite but skipped (an update overflow): not in the means
  const m = summarise(mixed, { step: 2, epoch: 0, lr: 1, imagesPerSec: 1, T });
  assert.equal(m.loss, 2);
  assert.equal(m.grad_norm, 2);
  assert.deepEqual(m.loss_per_bucket.filter((v) => v !== null), [1, 3]);
  // an accumulator from an older checkpoint (no skippedBy / bucketCount) still works
  const old = { steps: 1, samples: 2, loss: 4, mse: 4, vb: 0, gradNorm: 1, skipped: 0, tHist: new Array(20).fill(0), bucketLoss: new Array(20).fill(0) };
  old.tHist[1] = 2; old.bucketLoss[1] = 4;
  accumulate(old, T, t, step([NaN, 1], NaN, true));
  const o = summarise(old, { step: 2, epoch: 0, lr: 1, imagesPerSec: 1, T });
  assert.equal(o.loss, 2);
  assert.deepEqual(o.skipped_by, { loss: 1, gradient: 0, update: 0 });
});

test('signal exit codes follow the shell: 128 + signo', () => {
  assert.deepEqual(STOP_SIGNALS.map(signalExitCode), [130, 143, 129, 140]);
  // the numbers ranks agree on (the largest wins) map back to the same signal; 0: none
  for (const s of STOP_SIGNALS) assert.equal(signalNamed(signalNumber(s)), s);
  assert.equal(signalNumber(undefined), 0);
  assert.equal(signalNamed(0), undefined);
});

// ---- the native step: an update that would write non-finite weights ---------------------

test('lr = 1e38 through the addon: the step is skipped and weights, moments and EMA stay bitwise as they were', async () => {
  const m = DiTModel.create({ config: SMALL, seed: 1, threads: 2 });
  m.setTables(linearTables(1000));
  const N = 2;
  const per = SMALL.inChannels * SMALL.inputSize * SMALL.inputSize;
  const b = (seed: number) => ({
    x0: uniformF32(N * per, 1, seed), t: Int32Array.from([10, 900]), y: Int32Array.from([0, 1]), weight: Float32Array.from([1, 1]),
  });
  try {
    await m.trainStep(b(1), HYPER);
    const names = m.params().filter((p) => p.trainable).map((p) => p.name);
    const snap = () => names.map((n) => (['model', 'ema', 'adam_m', 'adam_v'] as const).map((s) => m.readParam(n, s)));
    const before = snap();
    const r = await m.trainStep(b(2), { ...HYPER, lr: 1e38 });
    assert.equal(r.skipped, true);
    assert.ok(r.loss.every(Number.isFinite) && Number.isFinite(r.gradNorm), 'loss and gradient were finite');
    assert.equal(skipReason(r), 'update');
    assert.equal(m.getStep(), 1);
    assert.deepEqual(snap(), before);
    const ok = await m.trainStep(b(3), HYPER);
    assert.equal(ok.skipped, false);
  } finally {
    m.dispose();
  }
});

// ---- CLI: runs that make no progress -----------------------------------------------------

/** A tiny latents .npy (unconditional, [16, 4, 8, 8]): `scale` times uniform noise. */
function writeLatents(npy: string, scale: number): string {
  const N = 16;
  const x = uniformF32(N * 4 * 8 * 8, 1, 5).map((v) => v * scale);
  writeFileSync(npy, Buffer.concat(encodeNpyParts({ dtype: 'float32', shape: [N, 4, 8, 8], data: x })));
  return npy;
}

/** A tiny config training on writeLatents(scale). */
function latentsConfig(scale: number): { file: string; exp: string } {
  const { file, exp } = tinyConfigFile();
  const npy = writeLatents(path.join(path.dirname(file), 'lat.npy'), scale);
  const yaml = readFileSync(file, 'utf8')
    .replace(/^model: .*$/m, 'model: {name: DiT-Ti/4, input_size: 8, in_channels: 4, num_classes: 0, depth: 2, hidden_size: 32, num_heads: 2}')
    .replace(/^data: .*$/m, `data: {name: latents, root: ${npy}, num_classes: 0, batch_size: 4}`);
  writeFileSync(file, yaml);
  return { file, exp };
}

test('latents x1e30: every step skipped -> exit 1 with the reason, honest metrics, no checkpoint', () => {
  const { file, exp } = latentsConfig(1e30);
  const r = run(['-c', file, 'max_training_steps=6']);
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /speed-train: error: training made no progress: all 6 steps of this run \(to step 6\) were skipped; 6 because the loss was not finite/);
  assert.doesNotMatch(r.stdout, /final loss 0\.0000|^trained/m);
  const lines = metrics(exp);
  assert.equal(lines.length, 6);
  for (const l of lines) {
    assert.equal(l.loss, null);
    assert.equal(l.grad_norm, null);
    assert.equal(l.skipped, 1);
    assert.equal(l.skipped_by.loss, 1);
  }
  assert.deepEqual(listCheckpoints(exp), [], 'no checkpoint of a run that applied no step');
});

test('max_consecutive_skips: a streak of skipped steps stops the run at once; the last good checkpoint survives', () => {
  const { file, exp } = latentsConfig(1e30);
  // first a healthy run on sane data writes checkpoint 2 into the same experiment ...
  const sane = writeLatents(path.join(path.dirname(file), 'sane.npy'), 1);
  const good = run(['-c', file, 'max_training_steps=2', `data.root=${sane}`]);
  assert.equal(good.status, 0, good.stderr);
  assert.equal(listCheckpoints(exp).length, 1);
  // ... then the x1e30 data resumes from it and skips every step
  const r = run(['-c', file, 'max_training_steps=1000', 'max_consecutive_skips=4', 'ckpt_every=1', '--resume', 'latest']);
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /training stopped at step 6: the last 4 steps were all skipped \(max_consecutive_skips = 4\); 4 because the loss was not finite/);
  assert.match(r.stderr, /weights are those of step 2/);
  // the checkpoints after step 2 hold the unchanged (finite) weights; none is of a diverged state
  for (const d of listCheckpoints(exp)) assert.ok(readState(d).step <= 5, d);
});

test('optimizer.lr = 1e20 / 1e38 and other absurd settings are refused at the config boundary', () => {
  const { file } = tinyConfigFile();
  const r = run(['-c', file, 'optimizer.lr=1e38']); // the CLI: exit 1, one line naming key, value and bound
  assert.equal(r.status, 1);
  assert.ok(r.stderr.includes('speed-train: error: command line: optimizer.lr: 1e+38 is out of range: expected <= 1'), r.stderr);
  const refused = (o: string, re: RegExp) => assert.throws(() => loadConfig(file, { overrides: [o], phase: 'train' }), (e: unknown) => e instanceof ConfigError && re.test(e.message));
  refused('optimizer.lr=1e20', /optimizer\.lr: 100000000000000000000 is out of range: expected <= 1/);
  refused('optimizer.weight_decay=5', /optimizer\.weight_decay: 5 is out of range: expected <= 1/);
  refused('max_consecutive_skips=-1', /max_consecutive_skips: -1 is out of range/);
  const c = loadConfig(file, { overrides: ['optimizer.betas=[0.9, 1]'], phase: 'train' }).config;
  assert.throws(() => checkOptimizerConfig(c.optimizer), /optimizer\.betas: element 1: 1 is out of range: expected a value in \[0, 1\)/);
  checkOptimizerConfig(loadConfig(file, { overrides: [], phase: 'train' }).config.optimizer);
});

// ---- CLI: signals ---------------------------------------------------------------------------

async function startAndSignal(file: string, sigs: StopSignal[], extra: string[] = [], afterStep = 10): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, '-c', file, 'max_training_steps=100000', 'log_every=5', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer) => { output += d.toString(); if (new RegExp(`train ${afterStep}/`).test(output)) resolve(); };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    void exited.then(({ code }) => reject(new Error(`exited early (${code}): ${output}`)));
  });
  for (const s of sigs) child.kill(s);
  const e = await exited;
  return { ...e, output };
}

/** Every directory under checkpoints/ is complete (the four files, a readable state) - or absent. */
function assertCheckpointsComplete(exp: string): void {
  const root = path.join(exp, 'checkpoints');
  if (!existsSync(root)) return;
  for (const n of readdirSync(root).filter((x) => /^\d{7,}$/.test(x))) {
    const d = path.join(root, n);
    for (const f of ['model.safetensors', 'ema.safetensors', 'optimizer.safetensors', 'state.json']) assert.ok(existsSync(path.join(d, f)), `${d}/${f}`);
    assert.equal(readState(d).step, Number(n));
  }
}

for (const sig of STOP_SIGNALS) {
  test(`${sig}: one checkpoint, exit ${signalExitCode(sig)}, and --resume latest continues from it`, async () => {
    const { file, exp } = tinyConfigFile();
    const r = await startAndSignal(file, [sig]);
    assert.equal(r.code, signalExitCode(sig), r.output);
    assert.match(r.output, new RegExp(`${sig === 'SIGINT' ? 'Ctrl-C' : sig}: writing a checkpoint after this step`));
    const ckpts = listCheckpoints(exp);
    assert.equal(ckpts.length, 1);
    assertCheckpointsComplete(exp);
    const at = readState(ckpts[0]).step;
    assert.ok(at >= 10 && at < 100000, `checkpoint at step ${at}`);
    const res = run(['-c', file, `max_training_steps=${at + 2}`, '--resume', 'latest']);
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, new RegExp(`resumed from .*${String(at).padStart(7, '0')} at step ${at}`));
    assert.match(res.stdout, new RegExp(`trained ${at + 2}/${at + 2} steps`));
  });
}

test('a second signal right after the first exits at once and leaves every checkpoint complete or absent', async () => {
  const { file, exp } = tinyConfigFile();
  const r = await startAndSignal(file, ['SIGTERM', 'SIGTERM'], ['ckpt_every=3']);
  assert.equal(r.code, 143, r.output);
  assertCheckpointsComplete(exp);
  assert.ok(listCheckpoints(exp).length >= 1, 'the periodic checkpoints survive');
});

// ---- CLI: image-folder runs end with their work done (never exit 0 half-way) ----------------

test('image folder, 6 steps of batch 4, 8 times: every run prints "trained" and writes its grid', () => {
  // Before the fix about half of these exited 0 right after "checkpoint:" (the decode
  // worker's close let the event loop run dry); P(all 8 pass by luck) was ~1/256.
  const { file } = tinyConfigFile();
  const dir = path.dirname(file);
  const root = path.join(dir, 'imgs');
  for (let c = 0; c < 2; c++) {
    mkdirSync(path.join(root, `c${c}`), { recursive: true });
    for (let k = 0; k < 6; k++) {
      const px = new Uint8Array(8 * 8 * 3).map((_, i) => (i * 7 + c * 50 + k * 13) % 256);
      writeFileSync(path.join(root, `c${c}`, `${k}.png`), encodePng(px, 8, 8, 3));
    }
  }
  for (let i = 0; i < 8; i++) {
    const exp = path.join(dir, `exp${i}`);
    const r = run(['-c', file, `experiment_dir=${exp}`, 'max_training_steps=6', 'sample_at_end=true', 'sample.num_per_class=1',
      'model.num_classes=2', 'model.depth=1', `data={name: image_folder, root: ${root}, image_size: 8, channels: 3, num_classes: 2, batch_size: 4}`]);
    assert.equal(r.status, 0, `run ${i}: ${r.stderr}`);
    assert.match(r.stdout, /checkpoint: .*0000006\n(.|\n)*trained 6\/6 steps/, `run ${i}: ${r.stdout.slice(-400)}`);
    assert.ok(existsSync(path.join(exp, 'samples', 'grid-0000006-ddim5-cfg2.png')), `run ${i}: the sample grid`);
  }
});
