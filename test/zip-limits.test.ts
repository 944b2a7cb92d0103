// Regression tests for hostile .npz/zip files and the npy size limits:
// each hostile input (size fields claiming gigabytes, zip bombs), rebuilt here, is a DataError naming the
// file, raised before anything of the declared size is allocated.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as zlib from 'node:zlib';

import { DataError } from '../src/errors.js';
import { npyHeaderBytes, readNpy } from '../src/io/npy.js';
import { listNpz, readNpz, writeNpz } from '../src/io/npz.js';
import { crc32, readZipDirectory, readZipEntryPrefix, zipStoredParts } from '../src/io/zip.js';

const dir = fs.mkdtempSync(path.join(tmpdir(), 'zip-limits-'));
let n = 0;
const put = (bytes: Uint8Array | Uint8Array[]): string => {
  const f = path.join(dir, `case${n++}.npz`);
  fs.writeFileSync(f, Array.isArray(bytes) ? Buffer.concat(bytes) : bytes);
  return f;
};
const dataError = (file: string, re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof DataError, `expected a DataError, got ${String((e as Error)?.stack ?? e)}`);
  assert.ok(e.message.startsWith(file + ': '), `names the file: ${e.message}`);
  assert.match(e.message, re);
  return true;
};
/** RSS growth over fn, to show nothing of the declared size was allocated. */
function rssGrowth(fn: () => void): number {
  const before = process.memoryUsage().rss;
  fn();
  return process.memoryUsage().rss - before;
}

function goodNpz(forceZip64 = false): Buffer {
  const f = path.join(dir, `good${n++}.npz`);
  writeNpz(f, { a: { dtype: 'float32', shape: [4], data: new Float32Array([1, 2, 3, 4]) } }, { forceZip64 });
  return fs.readFileSync(f);
}
const cdStart = (b: Buffer) => b.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));

test('corrupt central directory entries are DataErrors, not RangeError [ERR_OUT_OF_RANGE]', () => {
  const good = goodNpz();
  const at = cdStart(good);
  const edits: [string, (b: Buffer) => void, RegExp][] = [
    ['extra length', (b) => b.writeUInt16LE(0xfff0, at + 30), /run past the directory's/],
    ['name length', (b) => b.writeUInt16LE(0xffff, at + 28), /run past the directory's/],
    ['comment length', (b) => b.writeUInt16LE(0x8000, at + 32), /run past the directory's/],
    ['entry count', (b) => b.writeUInt16LE(0x4000, b.length - 22 + 10), /entries cannot fit|corrupt zip central directory at entry 1/],
    ['signature', (b) => b.writeUInt32LE(0x12345678, at), /corrupt zip central directory at entry 0/],
    ['local offset', (b) => b.writeUInt32LE(0x7ffffff0, at + 42), /claims \d+ bytes at offset 2147483632/],
  ];
  for (const [name, edit, re] of edits) {
    const b = Buffer.from(good);
    edit(b);
    const f = put(b);
    assert.throws(() => readNpz(f), dataError(f, re), name);
    assert.throws(() => listNpz(f), DataError, name);
  }
  // A ZIP64 extra field too short for the sizes it stands for.
  const z = goodNpz(true);
  const zat = cdStart(z);
  const nameLen = z.readUInt16LE(zat + 28);
  const b = Buffer.from(z);
  b.writeUInt16LE(4, zat + 46 + nameLen + 2); // extra 0x0001 now claims 4 data bytes
  const f = put(b);
  assert.throws(() => readNpz(f), dataError(f, /ZIP64 extra field of entry 'a\.npy' lacks its size|overruns/));
});

test('a 1.3 KB stored entry claiming 0xfffffff0 bytes is refused without allocating ~4 GB', () => {
  // The .npy header claims float32 [1073741820] (0xfffffff0 bytes); 1 KB of it is present.
  const header = npyHeaderBytes('float32', [0xfffffff0 / 4]);
  const parts = zipStoredParts([{ name: 'arr_0.npy', parts: [header, Buffer.alloc(1200)] }]);
  const b = Buffer.concat(parts);
  assert.ok(b.length < 1500);
  // Patch the sizes in the local header and the central record.
  b.writeUInt32LE(0xfffffff0, 18);
  b.writeUInt32LE(0xfffffff0, 22);
  const at = cdStart(b);
  b.writeUInt32LE(0xfffffff0, at + 20);
  b.writeUInt32LE(0xfffffff0, at + 24);
  const f = put(b);
  const grown = rssGrowth(() => assert.throws(() => readNpz(f), dataError(f, /entry 'arr_0\.npy' claims 4294967280 bytes at offset 0, the file has \d+/)));
  assert.ok(grown < 64 * 2 ** 20, `RSS grew ${grown}`);
});

test('a ZIP64 size of 2^50 is a DataError (was "Invalid typed array length")', () => {
  const z = goodNpz(true);
  const at = cdStart(z);
  const nameLen = z.readUInt16LE(at + 28);
  const x = at + 46 + nameLen; // extra 0x0001: size, compressed size, offset
  assert.equal(z.readUInt16LE(x), 1);
  for (const [field, off] of [['size', 4], ['compressed size', 12]] as const) {
    const b = Buffer.from(z);
    b.writeBigUInt64LE(2n ** 50n, x + off);
    const f = put(b);
    assert.throws(() => readNpz(f), dataError(f, /claims|stored entry 'a\.npy' has size/), field);
  }
  // Beyond 2^53 too.
  const b = Buffer.from(z);
  b.writeBigUInt64LE(2n ** 60n, x + 4);
  const f = put(b);
  assert.throws(() => readNpz(f), dataError(f, /exceeds 2\^53/));
});

/** A one-entry archive whose entry is deflated, with the uncompressed size it declares. */
function deflatedNpz(npy: Uint8Array, comp: Uint8Array, declared: number): Buffer {
  const name = Buffer.from('arr_0.npy');
  const crc = crc32([npy]);
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0); local.writeUInt16LE(20, 4); local.writeUInt16LE(8, 8);
  local.writeUInt32LE(crc, 14); local.writeUInt32LE(comp.length, 18); local.writeUInt32LE(declared, 22); local.writeUInt16LE(name.length, 26);
  const cen = Buffer.alloc(46);
  cen.writeUInt32LE(0x02014b50, 0); cen.writeUInt16LE(20, 4); cen.writeUInt16LE(20, 6); cen.writeUInt16LE(8, 10);
  cen.writeUInt32LE(crc, 16); cen.writeUInt32LE(comp.length, 20); cen.writeUInt32LE(declared, 24); cen.writeUInt16LE(name.length, 28);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0); end.writeUInt16LE(1, 8); end.writeUInt16LE(1, 10);
  end.writeUInt32LE(46 + name.length, 12); end.writeUInt32LE(30 + name.length + comp.length, 16);
  return Buffer.concat([local, name, comp, cen, name, end]);
}

test('a deflate bomb stops at the declared size (inflateRawSync with maxOutputLength)', () => {
  // uint8 [100e6] of zeros: ~100 KB deflated, 100 MB inflated; the directory claims 1 MB.
  const N = 100e6;
  const header = npyHeaderBytes('uint8', [N]);
  const stream = zlib.deflateRawSync(Buffer.concat([header, Buffer.alloc(N)]), { level: 9 });
  assert.ok(stream.length < 200e3, `bomb is ${stream.length} bytes`);
  const npy = Buffer.concat([header, Buffer.alloc(16)]); // CRC of a plausible prefix (never reached)
  const f = put(deflatedNpz(npy, stream, 1_000_000));
  const grown = rssGrowth(() => assert.throws(() => readNpz(f), dataError(f, /inflates to more than the 1000000 bytes its directory declares/)));
  assert.ok(grown < 60 * 2 ** 20, `RSS grew ${(grown / 2 ** 20).toFixed(0)} MiB`);
  // A declared size deflate cannot reach from that many bytes is refused before inflating.
  const g = put(deflatedNpz(npy, stream, 0xfffffff0));
  assert.throws(() => readNpz(g), dataError(g, /claims 4294967280 bytes from \d+ compressed ones, more than deflate can produce/));
  // An honest small deflated entry still reads.
  const small = Buffer.concat([npyHeaderBytes('uint8', [3]), Buffer.from([7, 8, 9])]);
  const h = put(deflatedNpz(small, zlib.deflateRawSync(small), small.length));
  assert.deepEqual([...readNpz(h).arr_0.data as Uint8Array], [7, 8, 9]);
});

test('npy: declared shape x itemsize checked against the file and a limit; huge header lengths refused', () => {
  const cases: [string, Buffer, RegExp][] = [
    ['shape past file', Buffer.concat([npyHeaderBytes('float32', [2 ** 40]), Buffer.alloc(64)]), /truncated \.npy data: float32 \[1099511627776\] needs 4398046511104 bytes/],
    ['product past 2^53', Buffer.concat([npyHeaderBytes('float64', [2 ** 30, 2 ** 30, 2 ** 30]), Buffer.alloc(8)]), /truncated \.npy data/],
    ['v2 header 4 GiB', (() => { const b = Buffer.alloc(64); Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 2, 0]).copy(b); b.writeUInt32LE(0xffffffff, 8); return b; })(), /header length 4294967295 exceeds 1048576 bytes/],
  ];
  for (const [name, bytes, re] of cases) {
    const f = path.join(dir, `npy${n++}.npy`);
    fs.writeFileSync(f, bytes);
    assert.throws(() => readNpy(f), dataError(f, re), name);
  }
});

test('readZipEntryPrefix keeps a prefix of a stored entry and checks the CRC-32 of all of it, in 1 MiB pieces', () => {
  // 2.5 MiB: the part past the kept prefix is read in three pieces, the last one short.
  const data = Buffer.alloc(2.5 * 2 ** 20);
  for (let i = 0; i < data.length; i += 4093) data[i] = i & 0xff;
  const b = Buffer.concat(zipStoredParts([{ name: 'data/0', parts: [data] }]));
  const f = put(b);
  const read = (file: string, keep: number) => {
    const fd = fs.openSync(file, 'r');
    try {
      return readZipEntryPrefix(fd, readZipDirectory(fd, file)[0], file, keep);
    } finally {
      fs.closeSync(fd);
    }
  };
  assert.deepEqual(read(f, 100), data.subarray(0, 100));
  assert.equal(read(f, data.length).equals(data), true);
  assert.equal(read(f, 0).length, 0);
  // A flipped byte in the last, short piece (far past the kept prefix) is still found.
  const at = 30 + 'data/0'.length + data.length - 10; // local header, name, then the data
  const bad = Buffer.from(b);
  bad[at] ^= 1;
  const g = put(bad);
  assert.throws(() => read(g, 100), dataError(g, /CRC-32 mismatch in zip entry 'data\/0': the file is corrupt/));
  assert.throws(() => read(f, data.length + 1), dataError(f, /zip entry 'data\/0': \d+ bytes wanted of its \d+/));
});
