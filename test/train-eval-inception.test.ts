// FID during training in the inception-v3 space: the network loads from
// evaluate.inception.path and the Inception Score comes with the FID. The
// weights are synthetic (pytorch-fid's names and shapes, convolutions zero), so
// every image gets the same logits and the score is exactly 1 (no class is
// preferred by any sample more than by all of them). The network loads on the device
// the model trains on.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { ConfigError } from '../src/errors.js';
import { encodeSafetensors, f32Tensor } from '../src/io/safetensors.js';
import { tinyConfig, useAddon } from './helpers-e2e.js';

useAddon();
const { train } = await import('../src/train/index.js');
const { TrainingEval } = await import('../src/train/evaluation.js');
const { nativeInfo } = await import('../src/native.js');
const { world } = await import('../src/parallel/index.js');

const NAMES = JSON.parse(readFileSync(path.resolve('test/fixtures/inception/state_dict.json'), 'utf8')) as [string, number[]][];
const quiet = { log: () => {}, handleSignals: false, progressStream: { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream };

function writeWeights(): string {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'st-inc-')), 'inception.safetensors');
  const tensors = NAMES.map(([name, shape]) => {
    const d = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (name.endsWith('.running_var')) d.fill(1);
    else if (name === 'fc.bias') d.forEach((_, i) => { d[i] = (i % 7) * 0.3; });
    return [name, f32Tensor(d, shape)] as [string, ReturnType<typeof f32Tensor>];
  });
  writeFileSync(file, Buffer.concat(encodeSafetensors(tensors).map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength))));
  return file;
}

test('evaluate.feature_space=inception-v3: FID and the Inception Score during training', async () => {
  const file = writeWeights();
  const a = tinyConfig(['max_training_steps=4', 'evaluate.every=4', 'evaluate.num_samples=6', 'evaluate.sampler=ddim3', 'evaluate.feature_space=inception-v3',
    `evaluate.inception.path=${file}`, 'inference.per_proc_batch_size=6', 'evaluate.num_reference=6']);
  await train({ config: a.config, ...quiet });
  const rows = readFileSync(path.join(a.exp, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => 'eval' in l);
  assert.deepEqual(rows.map((r) => r.step), [4]);
  const e = rows[0].eval;
  assert.equal(e.feature_space, 'inception-v3');
  assert.ok(Math.abs(e.is_mean - 1) < 1e-9, `IS ${e.is_mean}`);
  assert.equal(e.is_std, 0);
  assert.ok(Number.isFinite(e.fid) && Math.abs(e.fid) < 1e-6, `FID ${e.fid}: every image has the same features`);
});

test('FID during training loads the Inception network on the configured device', async () => {
  const file = writeWeights();
  const a = tinyConfig(['device=cuda', 'evaluate.every=4', 'evaluate.num_samples=6', 'evaluate.feature_space=inception-v3', `evaluate.inception.path=${file}`, 'evaluate.num_reference=6']);
  const cuda = nativeInfo().cuda;
  if (!cuda.available) {
    // the CUDA request reaches the network (it used to be loaded on the CPU whatever trained)
    await assert.rejects(TrainingEval.open(a.config, world(), () => {}), (e: Error) => {
      assert.ok(e instanceof ConfigError && e.message.includes('evaluate.feature_space'), String(e));
      assert.ok(e.message.includes(`InceptionV3.load: device 'cuda' is not available: ${cuda.reason}`), e.message);
      return true;
    });
    return;
  }
  const ev = await TrainingEval.open(a.config, world(), () => {});
  assert.ok(ev, 'evaluate.every=4 gives an evaluator');
});
