// Hostile .pt files: each reported attack, rebuilt small here
// (test/helpers/hostile-pt.ts), is a CheckpointError naming the file, in bounded
// time and memory; a damaged stored entry is caught by its CRC-32.
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as zlib from 'node:zlib';

import { convertPt } from '../src/convert/index.js';
import { openPt } from '../src/convert/pt.js';
import { decodeLong, PICKLE_LIMITS, unpickle } from '../src/convert/unpickle.js';
import { CheckpointError } from '../src/errors.js';
import { readZipDirectory } from '../src/io/zip.js';
import { readSafetensors } from '../src/io/safetensors.js';
import * as h from './helpers/hostile-pt.js';

const dir = mkdtempSync(path.join(tmpdir(), 'convert-limits-'));
let n = 0;
const put = (bytes: Uint8Array, ext = 'pt'): string => {
  const f = path.join(dir, `case${n++}.${ext}`);
  writeFileSync(f, bytes);
  return f;
};
const out = () => path.join(dir, `out${n++}.safetensors`);
/** A CheckpointError naming `file` and matching `re`. */
const refused = (file: string, re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof CheckpointError, `expected a CheckpointError, got ${String((e as Error)?.stack ?? e)}`);
  assert.ok(e.message.startsWith(`${file}: `), `names the file: ${e.message}`);
  assert.match(e.message, re);
  return true;
};
/** CPU milliseconds and heap growth of fn (the machine may be shared: CPU time, not wall time). */
function cost(fn: () => void): { ms: number; heapMiB: number } {
  const c0 = process.cpuUsage();
  const h0 = process.memoryUsage().heapUsed;
  let peak = 0;
  fn();
  peak = process.memoryUsage().heapUsed - h0;
  const c = process.cpuUsage(c0);
  return { ms: (c.user + c.system) / 1000, heapMiB: peak / 2 ** 20 };
}

test('a memo bomb (EMPTY_DICT, MEMOIZE, POP repeated) stops at the pickle limits, whatever the opcode', () => {
  // The reported file: 200 MB of pickle deflated to ~200 KB. Refused by its declared size, before inflating.
  const big = put(h.ptOfDeflatedPickle(h.memoBomb(66_000_000)));
  assert.ok(readFileSync(big).length < 250_000);
  const c = cost(() => assert.throws(() => convertPt(big, out()), refused(big, /zip entry archive\/data\.pkl is 198000004 bytes, more than the 67108864 a state dict's pickle takes/)));
  assert.ok(c.ms < 5000, `${c.ms} ms`);
  // Under the size limit, the memo and the heap estimate stop it.
  const f = put(h.ptOfPickle(h.memoBomb(600_000)));
  const d = cost(() => assert.throws(() => convertPt(f, out()), refused(f, /the objects it builds take more than 128 MiB|more than 1048576 memo entries/)));
  assert.ok(d.ms < 20_000, `${d.ms} ms`);
  // Memo entries alone (one None put under a million keys) are bounded too.
  const puts = Buffer.alloc(5 * (PICKLE_LIMITS.memo + 1));
  for (let i = 0; i <= PICKLE_LIMITS.memo; i++) { puts[5 * i] = 0x72; puts.writeUInt32LE(i, 5 * i + 1); } // LONG_BINPUT i
  const p = Buffer.concat([Buffer.from([0x80, 2, 0x4e]), puts, Buffer.from([0x2e])]);
  assert.throws(() => unpickle(p, 'm.pkl'), refused('m.pkl', /more than 1048576 memo entries: not a state dict/));
});

test('a 1 MB LONG4 integer is refused at once; integers are decoded in linear time', () => {
  const f = put(h.ptOfPickle(h.longInt(1 << 20)));
  const c = cost(() => assert.throws(() => convertPt(f, out()), refused(f, /pickle byte 7: an integer of 1048576 bytes: a state dict holds none longer than 16/)));
  assert.ok(c.ms < 5000, `${c.ms} ms`);
  // The legacy format's magic number (10 bytes) and negative numbers decode as Python's int.from_bytes(..., 'little', signed=True).
  assert.equal(decodeLong(Buffer.from('6c fc 9c 46 f9 20 6a a8 50 19'.replace(/ /g, ''), 'hex')), 0x1950a86a20f9469cfc6cn);
  assert.equal(decodeLong(Uint8Array.from([0xff, 0x7f])), 32767);
  assert.equal(decodeLong(Uint8Array.from([0x00, 0x80])), -32768);
  assert.equal(decodeLong(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00])), 2n ** 64n - 1n);
  // Linear: 16x the bytes is not 256x the time (a per-byte BigInt shift was quadratic).
  const t = (len: number) => { const b = new Uint8Array(len).fill(0x5a); const c0 = process.cpuUsage(); for (let i = 0; i < 5; i++) decodeLong(b); const d = process.cpuUsage(c0); return d.user + d.system; };
  t(1 << 14);
  assert.ok(t(1 << 18) < 60 * t(1 << 14) + 20_000, 'decodeLong grows faster than linearly');
});

test('a dict key that is a 40-level DAG of shared lists is described in bounded time', () => {
  const f = put(h.ptOfPickle(h.dagKeyDict(40)));
  assert.ok(readFileSync(f).length < 1000);
  const c = cost(() => assert.throws(() => convertPt(f, out()), (e: unknown) => {
    refused(f, /no state dict found .*; the file holds: \[\[\[\[2 items\], \[…\]\], \[…\]\], \[…\]\] \(None\); choose one with --key/)(e);
    assert.ok((e as Error).message.length < 600, (e as Error).message);
    return true;
  }));
  assert.ok(c.ms < 2000, `${c.ms} ms`);
  // A list that holds itself.
  const cyc = Buffer.from([0x80, 2, 0x7d, 0x5d, 0x71, 0, 0x68, 0, 0x61, 0x4e, 0x73, 0x2e]); // {L: None}, L = [L]
  const g = put(h.ptOfPickle(cyc));
  assert.throws(() => convertPt(g, out()), refused(g, /the file holds: \[\[…\]\] \(None\)/));
});

test('nesting a million deep and one APPENDS of 900,000 items: no stack overflow', () => {
  const cases: [Buffer, RegExp][] = [
    [h.deepListKeyDict(999_000), /the file holds: \[\[\[\[1 item\]\]\]\] \(None\)|the objects it builds take more than 128 MiB/],
    [h.deepTupleKeyDict(200_000), /the file holds: \[\[\[\[1 item\]\]\]\] \(string\)/],
    [h.bigAppendsDict(900_000), /the file holds: x \(a list of 900000 items\)/],
  ];
  for (const [pickle, re] of cases) {
    const f = put(h.ptOfPickle(pickle));
    assert.throws(() => convertPt(f, out()), refused(f, re));
  }
  // A storage key that is a deep list is described, not stringified.
  const deepKey = Buffer.concat([Buffer.from([0x80, 2, 0x28, 0x8c, 7]), Buffer.from('storage'), Buffer.from('ctorch\nFloatStorage\n'),
    Buffer.alloc(100_000, 0x5d), Buffer.alloc(99_999, 0x61), Buffer.from([0x8c, 3]), Buffer.from('cpu'), Buffer.from([0x4b, 1, 0x74, 0x51, 0x2e])]);
  assert.throws(() => unpickle(deepKey, 'k.pkl'), refused('k.pkl', /storage key \[\[\[\[1 item\]\]\]\] is not a plain name/));
});

test('a 1 MB file declaring a 1 GiB deflated storage for 16 floats is refused before inflating', () => {
  const f = put(h.inflateBombPt(1024));
  assert.ok(readFileSync(f).length < 1.1e6);
  const rss0 = process.memoryUsage().rss;
  const c = cost(() => assert.throws(() => convertPt(f, out()), refused(f, /storage 0: zip entry archive\/data\/0 is deflated to \d+ bytes and declares 1073741824 but its tensors use 64/)));
  assert.ok(process.memoryUsage().rss - rss0 < 64 * 2 ** 20, 'nothing of the declared size was allocated');
  assert.ok(c.ms < 5000, `${c.ms} ms`);
  // Within the bound (2 x the tensors + 64 MiB), a deflated storage inflates, its CRC is checked, and only the used part is kept.
  const ok = put(h.inflateBombPt(4));
  const o = out();
  convertPt(ok, o, { log: () => {} });
  const t = readSafetensors(o).tensors.get('w')!;
  assert.deepEqual(t.shape, [16]);
  assert.deepEqual([...t.bytes], new Array(64).fill(0));
  const pt = openPt(ok);
  try {
    assert.equal(pt.format, 'zip');
  } finally {
    pt.close();
  }
  // The stream is real: it inflates to the size it declares.
  const z = h.zerosDeflated(2);
  assert.equal(zlib.inflateRawSync(z.stream).length, 2 << 20);
});

test('every stored entry is CRC-checked: a flipped byte in a storage or the pickle is refused, not converted', () => {
  const src = path.join('test/fixtures/pt', 'tiny_f32.pt');
  const good = readFileSync(src);
  const entries = listEntries(src);
  for (const e of entries.filter((x) => x.method === 0).slice(0, 6)) {
    const b = Buffer.from(good);
    const at = e.dataStart + Math.floor(e.size / 2);
    b[at] ^= 0x10;
    const f = put(b);
    assert.throws(() => convertPt(f, out()), refused(f, new RegExp(`CRC-32 mismatch in zip entry '${e.name.replace(/[.]/g, '\\.')}'`)), e.name);
  }
  // Two central-directory entries of one name (a damaged name) are refused, not resolved to either.
  const b = Buffer.from(good);
  const names = entries.filter((x) => /\/data\/\d+$/.test(x.name));
  const a = names[0];
  const c = names.find((x) => x.name.length === a.name.length && x !== a)!;
  b.write(a.name, c.centralName, 'utf8');
  const f = put(b);
  assert.throws(() => convertPt(f, out()), refused(f, new RegExp(`zip entry ${a.name.replace(/[.]/g, '\\.')} appears twice`)));
});

/** Entries of a fixture with where their data and their central-directory name start. */
function listEntries(file: string) {
  const fdn = openSync(file, 'r');
  try {
    const bytes = readFileSync(file);
    const es = readZipDirectory(fdn, file);
    let cd = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    return es.map((e) => {
      const nameLen = bytes.readUInt16LE(e.localHeaderOffset + 26);
      const extraLen = bytes.readUInt16LE(e.localHeaderOffset + 28);
      const centralName = cd + 46;
      cd += 46 + bytes.readUInt16LE(cd + 28) + bytes.readUInt16LE(cd + 30) + bytes.readUInt16LE(cd + 32);
      return { ...e, dataStart: e.localHeaderOffset + 30 + nameLen + extraLen, centralName };
    });
  } finally {
    closeSync(fdn);
  }
}
