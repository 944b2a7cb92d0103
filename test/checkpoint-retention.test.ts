// ckpt_keep / ckpt_keep_every: which checkpoints a run deletes, that it never
// deletes the newest or the one it resumed from, and that a training run keeps
// exactly what the policy says.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { listCheckpoints, pruneCheckpoints, stepsToPrune, writeCheckpoint } from '../src/checkpoint/index.js';
import { loadConfig } from '../src/config/index.js';
import { FakeModel } from './checkpoint-fake.js';
import { scratchDir, tinyConfigFile, useAddon } from './helpers-e2e.js';

const steps = (dirs: string[]) => dirs.map((d) => Number(path.basename(d)));

test('stepsToPrune: the newest N, the multiples of M and the protected ones stay', () => {
  const all = [500, 1000, 1500, 2000, 2500, 3000, 3500, 4000];
  assert.deepEqual(stepsToPrune(all, 3, 0), [500, 1000, 1500, 2000, 2500]);
  assert.deepEqual(stepsToPrune(all, 2, 2000), [500, 1000, 1500, 2500, 3000]);
  assert.deepEqual(stepsToPrune(all, 2, 2000, [1500]), [500, 1000, 2500, 3000]);
  assert.deepEqual(stepsToPrune(all, 0, 0), [], 'ckpt_keep 0 keeps all');
  assert.deepEqual(stepsToPrune([4000, 500], 1, 0), [500], 'order does not matter; the newest stays');
  assert.deepEqual(stepsToPrune([], 3, 0), []);
});

test('pruneCheckpoints deletes whole step folders and leaves no temporary behind', () => {
  const exp = scratchDir('ckpt-keep-');
  const m = FakeModel.make(8);
  for (const step of [1, 2, 3, 4, 5, 6]) {
    m.fill(step);
    writeCheckpoint(m, exp, { step, config: {} as never, train: {} });
  }
  const removed = pruneCheckpoints(exp, { keep: 2, keepEvery: 3, protect: [path.join(exp, 'checkpoints', '0000001')] });
  assert.deepEqual(steps(removed), [2, 4]);
  assert.deepEqual(steps(listCheckpoints(exp)), [1, 3, 5, 6]);
  assert.deepEqual(readdirSync(path.join(exp, 'checkpoints')).sort(), ['0000001', '0000003', '0000005', '0000006']);
  assert.deepEqual(pruneCheckpoints(exp, { keep: 0, keepEvery: 0 }), []);
});

test('a training run keeps the newest ckpt_keep plus the multiples of ckpt_keep_every, and the checkpoint it resumed from', async () => {
  useAddon();
  const { train } = await import('../src/train/index.js');
  const quiet = { log: () => {}, handleSignals: false, progressStream: { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream };
  const { file, exp } = tinyConfigFile();
  const cfg = (o: string[]) => loadConfig(file, { overrides: ['ckpt_every=1', ...o] }).config;
  assert.equal(cfg([]).ckpt_keep, 3, 'the default keeps 3');
  await train({ config: cfg(['max_training_steps=7', 'ckpt_keep=2', 'ckpt_keep_every=3']), ...quiet });
  assert.deepEqual(steps(listCheckpoints(exp)), [3, 6, 7]);
  // resumed from 3 (named explicitly): 3 stays while the run goes on, though it is neither newest nor a multiple
  await train({ config: cfg(['max_training_steps=9', 'ckpt_keep=1', 'ckpt_keep_every=0']), resume: path.join(exp, 'checkpoints', '0000003'), ...quiet });
  assert.deepEqual(steps(listCheckpoints(exp)), [3, 9]);
});
