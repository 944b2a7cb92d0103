// FID during training (eval.every): the steps it is logged at, metrics.jsonl and
// TensorBoard, that it leaves training untouched, bitwise the same values on
// resume, the FID curve of `plot`, and its configuration errors.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { readState } from '../src/checkpoint/index.js';
import { ConfigError } from '../src/errors.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { tinyConfig, useAddon } from './helpers-e2e.js';

useAddon();
const { train } = await import('../src/train/index.js');
const { parseEvalSampler } = await import('../src/train/evaluation.js');
const { plotRun, readRunLog } = await import('../src/plot/training.js');

const quiet = { log: () => {}, handleSignals: false, progressStream: { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream };
// 12 images in batches of 5 (an uneven last batch), DDIM 5 steps, against 64 held-out synthetic images
const EVAL = ['eval.every=4', 'eval.num_samples=12', 'eval.sampler=ddim5', 'inference.per_proc_batch_size=5', 'evaluate.num_reference=64'];

interface EvalRow { step: number; eval: Record<string, number | string | null> }
const evalRows = (exp: string): EvalRow[] =>
  readFileSync(path.join(exp, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as EvalRow & { loss?: number }).filter((l) => 'eval' in l);
/** The metrics of an evaluation without its wall times. */
const values = (rows: EvalRow[]) => rows.map(({ step, eval: e }) => ({ step, ...e, seconds: undefined, sample_seconds: undefined }));

test('eval.sampler parses like a sampler plus sample.steps', () => {
  assert.deepEqual(parseEvalSampler('ddpm100'), { sampler: 'ddpm', steps: '100' });
  assert.deepEqual(parseEvalSampler('ddim50'), { sampler: 'ddim', steps: 'ddim50' });
  assert.throws(() => parseEvalSampler('ddim'), (e: unknown) => e instanceof ConfigError && /eval\.sampler: "ddim" is not valid/.test(e.message));
  assert.throws(() => tinyConfig(['eval.sampler=euler20']), /eval\.sampler: "euler20" is not valid: expected a sampler and its step count/);
});

test('eval.every: FID/KID at every multiple and at the end, in metrics.jsonl and TensorBoard; training itself is unchanged', async () => {
  const a = tinyConfig([...EVAL, 'max_training_steps=10']);
  await train({ config: a.config, ...quiet });
  const rows = evalRows(a.exp);
  assert.deepEqual(rows.map((r) => r.step), [4, 8, 10]);
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

test('eval.every: the values after a resume are bitwise those of an uninterrupted run', async () => {
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
  const bad = tinyConfig([...EVAL, 'eval.feature_space=nonsense', 'max_training_steps=3']);
  await assert.rejects(train({ config: bad.config, ...quiet }), (e: unknown) => e instanceof ConfigError && /eval\.feature_space: unknown feature space 'nonsense'/.test(e.message));
  assert.ok(!existsSync(path.join(bad.exp, 'checkpoints', '0000003')), 'no step was trained');
  const ref = tinyConfig([...EVAL, 'evaluate.reference=/nonexistent/ref.npz', 'max_training_steps=3']);
  await assert.rejects(train({ config: ref.config, ...quiet }), (e: unknown) => e instanceof ConfigError && /evaluate\.reference: \/nonexistent\/ref\.npz does not exist/.test(e.message));
});
