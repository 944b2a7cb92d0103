// The -p sample grid: EMA and raw weights, and other sampling settings, write
// different files; an image-folder run labels its rows with the class folder names.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { PNG } from 'pngjs';

import { loadConfig } from '../src/config/index.js';
import { labelColumnWidth } from '../src/generate/images.js';
import { scratchDir, tinyConfigFile, useAddon } from './helpers-e2e.js';

useAddon();
const { train } = await import('../src/train/index.js');
const { runSample } = await import('../src/generate/index.js');
const { samplingTag } = await import('../src/generate/sample.js');
const quiet = { log: () => {}, progressStream: { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream };

test('raw-weight and EMA grids are separate files; image-folder rows carry the class folder names', async () => {
  const { file, exp } = tinyConfigFile();
  await train({ config: loadConfig(file, { overrides: ['max_training_steps=2'] }).config, handleSignals: false, ...quiet });
  const folder = scratchDir('st-classes-');
  for (const n of ['cat', 'dog', 'a-rather-long-class-folder-name-indeed', 'zebra', '.hidden']) mkdirSync(path.join(folder, n));
  const over = ['sample.num_per_class=1', 'data.name=image_folder', `data.root=${folder}`];

  const logs: string[] = [];
  const ema = await runSample(loadConfig(file, { phase: 'sample', overrides: over }).config, { ...quiet, log: (m) => logs.push(m) });
  const raw = await runSample(loadConfig(file, { phase: 'sample', overrides: [...over, 'sample.use_ema=false'] }).config, { ...quiet, log: (m) => logs.push(m) });
  assert.equal(ema.file, path.join(exp, 'samples', 'grid-0000002-ddim5-cfg2.png'));
  assert.equal(raw.file, path.join(exp, 'samples', 'grid-0000002-ddim5-cfg2-raw.png'));
  assert.ok(existsSync(ema.file) && existsSync(raw.file));
  assert.ok(!readFileSync(ema.file).equals(readFileSync(raw.file)), 'the raw grid did not overwrite the EMA one');
  // rows in sorted folder order (as the data set numbers them), hidden folders skipped, long names cut
  const names = ['a-rather-long-class-fol…', 'cat', 'dog', 'zebra'];
  assert.ok(logs.some((l) => l.includes('(EMA weights; rows: classes 0 a-rather-long-class-folder-name-indeed, 1 cat, 2 dog, 3 zebra;')), logs.join('\n'));
  assert.ok(logs.some((l) => l.includes('grid-0000002-ddim5-cfg2-raw.png (raw weights;')), logs.join('\n'));
  const png = PNG.sync.read(readFileSync(ema.file));
  assert.equal(png.width, labelColumnWidth(names, 64 + 2) + (64 + 2) + 2); // the label column fits the names
  assert.ok(png.width > labelColumnWidth(['0', '1', '2', '3'], 64 + 2) + (64 + 2) + 2);

  // Fewer class folders than model classes (data.num_classes set high): one row per folder.
  const three = scratchDir('st-classes3-');
  for (const n of ['a', 'b', 'c']) mkdirSync(path.join(three, n));
  const logs3: string[] = [];
  const r3 = await runSample(loadConfig(file, { phase: 'sample', overrides: ['sample.num_per_class=1', 'data.name=image_folder', `data.root=${three}`] }).config, { ...quiet, log: (m) => logs3.push(m) });
  assert.deepEqual(r3.classes, [0, 1, 2]);
  assert.ok(logs3.some((l) => l.includes('rows: classes 0 a, 1 b, 2 c;')), logs3.join('\n'));
  // The folder gone (or the synthetic data): indices, every class.
  const logs4: string[] = [];
  await runSample(loadConfig(file, { phase: 'sample', overrides: ['sample.num_per_class=1', 'data.name=image_folder', `data.root=${three}-gone`] }).config, { ...quiet, log: (m) => logs4.push(m) });
  assert.ok(logs4.some((l) => l.includes('rows: classes 0, 1, 2, 3;')), logs4.join('\n'));
});

test('grids of another guidance scale or sampler do not overwrite each other', async () => {
  const { file, exp } = tinyConfigFile();
  await train({ config: loadConfig(file, { overrides: ['max_training_steps=2'] }).config, handleSignals: false, ...quiet });
  const grid = (over: string[]) => runSample(loadConfig(file, { phase: 'sample', overrides: ['sample.num_per_class=1', ...over] }).config, quiet);
  const g2 = await grid([]);
  const first = readFileSync(g2.file);
  const g1 = await grid(['sample.guidance_scale=1']);
  const ddpm = await grid(['sample.sampler=ddpm', 'sample.steps=5']);
  assert.deepEqual([g2.file, g1.file, ddpm.file].map((f) => path.basename(f)), ['grid-0000002-ddim5-cfg2.png', 'grid-0000002-ddim5-cfg1.png', 'grid-0000002-ddpm5-cfg2.png']);
  assert.ok(readFileSync(g2.file).equals(first), 'the guidance-2 grid is as it was written');
  // (two steps leave the conditional and unconditional predictions too close for guidance to show in 8-bit pixels; DDPM's noise shows)
  assert.ok(!readFileSync(ddpm.file).equals(first), 'the DDPM grid is another picture');
  assert.equal(readdirSync(path.join(exp, 'samples')).filter((f) => f.endsWith('.png')).length, 3);
});

test('samplingTag names the sampler, its respacing, eta, guidance and guided channels', () => {
  const base = { sampler: 'ddim' as const, steps: 'ddim50', eta: 0, guidance_scale: 4, guidance_channels: '3' as const };
  assert.equal(samplingTag(base), 'ddim50-cfg4');
  assert.equal(samplingTag({ ...base, steps: '250' }), 'ddim-250-cfg4'); // evenly spaced, not DDIM-strided
  assert.equal(samplingTag({ ...base, eta: 0.5, guidance_scale: 1.5 }), 'ddim50-eta0.5-cfg1.5');
  assert.equal(samplingTag({ ...base, guidance_channels: 'all' }), 'ddim50-cfg4-all');
  assert.equal(samplingTag({ ...base, guidance_scale: 1, guidance_channels: 'all' }), 'ddim50-cfg1'); // unguided: the channels do not matter
  assert.equal(samplingTag({ ...base, sampler: 'ddpm', steps: '250', eta: 0.5 }), 'ddpm250-cfg4'); // DDPM has no eta
  assert.equal(samplingTag({ ...base, sampler: 'ddpm', steps: '10,15,20' }), 'ddpm10_15_20-cfg4');
  assert.equal(samplingTag({ ...base, sampler: 'ddpm', steps: 'ddim50' }), 'ddpm-ddim50-cfg4');
});
