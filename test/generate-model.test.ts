// Building the sampling model from a checkpoint: state.json's network is checked
// against the tensor shapes of model.safetensors's header before anything is
// allocated (a state.json naming DiT-XL/2 beside a tiny model's tensors allocated
// the 8.4 GB XL model only to fail its shape check).
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import * as zlib from 'node:zlib';

import { writeCheckpoint } from '../src/checkpoint/index.js';
import { CheckpointError } from '../src/errors.js';
import { loadForGeneration } from '../src/generate/model.js';
import { createModel } from '../src/train/model.js';
import { tinyConfig, useAddon } from './helpers-e2e.js';

useAddon();

const trainState = () => ({
  rng: { algo: 'xoshiro128**', s: [1, 2, 3, 4], spare: null },
  data: { epoch: 0, batch: 3, rng: { algo: 'xoshiro128**', s: [5, 6, 7, 8], spare: 0.5 } },
  accum: { steps: 1, samples: 8, loss: 0.5, mse: 0.5, vb: 0, gradNorm: 1, skipped: 0, tHist: [1, 0], bucketLoss: [0.5, 0] },
});

/** Rewrites state.json with `edit` applied and a valid self-checksum (the file is consistent, only its config lies). */
function editState(dir: string, edit: (s: { config: { model: Record<string, unknown> } }) => void): void {
  const file = path.join(dir, 'state.json');
  const { state_crc32: _, ...s } = JSON.parse(readFileSync(file, 'utf8')) as { state_crc32: string; config: { model: Record<string, unknown> } };
  edit(s);
  const crc = (zlib.crc32(JSON.stringify(s)) >>> 0).toString(16).padStart(8, '0');
  writeFileSync(file, JSON.stringify({ ...s, state_crc32: crc }));
}

test('a state.json naming DiT-XL/2 beside DiT-Ti tensors is refused from the headers, with nothing allocated', () => {
  const { config: c, exp } = tinyConfig();
  const { model } = createModel(c);
  const dir = writeCheckpoint(model, exp, { step: 1, config: c as unknown as Record<string, unknown>, train: trainState() } as Parameters<typeof writeCheckpoint>[2]);
  model.dispose();
  const g = loadForGeneration(c, dir, () => {}, () => {}); // the intact checkpoint loads
  g.model.dispose();
  editState(dir, (s) => Object.assign(s.config.model, { name: 'DiT-XL/2', input_size: 32, in_channels: 4, num_classes: 1000, depth: null, hidden_size: null, num_heads: null }));
  const rss0 = process.memoryUsage().rss;
  assert.throws(() => loadForGeneration(c, dir, () => {}, () => {}), (e: unknown) => {
    assert.ok(e instanceof CheckpointError, String(e));
    assert.equal(e.file, path.join(dir, 'state.json'));
    assert.match(e.message, /its config \(model\.name DiT-XL\/2\) does not match the tensors of .*model\.safetensors: /);
    assert.match(e.message, /depth \(model\.name \/ model\.depth\): weights 2, config 28/);
    assert.match(e.message, /hidden size \(model\.name \/ model\.hidden_size\): weights 32, config 1152/);
    return true;
  });
  assert.ok(process.memoryUsage().rss - rss0 < 200 * 2 ** 20, `rss grew by ${((process.memoryUsage().rss - rss0) / 2 ** 20).toFixed(0)} MiB`);
  // A narrower lie (one more block) is caught the same way.
  editState(dir, (s) => Object.assign(s.config.model, { name: 'DiT-Ti/4', input_size: 8, in_channels: 3, num_classes: 4, depth: 3, hidden_size: 32, num_heads: 2 }));
  assert.throws(() => loadForGeneration(c, dir, () => {}, () => {}), /depth \(model\.name \/ model\.depth\): weights 2, config 3/);
});

test('a state.json whose keys pass the schema but cannot build a network (32 wide, 3 heads) is a CheckpointError naming it', () => {
  const { config: c, exp } = tinyConfig();
  const { model } = createModel(c);
  const dir = writeCheckpoint(model, exp, { step: 1, config: c as unknown as Record<string, unknown>, train: trainState() } as Parameters<typeof writeCheckpoint>[2]);
  model.dispose();
  editState(dir, (s) => Object.assign(s.config.model, { num_heads: 3 }));
  assert.throws(() => loadForGeneration(c, dir, () => {}, () => {}), (e: unknown) => {
    assert.ok(e instanceof CheckpointError, String(e));
    assert.equal(e.file, path.join(dir, 'state.json'));
    assert.match(e.message, /its config cannot build a network: .*multiple of numHeads=3/);
    return true;
  });
});
