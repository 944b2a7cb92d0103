import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { PNG } from 'pngjs';

import { loadConfig } from '../src/config/index.js';
import { readNpz } from '../src/io/npz.js';
import { labelColumnWidth } from '../src/generate/images.js';
import { tinyConfigFile, useAddon } from './helpers-e2e.js';

useAddon();
const { train } = await import('../src/train/index.js');
const { runSample, runInference } = await import('../src/generate/index.js');
const quiet = { log: () => {} };

test('train, then sample a grid and run inference: outputs decode with the promised shapes', async () => {
  const { file, exp } = tinyConfigFile();
  await train({ config: loadConfig(file, { overrides: ['max_training_steps=4'] }).config, handleSignals: false, ...quiet, progressStream: { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream });

  const sc = loadConfig(file, { phase: 'sample', overrides: ['sample.sample_classes=[1, 3, 0]'] }).config;
  const s = await runSample(sc, quiet);
  assert.equal(s.file, path.join(exp, 'samples', 'grid-0000004-ddim5-cfg2.png'));
  const png = PNG.sync.read(readFileSync(s.file));
  // 3 rows x 2 columns of 8x8 images enlarged 8x, 2-pixel gaps, after a column of row labels
  assert.equal(png.width, labelColumnWidth(['1', '3', '0'], 64 + 2) + 2 * (64 + 2) + 2);
  assert.equal(png.height, 3 * (64 + 2) + 2);
  assert.deepEqual(s.classes, [1, 3, 0]);
  // The same seed and checkpoint give the same grid (sampling is seeded).
  const again = await runSample(sc, { log: () => {} });
  assert.ok(readFileSync(again.file).equals(readFileSync(s.file)));

  const ic = loadConfig(file, { phase: 'inference' }).config;
  const r = await runInference(ic, quiet);
  assert.equal(r.dir, path.join(exp, 'inference-0000004'));
  const npz = readNpz(r.npz!);
  assert.equal(npz.arr_0.dtype, 'uint8');
  assert.deepEqual(npz.arr_0.shape, [6, 8, 8, 3]);
  assert.equal(npz.arr_1.dtype, 'int64');
  assert.deepEqual(npz.arr_1.shape, [6]);
  assert.ok([...(npz.arr_1.data as BigInt64Array)].every((v) => v >= 0n && v < 4n));
  const pngs = readdirSync(r.dir).filter((n) => n.endsWith('.png')).sort();
  assert.deepEqual(pngs, ['000000.png', '000001.png', '000002.png', '000003.png', '000004.png', '000005.png']);
  const first = PNG.sync.read(readFileSync(path.join(r.dir, '000005.png')));
  assert.equal(first.width, 8);
  // The PNG holds the same pixels as arr_0[5].
  const a0 = npz.arr_0.data as Uint8Array;
  for (let p = 0; p < 64; p++) for (let c = 0; c < 3; c++) assert.equal(first.data[p * 4 + c], a0[5 * 192 + p * 3 + c]);

  await assert.rejects(runSample(loadConfig(file, { phase: 'sample', overrides: ['experiment_dir=/nonexistent/x'] }).config, quiet), /no checkpoint found/);
});
