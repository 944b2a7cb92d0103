// FID during training (evaluate.every): the steps it is logged at, metrics.jsonl,
// TensorBoard and the log line with its share of the training, that it leaves
// training untouched, bitwise the same values on resume, the FID curve of `plot`,
// the feature-accuracy gate, its configuration errors and the old eval.* keys.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { readState } from '../src/checkpoint/index.js';
import { ConfigError } from '../src/errors.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { scratchDir, tinyConfig, useAddon } from './helpers-e2e.js';

useAddon();
const { train } = await import('../src/train/index.js');
const { evalShare, parseEvalSampler } = await import('../src/train/evaluation.js');
const { loadConfig } = await import('../src/config/index.js');
const { pixelFeatureSpace, registerFeatureSpaceResolver } = await import('../src/eval/index.js');
const { plotRun, readRunLog } = await import('../src/plot/training.js');

const quiet = { log: () => {}, handleSignals: false, progressStream: { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream };
// 12 images in batches of 5 (an uneven last batch), DDIM 5 steps, against 64 held-out synthetic images
const EVAL = ['evaluate.every=4', 'evaluate.num_samples=12', 'evaluate.sampler=ddim5', 'inference.per_proc_batch_size=5', 'evaluate.num_reference=64'];

interface EvalRow { step: number; eval: Record<string, number | string | null> }
const evalRows = (exp: string): EvalRow[] =>
  readFileSync(path.join(exp, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as EvalRow & { loss?: number }).filter((l) => 'eval' in l);
/** The metrics of an evaluation without its wall times. */
const values = (rows: EvalRow[]) => rows.map(({ step, eval: e }) => ({ step, ...e, seconds: undefined, sample_seconds: undefined, train_seconds: undefined }));

test('evaluate.sampler parses like a sampler plus sample.steps', () => {
  assert.deepEqual(parseEvalSampler('ddpm100'), { sampler: 'ddpm', steps: '100' });
  assert.deepEqual(parseEvalSampler('ddim50'), { sampler: 'ddim', steps: 'ddim50' });
  assert.throws(() => parseEvalSampler('ddim'), (e: unknown) => e instanceof ConfigError && /evaluate\.sampler: "ddim" is not valid/.test(e.message));
  assert.throws(() => tinyConfig(['evaluate.sampler=euler20']), /evaluate\.sampler: "euler20" is not valid: expected a sampler and its step count/);
});

test('evaluate.every: FID/KID at every multiple and at the end, in metrics.jsonl, TensorBoard and the log with its share of the training; training itself is unchanged', async () => {
  const a = tinyConfig([...EVAL, 'max_training_steps=10']);
  const printed: string[] = [];
  const progressStream = { isTTY: false, write: (t: string) => { printed.push(t); return true; } } as unknown as NodeJS.WriteStream;
  await train({ config: a.config, ...quiet, progressStream });
  const rows = evalRows(a.exp);
  assert.deepEqual(rows.map((r) => r.step), [4, 8, 10]);
  // each evaluation is weighed against the training since the previous one (the first: since step 0)
  assert.deepEqual(rows.map((r) => r.eval.since_step), [0, 4, 8]);
  const evalLines = printed.join('').split('\n').filter((l) => l.includes('FID('));
  assert.equal(evalLines.length, 3, printed.join(''));
  rows.forEach(({ step, eval: e }, i) => {
    assert.ok(typeof e.train_seconds === 'number' && e.train_seconds > 0, `train_seconds ${e.train_seconds}`);
    const share = `${(e.seconds as number).toFixed(1)} s = ${((100 * (e.seconds as number)) / e.train_seconds).toFixed(1)}% of training since step ${e.since_step}`;
    assert.ok(evalLines[i].startsWith(`train ${step}/10 `) && evalLines[i].includes(`eval ${share}`), `${evalLines[i]} lacks "eval ${share}"`);
  });
  for (const { eval: e } of rows) {
    assert.equal(e.feature_space, 'pixels-8x8');
    assert.equal(e.num_samples, 12);
    assert.equal(e.sampler, 'ddim5');
    assert.ok(typeof e.fid === 'number' && e.fid > 0 && Number.isFinite(e.fid), `fid ${e.fid}`);
    assert.ok(typeof e.kid_mean === 'number' && Number.isFinite(e.kid_mean));
    assert.ok(typeof e.seconds === 'number' && e.seconds > 0 && (e.sample_seconds as number) <= e.seconds);
  }
  // the reference was featurised once and cached in the run's folder
  assert.equal(readdirSync(a.exp).filter((f) => /^eval-reference-[0-9a-f]{8}\.npz$/.test(f)).length, 1);
  const events = readdirSync(a.exp).filter((f) => f.startsWith('events.out.tfevents'));
  assert.ok(events.some((f) => readFileSync(path.join(a.exp, f)).includes('eval/fid')), 'TensorBoard has eval/fid');

  // the evaluations draw their own noise: the trained weights, the noise stream and the losses are those of a run without them
  const b = tinyConfig(['max_training_steps=10']);
  await train({ config: b.config, ...quiet });
  const ck = (exp: string) => path.join(exp, 'checkpoints', '0000010');
  assert.deepEqual(readState(ck(a.exp)).noise, readState(ck(b.exp)).noise);
  for (const f of ['model.safetensors', 'ema.safetensors']) {
    const x = readSafetensors(path.join(ck(a.exp), f));
    const y = readSafetensors(path.join(ck(b.exp), f));
    assert.equal(x.tensors.size, y.tensors.size);
    for (const [name, t] of x.tensors) assert.ok(Buffer.from(t.bytes).equals(Buffer.from(y.tensors.get(name)!.bytes)), `${f} ${name}`);
  }
  const losses = (exp: string) => readRunLog(path.join(exp, 'metrics.jsonl')).lines.map((l) => l.loss);
  assert.deepEqual(losses(a.exp), losses(b.exp));

  // plot: the FID-vs-step figure beside the others
  const p = await plotRun(a.exp);
  assert.ok(existsSync(path.join(a.exp, 'plots', 'fid.png')) && existsSync(path.join(a.exp, 'plots', 'fid.svg')));
  assert.match(p.text, /FID at step 10: [\d.]+ \(pixels-8x8, 12 samples, ddim5\)/);
  assert.match(readFileSync(path.join(a.exp, 'plots', 'fid.svg'), 'utf8'), /FID of the EMA weights during training/);
});

test('evaluate.every: the values after a resume are bitwise those of an uninterrupted run', async () => {
  const base = [...EVAL, 'ckpt_every=4', 'data.num_samples=20'];
  const a = tinyConfig([...base, 'max_training_steps=10']);
  await train({ config: a.config, ...quiet });
  // stops at the checkpoint of step 8 (an evaluation there too), then resumes to 10
  const b = tinyConfig([...base, 'max_training_steps=8']);
  await train({ config: b.config, ...quiet });
  const b2 = tinyConfig([...base, 'max_training_steps=10', `experiment_dir=${b.exp}`]);
  await train({ config: b2.config, resume: 'latest', ...quiet });
  assert.deepEqual(evalRows(b.exp).map((r) => r.step), [4, 8, 10]);
  assert.deepEqual(values(evalRows(b.exp)), values(evalRows(a.exp)));
});

test('eval settings that cannot work fail before the first step, naming the key', async () => {
  const bad = tinyConfig([...EVAL, 'evaluate.feature_space=nonsense', 'max_training_steps=3']);
  await assert.rejects(train({ config: bad.config, ...quiet }), (e: unknown) => e instanceof ConfigError && /evaluate\.feature_space: unknown feature space 'nonsense'/.test(e.message));
  assert.ok(!existsSync(path.join(bad.exp, 'checkpoints', '0000003')), 'no step was trained');
  const ref = tinyConfig([...EVAL, 'evaluate.reference=/nonexistent/ref.npz', 'max_training_steps=3']);
  await assert.rejects(train({ config: ref.config, ...quiet }), (e: unknown) => e instanceof ConfigError && /evaluate\.reference: \/nonexistent\/ref\.npz does not exist/.test(e.message));
});

test('a weak classifier feature space is refused during training as by -p evaluate, unless allowed', async () => {
  // pixels-4x4 dressed as a classifier that is right on 31% of 500 held-out images
  registerFeatureSpaceResolver('weak-test', (spec) => (spec === 'weak-classifier' ? { ...pixelFeatureSpace(4), name: 'weak-classifier', classifier: { numClasses: 4, heldOutAccuracy: 0.31, heldOutSize: 500 } } : null), 'weak-classifier (a test space)');
  const weak = tinyConfig([...EVAL, 'evaluate.feature_space=weak-classifier', 'max_training_steps=4']);
  await assert.rejects(train({ config: weak.config, ...quiet }), (e: unknown) => e instanceof ConfigError &&
    /evaluate\.min_feature_accuracy: feature space weak-classifier is a classifier with held-out accuracy 0\.3100 on 500 images \(chance 0\.250\), below the required 0\.5.*evaluate\.allow_weak_features=true/.test(e.message));
  assert.ok(!existsSync(path.join(weak.exp, 'checkpoints', '0000004')), 'no step was trained');
  const allowed = tinyConfig([...EVAL, 'evaluate.feature_space=weak-classifier', 'evaluate.allow_weak_features=true', 'max_training_steps=4']);
  const logs: string[] = [];
  await train({ config: allowed.config, ...quiet, log: (m) => logs.push(m) });
  assert.deepEqual(evalRows(allowed.exp).map((r) => [r.step, r.eval.feature_space]), [[4, 'weak-classifier']]);
  assert.ok(logs.some((l) => /warning: feature space weak-classifier is a weak classifier \(held-out accuracy 0\.3100\)/.test(l)), logs.join('\n'));
});

test('the old eval.* keys are refused, each naming its evaluate.* key', () => {
  assert.throws(() => tinyConfig(['eval.every=4']), (e: unknown) => e instanceof ConfigError &&
    /command line: eval\.every: renamed to evaluate\.every \(FID during training moved into the evaluate: section\)/.test(e.message));
  // a config file's eval: section: every key of it, with the file that sets it
  const dir = scratchDir('st-eval-renamed-');
  const file = path.join(dir, 'old.yaml');
  writeFileSync(file, 'eval:\n  every: 2000\n  num_samples: 300\n  sampler: ddim10\n  feature_space: pixels-8x8\n');
  assert.throws(() => loadConfig(file), (e: unknown) => {
    const m = (e as Error).message;
    return e instanceof ConfigError && /4 problems in the config/.test(m) &&
      [['every', 'every'], ['num_samples', 'num_samples'], ['sampler', 'sampler'], ['feature_space', 'feature_space']].every(([o, n]) => m.includes(`${file}: eval.${o}: renamed to evaluate.${n} `));
  });
  // one feature space for both: the old key says so
  assert.throws(() => tinyConfig(['eval.feature_space=pixels-4x4']), /eval\.feature_space: renamed to evaluate\.feature_space \(one feature space for -p evaluate and FID during training\)/);
  // and under a phase section
  assert.throws(() => tinyConfig(['train.eval.every=4']), /train\.eval\.every: renamed to evaluate\.every/);
});

test('evalShare: the evaluation as a share of the training since the previous one', () => {
  assert.equal(evalShare(12.34, 300, 2000), '12.3 s = 4.1% of training since step 2000');
  assert.equal(evalShare(5, 0, 0), '5.0 s = n/a of training since step 0');
});
