// Data parallelism: 1 vs 2 processes under `mpirun -np 2` on the CPU
// backend (one thread per rank), resume across world sizes, distributed
// inference, faults and the stop signal. The mpirun tests skip, saying why,
// when mpirun is missing or the addon was built without MPI.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { listCheckpoints, readState } from '../src/checkpoint/index.js';
import { ConfigError } from '../src/errors.js';
import { readNpz } from '../src/io/npz.js';
import { readSafetensors, asFloat32 } from '../src/io/safetensors.js';
import { tinyConfigFile, useAddon } from './helpers-e2e.js';

useAddon();
const { parallelAddon, shardOf, launcherWorldSize } = await import('../src/parallel/index.js');
const { rootOnlyCommand } = await import('../src/parallel/cli.js');
const { DiTModel, presetConfig } = await import('../src/native.js');
const { makeCoefs, toNativeTables } = await import('../src/diffusion/coefs.js');
const { betasFor } = await import('../src/diffusion/schedule.js');

const CLI = path.resolve('src/cli.ts');
const DRIVER = path.resolve('test/parallel/driver.ts');
// as root (CI containers) OpenMPI needs both variables
const ENV = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_rmaps_base_oversubscribe: '1' };
const MPIRUN = ['-np', '2', '--oversubscribe'];

function mpiSkip(): string | false {
  const v = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
  if (v.error || v.status !== 0) return 'mpirun not found (apt-get install openmpi-bin)';
  const info = parallelAddon().info();
  if (!info.mpi) return `addon built without MPI: ${info.mpiReason}`;
  return false;
}
const skip = mpiSkip();

const node = ['--import', 'tsx'];
const run1 = (script: string, args: string[]) =>
  spawnSync(process.execPath, [...node, script, ...args], { encoding: 'utf8', env: ENV, timeout: 120_000 });
const run2 = (script: string, args: string[], timeout = 120_000) =>
  spawnSync('mpirun', [...MPIRUN, process.execPath, ...node, script, ...args], { encoding: 'utf8', env: ENV, timeout });

interface DriverOut {
  size: number;
  steps: { loss: number[]; gradNorm: number; skipped: boolean; grad: number[] }[];
  weights: number[];
  ema: number[];
  noise: { seed: number; offset: number };
  step: number;
  eval: Record<string, unknown> | null;
}

function driver(mode: string, procs: 1 | 2, env: Record<string, string> = {}, config?: string): DriverOut {
  const out = path.join(tinyConfigFile().exp + `-${mode}-${procs}.json`);
  const args = [DRIVER, mode, out, ...(config ? [config] : [])];
  const opts = { encoding: 'utf8' as const, env: { ...ENV, ...env }, timeout: 120_000 };
  const r = procs === 1
    ? spawnSync(process.execPath, [...node, ...args], opts)
    : spawnSync('mpirun', [...MPIRUN, process.execPath, ...node, ...args], opts);
  assert.equal(r.status, 0, `driver ${mode} on ${procs}: ${r.stderr}`);
  return JSON.parse(readFileSync(out, 'utf8')) as DriverOut;
}

/** ||a - b|| / ||a|| */
function normRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let d = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += a[i] ** 2;
  }
  return Math.sqrt(d / n);
}
function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(Math.abs(a[i]), 1e-30));
  return m;
}

test('shardOf: equal slices of the global batch, a typed error when it does not divide', () => {
  assert.deepEqual(shardOf({ rank: 1, size: 4 }, 16), { offset: 4, count: 4, globalBatch: 16 });
  assert.deepEqual(shardOf({ rank: 0, size: 1 }, 7), { offset: 0, count: 7, globalBatch: 7 });
  assert.throws(() => shardOf({ rank: 0, size: 4 }, 6), (e: unknown) => e instanceof ConfigError && /data\.batch_size: 6 is the global batch and must divide evenly over the 4 processes/.test(e.message));
});

test('launcher world size and root-only commands from the environment', () => {
  assert.deepEqual(launcherWorldSize({}), { size: 1, from: null });
  assert.deepEqual(launcherWorldSize({ OMPI_COMM_WORLD_SIZE: '8' }), { size: 8, from: 'OMPI_COMM_WORLD_SIZE=8' });
  assert.deepEqual(launcherWorldSize({ SLURM_STEP_NUM_TASKS: '16' }), { size: 16, from: 'SLURM_STEP_NUM_TASKS=16' });
  assert.equal(rootOnlyCommand(['analyze', '-c', 'x.yaml'], { OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_RANK: '1' }), true);
  assert.equal(rootOnlyCommand(['analyze', '-c', 'x.yaml'], { OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_RANK: '0' }, () => true), false);
  assert.equal(rootOnlyCommand(['-c', 'x.yaml'], { OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_RANK: '1' }), false);
  assert.equal(rootOnlyCommand(['analyze'], {}), false);
});

test('per-sample noise: a shard of a global batch draws the noise of its global samples (C*H*W not a multiple of 4)', async () => {
  // patch 1 on 5x5x3: 75 values per sample, so the per-sample blocks are not contiguous
  const cfg = { ...presetConfig('DiT-Ti/4', { inputSize: 8, inChannels: 3, numClasses: 0, classDropoutProb: 0, learnSigma: true }), inputSize: 5, patchSize: 1, depth: 1, hiddenSize: 16, numHeads: 2 };
  const tables = toNativeTables(makeCoefs(betasFor('linear', 50)));
  const make = () => {
    const m = DiTModel.create({ config: cfg, threads: 1, seed: 2 });
    m.setTables(tables);
    return m;
  };
  const G = 3;
  const x0 = Float32Array.from({ length: G * 75 }, (_, i) => Math.sin(i));
  const t = Int32Array.from([5, 20, 40]);
  const weight = new Float32Array(G).fill(1);
  const hp = { lr: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 0, emaDecay: -1, vbScale: 1 };
  const whole = make();
  const all = await whole.trainStep({ x0, t, y: new Int32Array(0), weight }, hp);
  for (let i = 0; i < G; i++) {
    const part = make();
    const r = await part.trainStep({ x0: x0.subarray(i * 75, (i + 1) * 75), t: t.subarray(i, i + 1), y: new Int32Array(0), weight: weight.subarray(i, i + 1) },
      { ...hp, shardOffset: i, globalBatch: G });
    assert.ok(Math.abs(r.loss[0] - all.loss[i]) <= 1e-6 * Math.abs(all.loss[i]), `sample ${i}: ${r.loss[0]} vs ${all.loss[i]}`);
    // the stream advances past the whole global batch, whatever the slice
    assert.deepEqual(part.getNoiseState(), whole.getNoiseState());
    part.dispose();
  }
  // a different offset draws different noise (the test can fail)
  const wrong = make();
  const r = await wrong.trainStep({ x0: x0.subarray(75, 150), t: t.subarray(1, 2), y: new Int32Array(0), weight: weight.subarray(1, 2) }, { ...hp, shardOffset: 0, globalBatch: G });
  assert.ok(Math.abs(r.loss[0] - all.loss[1]) > 1e-4 * Math.abs(all.loss[1]));
  await assert.rejects(() => wrong.trainStep({ x0: x0.subarray(0, 150), t: t.subarray(0, 2), y: new Int32Array(0), weight: weight.subarray(0, 2) }, { ...hp, shardOffset: 2, globalBatch: G }), /not inside a global batch of 3/);
  wrong.dispose();
  whole.dispose();
});

test('train step, 2 processes vs 1: losses, gradients and weights within 1e-6; bitwise with the same shard on both', { skip }, () => {
  const a = driver('split', 1);
  const b = driver('split', 2);
  assert.equal(b.size, 2);
  assert.deepEqual(b.noise, a.noise);
  assert.equal(b.step, 5);
  for (let s = 0; s < 5; s++) {
    assert.equal(b.steps[s].loss.length, 8, 'rank 0 sees the whole global batch');
    assert.ok(maxRel(a.steps[s].loss, b.steps[s].loss) <= 1e-6, `step ${s} losses`);
    assert.ok(normRel(a.steps[s].grad, b.steps[s].grad) <= 1e-6, `step ${s} gradient: ${normRel(a.steps[s].grad, b.steps[s].grad)}`);
    assert.ok(Math.abs(a.steps[s].gradNorm - b.steps[s].gradNorm) <= 1e-6 * a.steps[s].gradNorm);
  }
  assert.ok(normRel(a.weights, b.weights) <= 1e-6, `weights ${normRel(a.weights, b.weights)}`);
  assert.ok(normRel(a.ema, b.ema) <= 1e-6);
  // gradient buckets of 2621 floats (about 20 all-reduces started during the
  // backward instead of one at its end): elementwise the same sums, bitwise
  const buckets = driver('split', 2, { SPEED_DIST_BUCKET_MB: '0.01' });
  assert.deepEqual(buckets.steps.map((s) => s.grad), b.steps.map((s) => s.grad));
  assert.deepEqual(buckets.weights, b.weights);
  // same shard on both ranks: the mean of two identical gradients is exact
  const c = driver('same', 1);
  assert.ok(normRel(a.weights, c.weights) > 1e-4, 'the shards differ (the split test can fail)');
  const d = driver('same', 2);
  for (let s = 0; s < 5; s++) {
    assert.deepEqual(d.steps[s].grad, c.steps[s].grad, `step ${s} gradient bitwise`);
    assert.deepEqual(d.steps[s].loss, [...c.steps[s].loss, ...c.steps[s].loss]);
    assert.equal(d.steps[s].gradNorm, c.steps[s].gradNorm);
  }
  assert.deepEqual(d.weights, c.weights);
  assert.deepEqual(d.ema, c.ema);
});

test('FID during training on 2 processes: the samples split over the ranks score bitwise as on one process', { skip }, () => {
  // the same shard on both ranks keeps the weights bitwise equal (see above), so any
  // difference would come from how the evaluation splits and gathers its samples
  const { file } = tinyConfigFile('evaluate: {every: 5, num_samples: 11, sampler: ddim5, feature_space: pixels-4x4, num_reference: 40}\n');
  const a = driver('eval', 1, {}, file);
  const b = driver('eval', 2, {}, file);
  assert.deepEqual(b.weights, a.weights);
  assert.deepEqual(b.noise, a.noise, 'the training noise stream is restored after the evaluation');
  const drop = (e: Record<string, unknown> | null) => ({ ...e, seconds: undefined, sample_seconds: undefined });
  assert.ok(a.eval && typeof a.eval.fid === 'number' && Number.isFinite(a.eval.fid));
  assert.equal(a.eval.num_samples, 11);
  assert.deepEqual(drop(b.eval), drop(a.eval));
});

test('a non-finite loss on one rank skips the step on every rank, as on one process', { skip }, () => {
  const a = driver('nan', 1);
  const b = driver('nan', 2);
  assert.deepEqual(a.steps.map((s) => s.skipped), [false, false, true, false, false]);
  assert.deepEqual(b.steps.map((s) => s.skipped), [false, false, true, false, false], 'rank 0 skipped although its own shard was finite');
  assert.equal(b.step, 4, 'Adam steps taken');
  assert.ok(normRel(a.weights, b.weights) <= 1e-6);
});

test('a rank that throws ends every rank non-zero within 60 s, naming the rank and the error', { skip }, () => {
  const t0 = Date.now();
  const r = run2(DRIVER, ['throw', path.join(tinyConfigFile().exp + '-throw.json')], 60_000);
  assert.ok(Date.now() - t0 < 60_000, 'bounded time');
  assert.notEqual(r.status, 0);
  assert.equal(r.error, undefined, 'mpirun ended by itself (no timeout)');
  assert.match(r.stderr, /error on rank 1 of 2: injected failure at step 3/);
});

function weightsOf(ckpt: string): Float32Array[] {
  const f = readSafetensors(path.join(ckpt, 'model.safetensors'));
  return [...f.tensors.entries()].sort(([x], [y]) => x.localeCompare(y)).map(([n, t]) => asFloat32(t, 'model.safetensors', n));
}
const flat = (ts: Float32Array[]) => ts.flatMap((t) => Array.from(t));

test('training on 2 processes: rank 0 alone writes and logs; resume 2 -> 1 and 1 -> 2 continues exactly; inference bitwise; sample on rank 0', { skip }, () => {
  const cli = (procs: 1 | 2, file: string, args: string[]) => (procs === 1 ? run1(CLI, ['-c', file, ...args]) : run2(CLI, ['-c', file, ...args]));
  const ok = (r: ReturnType<typeof run1>) => { assert.equal(r.status, 0, r.stderr); return r; };
  const ref = tinyConfigFile();
  ok(cli(1, ref.file, ['max_training_steps=6']));
  const [refCk] = listCheckpoints(ref.exp).slice(-1);
  const refState = readState(refCk);
  const same = (dir: string, what: string) => {
    const st = readState(dir);
    assert.equal(st.step, 6, what);
    assert.deepEqual(st.noise, refState.noise, `${what}: noise stream`);
    assert.equal(st.adam_step, refState.adam_step, `${what}: Adam step`);
    const tr = st.train as { rng: unknown; data: unknown };
    const rt = refState.train as { rng: unknown; data: unknown };
    assert.deepEqual(tr.rng, rt.rng, `${what}: time-step / label generator`);
    assert.deepEqual(tr.data, rt.data, `${what}: data position`);
    assert.ok(normRel(flat(weightsOf(refCk)), flat(weightsOf(dir))) <= 1e-6, `${what}: weights`);
  };
  // 2 -> 1
  const a = tinyConfigFile();
  ok(cli(2, a.file, ['max_training_steps=3']));
  const ra = ok(cli(1, a.file, ['max_training_steps=6', '--resume', 'latest']));
  assert.match(ra.stdout, /resumed from .*0000003 at step 3/);
  same(listCheckpoints(a.exp).slice(-1)[0], 'resume 2 -> 1');
  // 1 -> 2
  const b = tinyConfigFile();
  ok(cli(1, b.file, ['max_training_steps=3']));
  const rb = ok(cli(2, b.file, ['max_training_steps=6', '--resume', 'latest']));
  assert.match(rb.stdout, /resumed from .*0000003 at step 3/);
  assert.equal(rb.stdout.match(/^checkpoint: /gm)?.length, 1, 'one rank logs');
  assert.equal(rb.stdout.match(/^# speed-train train: resolved config/gm)?.length, 1);
  same(listCheckpoints(b.exp).slice(-1)[0], 'resume 1 -> 2');
  // metrics: one line per step, from rank 0 only
  const lines = readFileSync(path.join(b.exp, 'metrics.jsonl'), 'utf8').trim().split('\n');
  assert.deepEqual(lines.map((l) => (JSON.parse(l) as { step: number }).step), [1, 2, 3, 4, 5, 6]);

  // inference on 2 processes: the same samples.npz, bitwise (3 batches: uneven split)
  const inf = (procs: 1 | 2, out: string) =>
    ok(cli(procs, ref.file, ['-p', 'inference', 'inference.num_samples=6', 'inference.per_proc_batch_size=2', `inference.out=${out}`]));
  inf(1, path.join(ref.exp, 'inf1'));
  inf(2, path.join(ref.exp, 'inf2'));
  // (the zip's file times differ; the arrays and the PNGs must not)
  const z1 = readNpz(path.join(ref.exp, 'inf1', 'samples.npz'));
  const z2 = readNpz(path.join(ref.exp, 'inf2', 'samples.npz'));
  assert.deepEqual(z1.arr_0.shape, [6, 8, 8, 3]);
  assert.ok(Buffer.from(z1.arr_0.data.buffer).equals(Buffer.from(z2.arr_0.data.buffer)), 'arr_0 of 2 processes == 1 process, bitwise');
  assert.deepEqual(z2.arr_1.data, z1.arr_1.data);
  for (const f of readdirSync(path.join(ref.exp, 'inf1')).filter((n) => n.endsWith('.png'))) {
    assert.ok(readFileSync(path.join(ref.exp, 'inf1', f)).equals(readFileSync(path.join(ref.exp, 'inf2', f))), f);
  }
  assert.deepEqual(readdirSync(path.join(ref.exp, 'inf2')).sort(), readdirSync(path.join(ref.exp, 'inf1')).sort());
  // -p sample does not split: rank 0 alone runs it and says so
  const sm = ok(cli(2, ref.file, ['-p', 'sample', 'sample.num_per_class=1']));
  assert.equal(sm.stdout.match(/^sample: runs on rank 0 only \(of 2 processes\)$/gm)?.length, 1, sm.stdout);
});

/** Starts a 2-process training run that would last for hours; resolves once it has logged step 200. */
async function startLongRun(file: string): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn('mpirun', [...MPIRUN, process.execPath, ...node, CLI, '-c', file, 'max_training_steps=10000000', 'log_every=100'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: ENV });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer) => { output += d.toString(); if (/train 200\//.test(output)) resolve(); };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (c) => reject(new Error(`exited early (${c}): ${output}`)));
  });
  return { child, output: () => output };
}

test('a rank killed mid-run: the other exits and mpirun fails within 60 s naming the rank', { skip }, async () => {
  const { file, exp } = tinyConfigFile();
  const { child, output } = await startLongRun(file);
  // rank 1: the child of mpirun whose environment says so
  const kids = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
  const rank1 = kids.find((pid) => readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes('OMPI_COMM_WORLD_RANK=1'));
  assert.ok(rank1, `rank 1 among ${kids}`);
  const t0 = Date.now();
  process.kill(rank1, 'SIGKILL');
  const code = await new Promise<number | null>((r) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); r(-1); }, 60_000);
    child.on('exit', (c) => { clearTimeout(timer); r(c); });
  });
  assert.ok(Date.now() - t0 < 60_000, 'within 60 s');
  assert.ok(code !== 0 && code !== -1, `mpirun exit ${code}`);
  assert.match(output(), /rank 1 with PID \d+ on node \S+ exited on signal 9/);
  assert.equal(listCheckpoints(exp).length, 0, 'no checkpoint from a broken world');
});

test('SIGUSR2 to mpirun (forwarded to every rank): one checkpoint by rank 0, every rank exits 140 (128 + SIGUSR2), resumable', { skip }, async () => {
  const { file, exp } = tinyConfigFile();
  const { child, output } = await startLongRun(file);
  child.kill('SIGUSR2');
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  assert.equal(code, 140, output());
  const ckpts = listCheckpoints(exp);
  assert.equal(ckpts.length, 1, output());
  const step = readState(ckpts[0]).step;
  assert.ok(step >= 200 && step < 10000000);
  const r = run1(CLI, ['-c', file, `max_training_steps=${step + 2}`, '--resume', 'latest']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`at step ${step}`));
});

test('bench under mpirun: an all-reduce row (GB/s of the gradient size) and a data-parallel train-step row, printed once', { skip }, () => {
  const r = run2(CLI, ['bench', '--models', 'DiT-Ti/8@8x3', '--batches', '4', '--iters', '1', '--threads', '1', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { what: string; ms: number; gbps: number; imagesPerSec: number; batch: number });
  assert.equal(rows.length, 2, r.stdout);
  assert.match(rows[0].what, /^allreduce grad \d+ MiB \(2 ranks, mpi\)$/);
  assert.ok(rows[0].ms > 0 && rows[0].gbps > 0);
  assert.match(rows[1].what, /^train_step data-parallel x2 \(mpi\)$/);
  assert.ok(rows[1].batch === 4 && rows[1].imagesPerSec > 0);
});

test('a build without MPI refuses a multi-process launch and says why', { skip: parallelAddon().info().mpi ? 'this addon has MPI (the refusal is for builds without it)' : false }, () => {
  const { file } = tinyConfigFile();
  // the launcher's variable alone (no mpirun needed to see the refusal)
  const r = spawnSync(process.execPath, [...node, CLI, '-c', file], { encoding: 'utf8', env: { ...process.env, OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_RANK: '0' } });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /launched as 2 processes \(OMPI_COMM_WORLD_SIZE=2\), but this build of speed-train has no MPI .*apt-get install libopenmpi-dev/);
});
