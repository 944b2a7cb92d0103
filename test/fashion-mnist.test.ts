// Fashion-MNIST: the IDX reader on the real files (Debian's
// dataset-fashion-mnist; skipped with the reason when it is not installed)
// and on synthetic IDX files for every error path, and the padding/resizing
// of the data set.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';

import { loadConfig } from '../src/config/index.js';
import { FASHION_MNIST_ROOT, FashionMnistDataset, makeDataset, parseIdx, readFashionMnist, readIdxFile } from '../src/data/index.js';
import { ConfigError, DataError } from '../src/errors.js';

const REAL = existsSync(path.join(FASHION_MNIST_ROOT, 't10k-images-idx3-ubyte.gz'));
/** a byte as the loader scales it, in float32 */
const px = (v: number) => Math.fround(v / 127.5 - 1);
const SKIP = REAL ? false : `Fashion-MNIST is not installed at ${FASHION_MNIST_ROOT} (apt-get install dataset-fashion-mnist)`;

/** An unsigned-byte IDX file: header for `dims`, then `data` (default: the right number of bytes). */
function idx(dims: number[], data?: Uint8Array, magic = [0, 0, 8, dims.length]): Buffer {
  const n = dims.reduce((a, b) => a * b, 1);
  const head = Buffer.alloc(4 + 4 * dims.length);
  head.set(magic, 0);
  dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([head, Buffer.from(data ?? new Uint8Array(n).map((_, i) => i % 251))]);
}

/** A folder with a `split` of n images (pixel (r, c) of image i = (i + r + c) % 256) and the given labels. */
function fakeSet(n: number, labels: number[], o: { gz?: boolean; split?: string } = {}): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'st-fmnist-'));
  const split = o.split ?? 'train';
  const img = new Uint8Array(n * 28 * 28).map((_, k) => (Math.floor(k / 784) + Math.floor((k % 784) / 28) + (k % 28)) % 256);
  const write = (name: string, b: Buffer) => writeFileSync(path.join(dir, o.gz === false ? name : `${name}.gz`), o.gz === false ? b : gzipSync(b));
  write(`${split}-images-idx3-ubyte`, idx([n, 28, 28], img));
  write(`${split}-labels-idx1-ubyte`, idx([labels.length], Uint8Array.from(labels)));
  return dir;
}

test('IDX parsing: header, sizes and every malformed case name the file', () => {
  const ok = parseIdx(idx([2, 3]), 2, 'a.idx');
  assert.deepEqual(ok.dims, [2, 3]);
  assert.equal(ok.data.length, 6);
  assert.throws(() => parseIdx(new Uint8Array(5), 3, 'short.idx'), (e: Error) => e instanceof DataError && /short\.idx: 5 bytes, shorter than the 16-byte IDX header/.test(e.message));
  assert.throws(() => parseIdx(idx([2, 3], undefined, [0, 0, 0x0d, 2]), 2, 'float.idx'), /float\.idx: bad IDX magic 0x00 0x00 0x0d 0x02: expected 0x00 0x00 0x08 0x02/);
  assert.throws(() => parseIdx(idx([6]), 2, 'ndim.idx'), /bad IDX magic 0x00 0x00 0x08 0x01/);
  // truncated data and trailing bytes
  assert.throws(() => parseIdx(idx([2, 3]).subarray(0, 14), 2, 't.idx'), /t\.idx: the header declares 2 x 3 = 6 bytes of data, the file holds 2 \(truncated\)/);
  assert.throws(() => parseIdx(Buffer.concat([idx([2, 3]), Buffer.from([1])]), 2, 'x.idx'), /holds 7 \(trailing bytes\)/);
  // huge declared dimensions: refused from the header, before any allocation
  assert.throws(() => parseIdx(idx([1, 1, 1], new Uint8Array(1)).fill(0xff, 4), 3, 'huge.idx'), /huge\.idx: the header declares dimensions 4294967295 x 4294967295 x 4294967295, more than the \d+ bytes accepted/);
  assert.throws(() => parseIdx(idx([100, 100]), 2, 'big.idx', 1000), /more than the 1000 bytes accepted/);
});

test('Fashion-MNIST files: missing (names apt-get), counts disagree, labels out of range, wrong size, gzip limits', () => {
  const empty = mkdtempSync(path.join(tmpdir(), 'st-fmnist-none-'));
  assert.throws(() => readFashionMnist(empty, 'train'), (e: Error) => e instanceof DataError && e.message.includes(path.join(empty, 'train-images-idx3-ubyte.gz')) && e.message.includes('apt-get install dataset-fashion-mnist') && e.message.includes('data.root'));
  const mismatch = fakeSet(3, [0, 1]);
  assert.throws(() => readFashionMnist(mismatch, 'train'), /train-labels-idx1-ubyte\.gz: 2 labels for the 3 images of/);
  const badLabel = fakeSet(3, [0, 10, 2]);
  assert.throws(() => readFashionMnist(badLabel, 'train'), /train-labels-idx1-ubyte\.gz: label 1 is 10, expected 0\.\.9/);
  const dir = mkdtempSync(path.join(tmpdir(), 'st-fmnist-dims-'));
  writeFileSync(path.join(dir, 'train-images-idx3-ubyte'), idx([2, 32, 32]));
  writeFileSync(path.join(dir, 'train-labels-idx1-ubyte'), idx([2], Uint8Array.from([0, 1])));
  assert.throws(() => readFashionMnist(dir, 'train'), /train-images-idx3-ubyte: images are 32x32, expected 28x28/);
  // a gzip that decompresses past the limit, and one that is not gzip at all past its magic
  const bomb = mkdtempSync(path.join(tmpdir(), 'st-fmnist-bomb-'));
  writeFileSync(path.join(bomb, 'train-labels-idx1-ubyte.gz'), gzipSync(idx([100000])));
  assert.throws(() => readIdxFile(bomb, 'train-labels-idx1-ubyte', 1, 1000), /train-labels-idx1-ubyte\.gz: decompresses to more than the 1000 bytes accepted/);
  writeFileSync(path.join(bomb, 'x.gz'), Buffer.from([0x1f, 0x8b, 1, 2, 3]));
  assert.throws(() => readIdxFile(bomb, 'x', 1), /x\.gz: not a readable gzip file/);
  // a truncated gzip stream
  const gz = gzipSync(idx([100]));
  writeFileSync(path.join(bomb, 'cut.gz'), gz.subarray(0, gz.length - 8));
  assert.throws(() => readIdxFile(bomb, 'cut', 1), /cut\.gz: not a readable gzip file/);
});

test('Fashion-MNIST data set: padding with background, resizing, labels, options checked', async () => {
  const dir = fakeSet(4, [3, 1, 4, 1], { gz: false });
  const base = { root: dir, split: 'train' as const, channels: 1, numClasses: 10 };
  const p = new FashionMnistDataset({ ...base, imageSize: 32, fit: 'pad' });
  assert.deepEqual(p.shape, [1, 32, 32]);
  assert.equal(p.size, 4);
  const b = await p.load(Int32Array.from([2, 0]), new Uint8Array(2));
  assert.deepEqual([...b.y], [4, 3]);
  // 2 px of background (-1) around; pixel (r, c) of image 2 at (r + 2, c + 2)
  assert.equal(b.x[0], -1);
  assert.equal(b.x[1 * 32 + 31], -1);
  assert.equal(b.x[2 * 32 + 2], px(2));
  assert.equal(b.x[(2 + 5) * 32 + 2 + 7], px(2 + 5 + 7));
  assert.equal(b.x[32 * 32 + (2 + 27) * 32 + 2 + 27], px(54));
  // as stored at 28; resized to 32 stays in [-1, 1] and keeps the corners' values
  const s = await new FashionMnistDataset({ ...base, imageSize: 28, fit: 'pad' }).load(Int32Array.from([1]), new Uint8Array(1));
  assert.equal(s.x[0], px(1));
  const r = await new FashionMnistDataset({ ...base, imageSize: 32, fit: 'resize' }).load(Int32Array.from([1]), Uint8Array.from([0]));
  assert.equal(r.x.length, 32 * 32);
  assert.ok(r.x.every((v) => v >= -1 && v <= 1));
  assert.equal(r.x[0], px(1));
  // flips mirror each row
  const f = await p.load(Int32Array.from([2]), Uint8Array.from([1]));
  assert.equal(f.x[(2 + 5) * 32 + (31 - 2 - 7)], px(2 + 5 + 7));
  await assert.rejects(p.load(Int32Array.from([4]), new Uint8Array(1)), /index 4 outside \[0, 4\)/);
  assert.throws(() => new FashionMnistDataset({ ...base, imageSize: 30 + 1, fit: 'pad' }), (e: Error) => e instanceof ConfigError && /data\.image_size/.test(e.message));
  assert.throws(() => new FashionMnistDataset({ ...base, imageSize: 16, fit: 'pad' }), /padding cannot shrink/);
  assert.throws(() => new FashionMnistDataset({ ...base, channels: 3, imageSize: 32, fit: 'pad' }), /data\.channels: Fashion-MNIST is grey/);
  assert.throws(() => new FashionMnistDataset({ ...base, numClasses: 5, imageSize: 32, fit: 'pad' }), /data\.num_classes: Fashion-MNIST has 10 classes/);
});

test('data.name fashion_mnist from a config: the training split, data.root and fashion_mnist_fit', async () => {
  const dir = fakeSet(5, [0, 1, 2, 3, 4]);
  const c = loadConfig(path.resolve('configs/experiments/fashion/uniform.yaml'), { overrides: [`data.root=${dir}`, 'data.fashion_mnist_fit=resize', 'data.image_size=16', 'model.name=DiT-Ti/4'], phase: 'train' }).config;
  const d = makeDataset(c);
  assert.equal(d.size, 5);
  assert.deepEqual(d.shape, [1, 16, 16]);
  assert.match(d.description, /training split .*resized/);
  assert.throws(() => loadConfig(path.resolve('configs/experiments/fashion/uniform.yaml'), { overrides: ['data.fashion_mnist_fit=crop'], phase: 'train' }), /data\.fashion_mnist_fit/);
});

test('the real Fashion-MNIST files: 60000 + 10000 images, 10 balanced classes', { skip: SKIP }, async () => {
  const tr = readFashionMnist(FASHION_MNIST_ROOT, 'train');
  const te = readFashionMnist(FASHION_MNIST_ROOT, 't10k');
  assert.equal(tr.n, 60000);
  assert.equal(te.n, 10000);
  for (const [d, per] of [[tr, 6000], [te, 1000]] as const) {
    const counts = new Array<number>(10).fill(0);
    for (const y of d.labels) counts[y]++;
    assert.deepEqual(counts, new Array<number>(10).fill(per));
  }
  const ds = new FashionMnistDataset({ split: 't10k', imageSize: 32, channels: 1, numClasses: 10, fit: 'pad' });
  const b = await ds.load(Int32Array.from([0, 9999]), new Uint8Array(2));
  // the test split's first image is an ankle boot (9), as in every copy of the set
  assert.equal(b.y[0], 9);
  assert.ok(b.x.some((v) => v > 0));
  assert.equal(b.x[0], -1);
});

test('the -p evaluate reference of fashion_mnist comes from the test split, never the training split', async () => {
  const { referenceImages } = await import('../src/eval/real.js');
  // a training split of all-equal images and a test split of the fakeSet pattern, in one folder
  const dir = fakeSet(6, [0, 1, 2, 3, 4, 5], { split: 't10k' });
  const train = idx([3, 28, 28], new Uint8Array(3 * 784).fill(7));
  writeFileSync(path.join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(train));
  writeFileSync(path.join(dir, 'train-labels-idx1-ubyte.gz'), gzipSync(idx([3], Uint8Array.from([0, 1, 2]))));
  const file = path.join(dir, 'c.yaml');
  writeFileSync(file, `experiment_dir: ${dir}/exp\ndata:\n  name: fashion_mnist\n  root: ${dir}\n  image_size: 28\n  channels: 1\n  num_classes: 10\n`);
  const ref = await referenceImages(loadConfig(file).config, 4);
  assert.equal(ref.N, 4);
  assert.match(ref.source, /test split/);
  assert.ok(ref.data.some((v) => v !== 7), 'the reference holds test images, not the training split');
  await assert.rejects(referenceImages(loadConfig(file).config, 7), (e: unknown) => e instanceof ConfigError && /test split has 6 images/.test((e as Error).message));
});
