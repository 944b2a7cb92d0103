// The experiment's data sets: generated scenes (deterministic from (seed,
// index), several objects, colour independent of shape, textured backgrounds,
// the feature network's label) and scikit-learn's digits (the committed file,
// its parser's errors, and makeDataset from a config).
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';

import { loadConfig } from '../src/config/index.js';
import { describeScene, DigitsDataset, makeDataset, parseDigits, readDigits, renderScene, SCENE_CLASSES, SceneDataset } from '../src/data/index.js';
import { ConfigError, DataError } from '../src/errors.js';

const S = 16;
const opts = { seed: 3, size: 10_000, imageSize: S, channels: 3 };

test('scenes: a pure function of (seed, index), in [-1, 1], independent of the batch', async () => {
  const a = new Float32Array(3 * S * S);
  const b = new Float32Array(3 * S * S);
  const la = renderScene(opts, 42, a, 0);
  const lb = renderScene(opts, 42, b, 0);
  assert.equal(la, lb);
  assert.deepEqual(a, b);
  assert.ok(a.every((v) => v >= -1 && v <= 1));
  renderScene({ ...opts, seed: 4 }, 42, b, 0);
  assert.notDeepEqual(a, b);
  const ds = new SceneDataset(opts);
  const batch = await ds.load(Int32Array.from([7, 42, 9]), new Uint8Array(3));
  assert.deepEqual(batch.x.subarray(3 * S * S, 6 * S * S), a);
  assert.equal(batch.y[1], la);
  // rendered once and kept: a flipped load does not change what the next load returns
  const flipped = await ds.load(Int32Array.from([42]), Uint8Array.from([1]));
  assert.equal(flipped.x[0], a[S - 1]);
  assert.deepEqual((await ds.load(Int32Array.from([42]), new Uint8Array(1))).x, a);
  assert.equal(ds.numClasses, SCENE_CLASSES);
  assert.throws(() => new SceneDataset({ ...opts, size: 0 }), /size must be a positive integer/);
});

test('scenes: 1-4 objects, every (count, largest shape) label, all backgrounds, colours independent of shape', () => {
  const labels = new Set<number>();
  const counts = [0, 0, 0, 0];
  const bgs = new Map<string, number>();
  const N = 4000;
  for (let i = 0; i < N; i++) {
    const d = describeScene(opts, i);
    assert.equal(d.label, 10 * (d.count - 1) + d.largestShape);
    labels.add(d.label);
    counts[d.count - 1]++;
    bgs.set(d.background, (bgs.get(d.background) ?? 0) + 1);
  }
  assert.equal(labels.size, SCENE_CLASSES);
  for (const c of counts) assert.ok(c > N / 4 - 150 && c < N / 4 + 150, `counts ${counts}`);
  assert.deepEqual([...bgs.keys()].sort(), ['checkerboard', 'gradient', 'plaid', 'stripes']);
  // one-object scenes: the mean colour of the object's pixels is the same for every shape
  // (shape and colour are drawn independently), unlike the synthetic set's fixed class colours
  const img = new Float32Array(3 * S * S);
  const meanRed: number[][] = Array.from({ length: 10 }, () => []);
  for (let i = 0; i < N && meanRed.some((m) => m.length < 25); i++) {
    const d = describeScene(opts, i);
    if (d.count !== 1) continue;
    renderScene(opts, i, img, 0);
    // the centre-most bright-or-dark extreme is not needed: the image mean over red carries the object's colour
    let s = 0;
    for (let p = 0; p < S * S; p++) s += img[p];
    meanRed[d.largestShape].push(s / (S * S));
  }
  const means = meanRed.map((m) => m.reduce((a, b) => a + b, 0) / m.length);
  const spread = Math.max(...means) - Math.min(...means);
  assert.ok(spread < 0.35, `mean red channel per shape differs by ${spread}: ${means.map((m) => m.toFixed(2))}`);
  // textured backgrounds: a one-object scene is never flat outside the object
  let textured = 0;
  for (let i = 0; i < 200; i++) {
    renderScene(opts, i, img, 0);
    let min = Infinity;
    let max = -Infinity;
    for (let p = 0; p < S; p++) {
      min = Math.min(min, img[p]);
      max = Math.max(max, img[p]);
    }
    if (max - min > 0.05) textured++;
  }
  assert.ok(textured > 150, `only ${textured}/200 images vary along their top row`);
});

test('digits: the committed scikit-learn file (1797 images, 10 balanced classes) in [-1, 1]', async () => {
  const d = readDigits();
  assert.equal(d.y.length, 1797);
  const counts = new Array(10).fill(0);
  for (const y of d.y) counts[y]++;
  for (const c of counts) assert.ok(c >= 174 && c <= 183, `${counts}`);
  // the first image of sklearn.datasets.load_digits() is a 0 whose first row is 0 0 5 13 9 1 0 0
  assert.equal(d.y[0], 0);
  assert.deepEqual([...d.x.subarray(0, 8)], [0, 0, 5, 13, 9, 1, 0, 0]);
  const ds = new DigitsDataset({ imageSize: 8, channels: 1 });
  const b = await ds.load(Int32Array.from([0]), new Uint8Array([0]));
  assert.deepEqual([...b.x.subarray(0, 8)], [0, 0, 5, 13, 9, 1, 0, 0].map((v) => v / 8 - 1));
  const f = await ds.load(Int32Array.from([0]), new Uint8Array([1]));
  assert.deepEqual([...f.x.subarray(0, 8)], [0, 0, 1, 9, 13, 5, 0, 0].map((v) => v / 8 - 1));
  await assert.rejects(ds.load(Int32Array.from([1797]), new Uint8Array(1)), /index 1797 outside \[0, 1797\)/);
  assert.throws(() => new DigitsDataset({ imageSize: 16, channels: 1 }), (e: unknown) => e instanceof ConfigError && /data\.image_size: the digits are 8x8/.test(e.message));
  assert.throws(() => new DigitsDataset({ imageSize: 8, channels: 3 }), /data\.channels: the digits are grey/);
});

test('digits: malformed files are refused with the file and line', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'st-digits-'));
  const row = (label: string) => [...new Array(64).fill('1'), label].join(',');
  assert.equal(parseDigits(`${row('3')}\n${row('9')}\n`, 'x').y.length, 2);
  assert.throws(() => parseDigits(`${row('3')}\n1,2,3\n`, 'f.csv'), (e: unknown) => e instanceof DataError && /f\.csv: line 2 has 3 values, expected 65/.test(e.message));
  assert.throws(() => parseDigits(row('10'), 'f.csv'), /line 1: label must be an integer in 0\.\.9, found "10"/);
  assert.throws(() => parseDigits(row('3').replace(/^1/, '17'), 'f.csv'), /line 1, pixel 0: expected an integer in 0\.\.16, found "17"/);
  assert.throws(() => parseDigits('\n', 'f.csv'), /no rows/);
  const gz = path.join(dir, 'd.csv.gz');
  writeFileSync(gz, gzipSync(`${row('5')}\n`));
  assert.equal(readDigits(gz).y[0], 5);
  const bad = path.join(dir, 'bad.csv.gz');
  writeFileSync(bad, Buffer.from([0x1f, 0x8b, 1, 2, 3]));
  assert.throws(() => readDigits(bad), /bad\.csv\.gz: not a readable gzip file/);
  assert.throws(() => readDigits(path.join(dir, 'none.csv.gz')), /none\.csv\.gz: the digits file is missing/);
});

test('makeDataset: scenes and digits from a config; data.data_seed fixes the images', async () => {
  const cfg = (extra: string[]) => loadConfig(path.resolve('configs/default.yaml'), { overrides: extra, phase: 'train' }).config;
  const sc = makeDataset(cfg(['data.name=scenes', 'data.num_classes=0', 'data.image_size=16', 'model.name=DiT-Ti/4', 'data.num_samples=100', 'seed=5', 'data.data_seed=3']));
  assert.ok(sc instanceof SceneDataset);
  assert.equal(sc.size, 100);
  const x = new Float32Array(3 * S * S);
  renderScene(opts, 1, x, 0);
  assert.deepEqual((await sc.load(Int32Array.from([1]), new Uint8Array(1))).x, x);
  const dg = makeDataset(cfg(['data.name=digits', 'data.image_size=8', 'data.channels=1', 'model.name=DiT-Ti/2', 'data.num_classes=10']));
  assert.ok(dg instanceof DigitsDataset);
  assert.equal(dg.size, 1797);
});
