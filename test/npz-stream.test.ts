// Streamed .npz / .npy writing (src/io/npz.ts NpzStreamWriter, src/io/npy.ts
// NpyStreamWriter): what -p inference writes batch by batch, so that 50k samples at
// 256x256 (9.8 GB, past the 4 GiB a typed array holds) reach samples.npz.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { NpzStreamWriter, readNpz, writeNpz } from '../src/io/npz.js';
import { NpyStreamWriter, readNpy, writeNpy } from '../src/io/npy.js';
import { readZipDirectory } from '../src/io/zip.js';
import { DataError } from '../src/errors.js';
import { openImageSet } from '../src/eval/samples.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'npz-stream-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Writes `data` in pieces of random sizes (some empty). */
function writeChunked(w: { write(b: Uint8Array): void }, data: Uint8Array, seed: number): void {
  let s = seed;
  for (let i = 0; i < data.length;) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const n = Math.min(data.length - i, s % 1000);
    w.write(data.subarray(i, i + n));
    i += n;
  }
}

test('a streamed .npz is byte for byte what writeNpz writes, with and without ZIP64 records', () => {
  const imgs = Uint8Array.from({ length: 7 * 5 * 5 * 3 }, (_, i) => (i * 37) % 256);
  const labels = BigInt64Array.from([3n, 1n, 4n, 1n, 5n, 9n, 2n]);
  const mtime = new Date(2026, 11, 1, 12, 0, 0);
  for (const forceZip64 of [false, true]) {
    const a = path.join(dir, `whole-${forceZip64}.npz`), b = path.join(dir, `stream-${forceZip64}.npz`);
    writeNpz(a, { arr_0: { dtype: 'uint8', shape: [7, 5, 5, 3], data: imgs }, arr_1: { dtype: 'int64', shape: [7], data: labels } }, { forceZip64, mtime });
    const w = new NpzStreamWriter(b, { forceZip64, mtime });
    w.begin('arr_0', 'uint8', [7, 5, 5, 3]);
    writeChunked(w, imgs, 5);
    w.end();
    w.begin('arr_1', 'int64', [7]);
    writeChunked(w, bytesOf(labels), 9);
    w.end();
    assert.ok(!fs.existsSync(b), 'nothing under the final name before commit');
    w.commit();
    assert.deepEqual(fs.readFileSync(b), fs.readFileSync(a));
    const r = readNpz(b); // CRC-checked
    assert.deepEqual(r.arr_0.data, imgs);
    assert.deepEqual(r.arr_1.data, labels);
  }
});

test('a streamed .npy equals writeNpy; wrong byte counts are DataErrors that leave no file behind', () => {
  const x = Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => i / 7);
  const a = path.join(dir, 'a.npy'), b = path.join(dir, 'b.npy');
  writeNpy(a, { dtype: 'float32', shape: [2, 3, 4], data: x });
  const w = new NpyStreamWriter(b, 'float32', [2, 3, 4]);
  writeChunked(w, bytesOf(x), 3);
  w.commit();
  assert.deepEqual(fs.readFileSync(b), fs.readFileSync(a));
  assert.deepEqual(readNpy(b).data, x);

  const before = fs.readdirSync(dir).length;
  const short = new NpyStreamWriter(path.join(dir, 'short.npy'), 'float32', [2, 3, 4]);
  short.write(new Uint8Array(8));
  assert.throws(() => short.commit(), (e: Error) => e instanceof DataError && /8 payload bytes written, the shape holds 96/.test(e.message));
  const long = new NpyStreamWriter(path.join(dir, 'long.npy'), 'uint8', [4]);
  assert.throws(() => long.write(new Uint8Array(5)), /5 payload bytes written, the shape holds 4/);
  const z = new NpzStreamWriter(path.join(dir, 'short.npz'));
  z.begin('arr_0', 'uint8', [10]);
  z.write(new Uint8Array(4));
  assert.throws(() => z.end(), (e: Error) => e instanceof DataError && /short\.npz/.test(e.message) && /arr_0\.npy/.test(e.message));
  const z2 = new NpzStreamWriter(path.join(dir, 'over.npz'));
  z2.begin('arr_0', 'uint8', [2]);
  assert.throws(() => z2.write(new Uint8Array(3)), DataError);
  z2.abort();
  assert.equal(fs.readdirSync(dir).length, before, 'no temporary or partial file is left');
});

// 50k samples at 256x256 are 9.8 GB; 4.4 GB here is enough to pass every 32-bit field.
const BIG = 22_400; // x 196,608 bytes = 4.40 GB
const free = (() => { try { const s = fs.statfsSync(dir); return s.bavail * s.bsize; } catch { return 0; } })();
test('an arr_0 past 4 GiB streams through in bounded memory, reads back as a valid ZIP64 archive, and -p evaluate streams it with its CRC checked', { skip: free < 12e9 ? `needs 12 GB free in ${os.tmpdir()}, has ${(free / 1e9).toFixed(1)}` : false }, async () => {
  const file = path.join(dir, 'big.npz');
  const per = 256 * 256 * 3;
  const w = new NpzStreamWriter(file);
  w.begin('arr_0', 'uint8', [BIG, 256, 256, 3]);
  const batch = new Uint8Array(100 * per);
  const rss0 = process.memoryUsage().rss;
  for (let i = 0; i < BIG; i += 100) {
    batch[0] = i % 251; // a byte per batch that the CRC must see
    w.write(batch.subarray(0, Math.min(100, BIG - i) * per));
  }
  w.end();
  const labels = BigInt64Array.from({ length: BIG }, (_, i) => BigInt(i % 1000));
  w.begin('arr_1', 'int64', [BIG]);
  w.write(bytesOf(labels));
  w.end();
  w.commit();
  assert.ok(process.memoryUsage().rss - rss0 < 512 * 2 ** 20, 'memory stays bounded');
  const fd = fs.openSync(file, 'r');
  try {
    const entries = readZipDirectory(fd, file);
    assert.deepEqual(entries.map((e) => e.name), ['arr_0.npy', 'arr_1.npy']);
    assert.ok(entries[0].size > 2 ** 32 && entries[1].localHeaderOffset > 2 ** 32, 'ZIP64 sizes and offsets');
  } finally {
    fs.closeSync(fd);
  }
  assert.deepEqual(readNpz(file, { keys: ['arr_1'] }).arr_1.data, labels); // past 4 GiB, CRC checked
  assert.throws(() => readNpz(file, { keys: ['arr_0'] }), DataError); // too large for one typed array: an error, not a crash
  // An independent reader checks every CRC, when one is here (Python's zipfile).
  const py = spawnSync('python3', ['-c', 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); print(z.testzip())', file], { encoding: 'utf8' });
  if (py.status === 0) assert.equal(py.stdout.trim(), 'None');

  // -p evaluate streams it: rows read in order, the entry's CRC checked at the last row
  const readAll = async (): Promise<number[]> => {
    const set = await openImageSet(file);
    try {
      assert.ok('rows' in set, 'a set past STREAM_IMAGES_ABOVE is streamed, not loaded');
      assert.deepEqual([set.N, set.H, set.W, set.C], [BIG, 256, 256, 3]);
      const marks: number[] = [];
      for (let i = 0; i < set.N; i += 1000) {
        const r = set.rows(i, Math.min(1000, set.N - i));
        for (let j = 0; j < r.length / per; j += 100) marks.push(r[j * per]);
      }
      return marks;
    } finally {
      if ('close' in set) set.close();
    }
  };
  const marks = await readAll();
  assert.deepEqual(marks, Array.from({ length: BIG / 100 }, (_, i) => (i * 100) % 251));
  const fd2 = fs.openSync(file, 'r+');
  fs.writeSync(fd2, Uint8Array.of(7), 0, 1, 3_000_000_001); // one flipped byte in the middle
  fs.closeSync(fd2);
  await assert.rejects(readAll(), (e: Error) => e instanceof DataError && /CRC-32 mismatch/.test(e.message));
  fs.rmSync(file);
});
