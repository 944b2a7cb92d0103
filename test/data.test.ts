import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { PNG } from 'pngjs';

import { BatchLoader, ImageFolderDataset, LatentsDataset, SyntheticDataset } from '../src/data/index.js';
import { DataError } from '../src/errors.js';
import { writeNpy } from '../src/io/npy.js';

function png(file: string, w: number, h: number, rgb: (x: number, y: number) => [number, number, number]) {
  const p = new PNG({ width: w, height: h });
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const [r, g, b] = rgb(x, y);
    const i = (y * w + x) * 4;
    p.data[i] = r; p.data[i + 1] = g; p.data[i + 2] = b; p.data[i + 3] = 255;
  }
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, PNG.sync.write(p));
}

const tmp = () => mkdtempSync(path.join(tmpdir(), 'data-'));
const opts = (root: string, extra: object = {}) => ({ root, imageSize: 4, channels: 3, numClasses: 3, centerCrop: true, skipBadFiles: false, warn: () => {}, ...extra });

test('image folder: labels from sorted class folders, centre crop + resize, [-1, 1], flip', async () => {
  const root = tmp();
  // 8x6 image: the centre 6x6 crop drops one column on each side; left half black, right half white.
  png(path.join(root, 'b_cls/0.png'), 8, 6, (x) => (x < 4 ? [0, 0, 0] : [255, 255, 255]));
  png(path.join(root, 'a_cls/0.png'), 4, 4, () => [255, 0, 0]);
  writeFileSync(path.join(root, 'a_cls/notes.txt'), 'ignored');
  const ds = new ImageFolderDataset(opts(root));
  try {
    assert.equal(ds.size, 2);
    const { x, y } = await ds.load(Int32Array.from([0, 1]), Uint8Array.from([0, 1]));
    assert.deepEqual([...y], [0, 1]);
    assert.equal(x.length, 2 * 3 * 16);
    // sample 0: pure red
    assert.deepEqual([...x.subarray(0, 16)], new Array(16).fill(1));
    assert.deepEqual([...x.subarray(16, 32)], new Array(16).fill(-1));
    // sample 1 (flipped): crop columns 1..6 resized to 4: left half white, right half black
    const row = [...x.subarray(48, 52)];
    assert.ok(row[0] === 1 && row[3] === -1, `flipped row ${row}`);
  } finally {
    await ds.close();
  }
});

test('image folder errors name the file; skip_bad_files warns, counts and keeps batches full', async () => {
  const empty = tmp();
  assert.throws(() => new ImageFolderDataset(opts(empty)), (e: unknown) => e instanceof DataError && /empty image folder/.test(e.message));
  const root = tmp();
  png(path.join(root, 'a/0.png'), 4, 4, () => [10, 20, 30]);
  mkdirSync(path.join(root, 'b'));
  assert.throws(() => new ImageFolderDataset(opts(root)), new RegExp(`${path.join(root, 'b')}: empty class folder`));
  png(path.join(root, 'b/0.png'), 4, 4, () => [10, 20, 30]);
  writeFileSync(path.join(root, 'b/bad.png'), 'this is not a png');
  assert.throws(() => new ImageFolderDataset(opts(root)), (e: unknown) => e instanceof DataError && e.message.startsWith(path.join(root, 'b/bad.png')) && /not a JPEG, PNG or WebP image/.test(e.message));
  const warnings: string[] = [];
  const ds = new ImageFolderDataset(opts(root, { skipBadFiles: true, warn: (m: string) => warnings.push(m) }));
  assert.equal(ds.size, 2);
  assert.equal(ds.badFiles, 1);
  assert.match(warnings[0], /bad\.png/);
  await ds.close();

  // A valid header but corrupt data is found by the decode worker.
  const good = PNG.sync.write(Object.assign(new PNG({ width: 4, height: 4 }), {}));
  const corrupt = Buffer.from(good);
  corrupt.fill(0x41, 40, corrupt.length - 12);
  writeFileSync(path.join(root, 'b/bad.png'), corrupt);
  const strict = new ImageFolderDataset(opts(root));
  await assert.rejects(strict.load(Int32Array.from([0, 2]), new Uint8Array(2)), (e: unknown) => e instanceof DataError && /b\/bad\.png: cannot decode/.test(e.message));
  await strict.close();
  const lenient = new ImageFolderDataset(opts(root, { skipBadFiles: true }));
  const b = await lenient.load(Int32Array.from([0, 2]), new Uint8Array(2));
  assert.equal(lenient.badFiles, 1);
  assert.deepEqual([...b.y], [0, 0]);
  assert.deepEqual([...b.x.subarray(48)], [...b.x.subarray(0, 48)]);
  await lenient.close();

  // Mixed sizes when images must already be image_size; too many class folders.
  const mixed = tmp();
  png(path.join(mixed, 'a/0.png'), 4, 4, () => [0, 0, 0]);
  png(path.join(mixed, 'a/1.png'), 5, 4, () => [0, 0, 0]);
  assert.throws(() => new ImageFolderDataset(opts(mixed, { centerCrop: false })), /a\/1\.png: image is 5x4, expected 4x4/);
  for (const c of ['b', 'c', 'd']) png(path.join(mixed, `${c}/0.png`), 4, 4, () => [0, 0, 0]);
  assert.throws(() => new ImageFolderDataset(opts(mixed)), /d: class folder #3 gives label 3, outside data\.num_classes = 3/);
});

test('latents .npy: rows, labels, scale; bad shapes and labels are named', async () => {
  const dir = tmp();
  const N = 5;
  const data = new Float32Array(N * 2 * 2 * 2).map((_, i) => i);
  writeNpy(path.join(dir, 'lat.npy'), { dtype: 'float32', shape: [N, 2, 2, 2], data });
  writeNpy(path.join(dir, 'lat_labels.npy'), { dtype: 'int64', shape: [N], data: BigInt64Array.from([0n, 1n, 2n, 1n, 0n]) });
  const o = { file: path.join(dir, 'lat.npy'), labels: null, numClasses: 3, shape: [2, 2, 2] as const, scale: 0.5, skipBadFiles: false };
  const ds = new LatentsDataset(o);
  const b = await ds.load(Int32Array.from([3, 0]), Uint8Array.from([0, 1]));
  assert.deepEqual([...b.y], [1, 0]);
  assert.deepEqual([...b.x.subarray(0, 8)], [24, 25, 26, 27, 28, 29, 30, 31].map((v) => v * 0.5));
  assert.deepEqual([...b.x.subarray(8, 10)], [0.5, 0]); // flipped row
  await ds.close();
  assert.throws(() => new LatentsDataset({ ...o, shape: [4, 2, 2] }), /lat\.npy: latents are \[2, 2, 2\] per sample, the model expects \[4,2,2\]/);
  writeNpy(path.join(dir, 'lat_labels.npy'), { dtype: 'int64', shape: [N], data: BigInt64Array.from([0n, 1n, 7n, 1n, 0n]) });
  assert.throws(() => new LatentsDataset(o), /lat_labels\.npy: label 7 of sample 2 is outside \[0, 3\)/);
  const skipping = new LatentsDataset({ ...o, skipBadFiles: true, warn: () => {} });
  assert.equal(skipping.size, 4);
  assert.equal(skipping.badFiles, 1);
  await skipping.close();
  writeNpy(path.join(dir, 'lat_labels.npy'), { dtype: 'int64', shape: [N - 1], data: BigInt64Array.from([0n, 1n, 2n, 1n]) });
  assert.throws(() => new LatentsDataset(o), /lat_labels\.npy: labels must be \[N\] with N = 5/);
  writeFileSync(path.join(dir, 'lat.npy'), 'garbage');
  assert.throws(() => new LatentsDataset(o), /lat\.npy: not an \.npy file/);
});

test('synthetic data is deterministic, in [-1, 1], and classes differ', async () => {
  const o = { seed: 3, size: 64, imageSize: 8, channels: 3, numClasses: 10 };
  const a = await new SyntheticDataset(o).load(Int32Array.from([5, 9]), new Uint8Array(2));
  const b = await new SyntheticDataset(o).load(Int32Array.from([5, 9]), new Uint8Array(2));
  assert.deepEqual(a.x, b.x);
  assert.ok(a.x.every((v) => v >= -1 && v <= 1));
  const c = await new SyntheticDataset({ ...o, seed: 4 }).load(Int32Array.from([5]), new Uint8Array(1));
  assert.notDeepEqual(c.x, a.x.subarray(0, 192));
  const all = await new SyntheticDataset(o).load(Int32Array.from({ length: 64 }, (_, i) => i), new Uint8Array(64));
  assert.ok(new Set(all.y).size >= 8, 'labels cover the classes');
});

test('loader: seeded order, drop_last, exact continuation from a saved position', async () => {
  const ds = new SyntheticDataset({ seed: 1, size: 10, imageSize: 4, channels: 3, numClasses: 10 });
  const run = async (loader: BatchLoader, n: number) => { const out = []; for (let i = 0; i < n; i++) out.push(await loader.next()); return out; };
  const full = await run(new BatchLoader(ds, 3, 7, true), 7); // 3 batches per epoch: crosses two epoch boundaries
  const first = new BatchLoader(ds, 3, 7, true);
  await run(first, 4);
  const pos = first.position();
  assert.deepEqual({ epoch: pos.epoch, batch: pos.batch }, { epoch: 1, batch: 1 });
  const rest = await run(new BatchLoader(ds, 3, 7, true, JSON.parse(JSON.stringify(pos))), 3);
  for (let i = 0; i < 3; i++) assert.deepEqual(rest[i], full[4 + i]);
  const other = await run(new BatchLoader(ds, 3, 8, true), 1);
  assert.notDeepEqual(other[0].x, full[0].x);
  assert.throws(() => new BatchLoader(ds, 11, 0, false), /data\.batch_size 11 exceeds/);
});
