// The README's `DiT_S_2(...).load_state_dict(...)` snippet, run by
// tools/check_load_state_dict.py (PyTorch) on a checkpoint this project writes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';

import { writeCheckpoint } from '../src/checkpoint/index.js';
import { defaultsOf, type Config } from '../src/config/schema.js';
import { createModel } from '../src/train/model.js';
import { scratchDir, useAddon } from './helpers-e2e.js';

useAddon();
const PY = ['/usr/bin/python3', 'python3'].find((py) => spawnSync(py, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0);

test("the README's DiT_S_2(...).load_state_dict snippet loads a checkpoint of this project", { skip: PY ? false : 'no python3 with torch' }, () => {
  const c = structuredClone(defaultsOf()) as unknown as Config;
  // the snippet's arguments: DiT-S/2, input_size 32, in_channels 3, num_classes 10, learn_sigma, class dropout
  c.model = { ...c.model, name: 'DiT-S/2', input_size: 32, in_channels: 3, num_classes: 10, learn_sigma: true, class_dropout_prob: 0.1, depth: null, hidden_size: null, num_heads: null, mlp_ratio: 4, init_from: null };
  c.threads = 1;
  const exp = scratchDir('ptload-');
  const { model } = createModel(c);
  let dir: string;
  try {
    dir = writeCheckpoint(model, exp, { step: 0, config: c, train: {} });
  } finally {
    model.dispose();
  }
  // A checkpoint of another shape fails the same (strict) load, so the check can fail.
  const c2 = { ...c, model: { ...c.model, num_classes: 5 } };
  const { model: m2 } = createModel(c2);
  const exp2 = scratchDir('ptload-');
  let dir2: string;
  try {
    dir2 = writeCheckpoint(m2, exp2, { step: 0, config: c2, train: {} });
  } finally {
    m2.dispose();
  }
  const r = spawnSync(PY!, ['tools/check_load_state_dict.py', dir, dir2], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' } });
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 2, r.stdout + r.stderr);
  assert.equal(lines[0], `${dir}: ok: 132 tensors`);
  assert.ok(lines[1].startsWith(`${dir2}: error: RuntimeError`), lines[1]);
  assert.match(lines[1], /size mismatch for y_embedder\.embedding_table\.weight/);
  assert.equal(r.status, 1);
});
