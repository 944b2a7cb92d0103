// TensorBoard event files, read back with a reader written here from the
// format's description (TFRecord framing, masked CRC-32C, the Event protobuf),
// sharing no code with src/tensorboard.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { crc32c, maskCrc, EventWriter, timestepHistogram, bucketTag } from '../src/tensorboard/index.js';

// ---- the independent reader --------------------------------------------------

/** CRC-32C computed bit by bit from the polynomial (no table). */
function crcBitwise(b: Uint8Array): number {
  let c = ~0 >>> 0;
  for (const byte of b) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0x82f63b78 & -(c & 1));
    c >>>= 0;
  }
  return ~c >>> 0;
}
const mask = (c: number) => (((c >>> 15) | (c << 17)) + 0xa282ead8) >>> 0;

/** The records of a TFRecord file; every length and CRC is checked. */
function readRecords(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let o = 0;
  while (o < buf.length) {
    assert.ok(o + 12 <= buf.length, `truncated header at ${o}`);
    const len = Number(buf.readBigUInt64LE(o));
    assert.equal(buf.readUInt32LE(o + 8), mask(crcBitwise(buf.subarray(o, o + 8))), `length CRC of the record at ${o}`);
    const data = buf.subarray(o + 12, o + 12 + len);
    assert.equal(data.length, len, `truncated record at ${o}`);
    assert.equal(buf.readUInt32LE(o + 12 + len), mask(crcBitwise(data)), `data CRC of the record at ${o}`);
    out.push(data);
    o += 12 + len + 4;
  }
  return out;
}

type Field = { wire: number; v: bigint | Buffer };
/** Protobuf fields by number (wire types 0, 1, 2, 5). */
function decode(b: Buffer): Map<number, Field[]> {
  const m = new Map<number, Field[]>();
  let o = 0;
  const varint = (): bigint => {
    let r = 0n;
    let s = 0n;
    for (;;) {
      const x = b[o++];
      assert.ok(x !== undefined, 'varint runs past the end');
      r |= BigInt(x & 0x7f) << s;
      s += 7n;
      if ((x & 0x80) === 0) return r;
    }
  };
  while (o < b.length) {
    const key = Number(varint());
    const field = key >> 3;
    const wire = key & 7;
    let v: bigint | Buffer;
    if (wire === 0) v = varint();
    else if (wire === 1) { v = b.subarray(o, o + 8); o += 8; }
    else if (wire === 5) { v = b.subarray(o, o + 4); o += 4; }
    else if (wire === 2) { const n = Number(varint()); v = b.subarray(o, o + n); o += n; }
    else throw new Error(`unexpected wire type ${wire}`);
    assert.ok(o <= b.length, 'field runs past the end');
    if (!m.has(field)) m.set(field, []);
    m.get(field)!.push({ wire, v });
  }
  return m;
}
const one = (m: Map<number, Field[]>, f: number, wire: number): Field => {
  const fs = m.get(f);
  assert.ok(fs && fs.length === 1, `field ${f} once`);
  assert.equal(fs[0].wire, wire, `field ${f} wire type`);
  return fs[0];
};
const dbl = (m: Map<number, Field[]>, f: number) => (one(m, f, 1).v as Buffer).readDoubleLE(0);
const flt = (m: Map<number, Field[]>, f: number) => (one(m, f, 5).v as Buffer).readFloatLE(0);
const int = (m: Map<number, Field[]>, f: number) => Number(one(m, f, 0).v as bigint);
const bytes = (m: Map<number, Field[]>, f: number) => one(m, f, 2).v as Buffer;
const str = (m: Map<number, Field[]>, f: number) => bytes(m, f).toString('utf8');
const doubles = (b: Buffer) => Array.from({ length: b.length / 8 }, (_, i) => b.readDoubleLE(8 * i));

interface Ev { wallTime: number; step: number; fileVersion?: string; values: { tag: string; simple?: number; histo?: Map<number, Field[]>; image?: Map<number, Field[]> }[]; sessionStatus?: number }
/** Decodes tensorflow.Event (wall_time 1, step 2, file_version 3, summary 5, session_log 6). */
function readEvents(file: string): Ev[] {
  return readRecords(readFileSync(file)).map((r) => {
    const e = decode(r);
    const ev: Ev = { wallTime: dbl(e, 1), step: e.has(2) ? int(e, 2) : 0, values: [] };
    if (e.has(3)) ev.fileVersion = str(e, 3);
    if (e.has(6)) ev.sessionStatus = int(decode(bytes(e, 6)), 1);
    if (e.has(5)) {
      for (const f of decode(bytes(e, 5)).get(1) ?? []) {
        const v = decode(f.v as Buffer);
        ev.values.push({
          tag: str(v, 1),
          simple: v.has(2) ? flt(v, 2) : undefined,
          image: v.has(4) ? decode(bytes(v, 4)) : undefined,
          histo: v.has(5) ? decode(bytes(v, 5)) : undefined,
        });
      }
    }
    return ev;
  });
}

const eventFiles = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('events.out.tfevents.')).map((f) => path.join(dir, f));

// ---- tests -------------------------------------------------------------------

test('CRC-32C: RFC 3720 test vectors, the bitwise reference and the TFRecord mask', () => {
  const vec = (b: Uint8Array, want: number) => {
    assert.equal(crc32c(b), want);
    assert.equal(crcBitwise(b), want);
  };
  vec(new TextEncoder().encode('123456789'), 0xe3069283);
  vec(new Uint8Array(32), 0x8a9136aa);
  vec(new Uint8Array(32).fill(0xff), 0x62a8ab43);
  vec(Uint8Array.from({ length: 32 }, (_, i) => i), 0x46dd794e);
  vec(Uint8Array.from({ length: 32 }, (_, i) => 31 - i), 0x113fdb5c);
  vec(new Uint8Array(0), 0);
  const rnd = Uint8Array.from({ length: 1000 }, (_, i) => (i * 2654435761) >>> 24);
  assert.equal(crc32c(rnd), crcBitwise(rnd));
  for (const c of [0, 1, 0xe3069283, 0xffffffff]) assert.equal(maskCrc(c), mask(c));
  // the mask is a rotation plus a constant: distinct inputs stay distinct
  assert.notEqual(maskCrc(1), maskCrc(2));
});

test('EventWriter: file_version first, then scalars, a histogram, an image and a session start, every record intact', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tb-'));
  try {
    let clock = 1700000000.25;
    const w = new EventWriter(dir, { now: () => clock });
    clock += 1;
    w.scalars(10, { 'train/loss': 0.125, 'train/lr': 1e-4, big: 3e38 });
    const h = timestepHistogram([0, 3, 1, 0], [0, 5, 10, 15, 20]);
    w.histogram(10, 'train/t', h);
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
    w.image(20, 'samples/grid', png, 7, 5, 3);
    w.sessionStart(20);
    w.close();
    assert.throws(() => w.scalars(1, { a: 1 }), /closed/);
    const files = eventFiles(dir);
    assert.equal(files.length, 1);
    assert.match(path.basename(files[0]), /^events\.out\.tfevents\.1700000000\.[^.]+(\.[^.]+)*\.\d+$/);
    const evs = readEvents(files[0]);
    assert.equal(evs.length, 5);
    assert.equal(evs[0].fileVersion, 'brain.Event:2');
    assert.equal(evs[0].wallTime, 1700000000.25);
    assert.equal(evs[1].step, 10);
    assert.equal(evs[1].wallTime, 1700000001.25);
    assert.deepEqual(evs[1].values.map((v) => v.tag), ['train/loss', 'train/lr', 'big']);
    assert.equal(evs[1].values[0].simple, 0.125);
    assert.equal(evs[1].values[1].simple, Math.fround(1e-4));
    assert.equal(evs[1].values[2].simple, Math.fround(3e38));
    // HistogramProto: min 1, max 2, num 3, sum 4, sum_squares 5, bucket_limit 6, bucket 7 (packed)
    const hp = evs[2].values[0].histo!;
    assert.equal(evs[2].values[0].tag, 'train/t');
    assert.equal(dbl(hp, 1), 5);
    assert.equal(dbl(hp, 2), 15);
    assert.equal(dbl(hp, 3), 4);
    // 3 samples with mean 7 (t in 5..9) and 1 with mean 12 (10..14)
    assert.equal(dbl(hp, 4), 3 * 7 + 12);
    assert.equal(dbl(hp, 5), 3 * ((25 + 36 + 49 + 64 + 81) / 5) + (100 + 121 + 144 + 169 + 196) / 5);
    assert.deepEqual(doubles(bytes(hp, 6)), [5, 10, 15, 20]);
    assert.deepEqual(doubles(bytes(hp, 7)), [0, 3, 1, 0]);
    // Summary.Image: height 1, width 2, colorspace 3, encoded_image_string 4
    const im = evs[3].values[0].image!;
    assert.equal(evs[3].step, 20);
    assert.deepEqual([int(im, 1), int(im, 2), int(im, 3)], [5, 7, 3]);
    assert.deepEqual(bytes(im, 4), png);
    assert.equal(evs[4].sessionStatus, 1);
    assert.equal(evs[4].step, 20);
    // a second writer in the same second gets its own file
    const w2 = new EventWriter(dir, { now: () => 1700000000.5 });
    w2.close();
    assert.equal(eventFiles(dir).length, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a flipped byte in an event file fails the reader\'s CRC check', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tb-'));
  try {
    const w = new EventWriter(dir);
    w.scalars(1, { x: 1 });
    w.close();
    const f = eventFiles(dir)[0];
    const b = readFileSync(f);
    assert.equal(readRecords(b).length, 2);
    b[b.length - 6] ^= 1; // inside the last record's data
    assert.throws(() => readRecords(b), /data CRC/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bucket tags sort by time step; an empty histogram is all zeros', () => {
  assert.equal(bucketTag(50, 100, 1000), 'loss_bucket/t0050-0100');
  assert.equal(bucketTag(0, 5, 100), 'loss_bucket/t000-005');
  const h = timestepHistogram([0, 0], [0, 1, 2]);
  assert.deepEqual([h.min, h.max, h.num, h.sum], [0, 0, 0, 0]);
  assert.throws(() => timestepHistogram([1], [0, 1, 2]), /3 edges for 1 buckets/);
});

// Python TensorBoard's own reader, when a Python with tensorboard is at hand
// (SPEED_TRAIN_TB_PYTHON, default python3); Debian has no tensorboard package.
const py = process.env.SPEED_TRAIN_TB_PYTHON ?? 'python3';
let hasTb = false;
try {
  execFileSync(py, ['-c', 'import tensorboard.backend.event_processing.event_accumulator'], { stdio: 'ignore' });
  hasTb = true;
} catch { /* no tensorboard */ }

test('python tensorboard\'s EventAccumulator reads our scalars, histogram and image', { skip: hasTb ? false : `no tensorboard importable by ${py}` }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tb-'));
  try {
    const w = new EventWriter(dir);
    for (let s = 1; s <= 3; s++) w.scalars(s * 10, { 'train/loss': 1 / s });
    w.histogram(30, 'train/t', timestepHistogram([2, 0, 5], [0, 4, 8, 12]));
    w.image(30, 'samples/grid', Buffer.from('89504e470d0a1a0a', 'hex'), 4, 3, 3);
    w.close();
    const script = [
      'import sys, json',
      'from tensorboard.backend.event_processing import event_accumulator as ea',
      'a = ea.EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "histograms": 0, "images": 0}); a.Reload()',
      'h = a.Histograms("train/t")[0].histogram_value',
      'im = a.Images("samples/grid")[0]',
      'print(json.dumps({"loss": [[e.step, e.value] for e in a.Scalars("train/loss")], "h": [h.min, h.max, h.num, list(h.bucket_limit), list(h.bucket)], "im": [im.step, im.width, im.height]}))',
    ].join('\n');
    const out = JSON.parse(execFileSync(py, ['-c', script, dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
    assert.deepEqual(out.loss, [[10, 1], [20, 0.5], [30, Math.fround(1 / 3)]]);
    assert.deepEqual(out.h, [0, 12, 7, [4, 8, 12], [2, 0, 5]]);
    assert.deepEqual(out.im, [30, 4, 3]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('training writes its metrics lines as events, resumed runs mark a session start, the sample grid lands as an image; tensorboard=false writes none', async () => {
  const { tinyConfig, tinyConfigFile, useAddon } = await import('./helpers-e2e.js');
  useAddon();
  const { train } = await import('../src/train/index.js');
  const { runSample } = await import('../src/generate/index.js');
  const { loadConfig } = await import('../src/config/index.js');
  const quiet = { log: () => {}, handleSignals: false, progressStream: { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream };
  const { file, exp } = tinyConfigFile();
  try {
    await train({ config: loadConfig(file, { overrides: ['max_training_steps=6', 'log_every=2', 'ckpt_every=4'] }).config, ...quiet });
    const metrics = readFileSync(path.join(exp, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss: number; lr: number; grad_norm: number; t_hist: number[]; loss_per_bucket: (number | null)[]; bucket_edges: number[] });
    const files = eventFiles(exp);
    assert.equal(files.length, 1);
    const evs = readEvents(files[0]);
    assert.equal(evs[0].fileVersion, 'brain.Event:2');
    const scalarEvents = evs.filter((e) => e.values.some((v) => v.tag === 'train/loss'));
    assert.deepEqual(scalarEvents.map((e) => e.step), [2, 4, 6]);
    scalarEvents.forEach((e, i) => {
      const m = metrics[i];
      const get = (tag: string) => e.values.find((v) => v.tag === tag)?.simple;
      assert.equal(get('train/loss'), Math.fround(m.loss));
      assert.equal(get('train/lr'), Math.fround(m.lr));
      assert.equal(get('train/grad_norm'), Math.fround(m.grad_norm));
      for (const t of ['train/mse', 'train/vb', 'train/images_per_sec', 'train/skipped']) assert.ok(get(t) !== undefined, t);
      // one scalar per bucket that had samples, none for empty buckets
      m.loss_per_bucket.forEach((v, b) => {
        const tag = `loss_bucket/t${String(m.bucket_edges[b]).padStart(3, '0')}-${String(m.bucket_edges[b + 1]).padStart(3, '0')}`;
        assert.equal(get(tag), v === null ? undefined : Math.fround(v), tag);
      });
    });
    const hists = evs.filter((e) => e.values.some((v) => v.tag === 'train/t'));
    assert.deepEqual(hists.map((e) => e.step), [2, 4, 6]);
    hists.forEach((e, i) => {
      const hp = e.values[0].histo!;
      assert.deepEqual(doubles(bytes(hp, 7)), metrics[i].t_hist);
      assert.equal(dbl(hp, 3), 16); // two steps of batch 8
    });

    // resume from step 4: a session start at 4 in a new file
    await train({ config: loadConfig(file, { overrides: ['max_training_steps=8', 'log_every=2'] }).config, resume: path.join(exp, 'checkpoints', '0000004'), ...quiet });
    const second = eventFiles(exp).filter((f) => f !== files[0]);
    assert.equal(second.length, 1);
    const ev2 = readEvents(second[0]);
    assert.equal(ev2[1].sessionStatus, 1);
    assert.equal(ev2[1].step, 4);
    assert.deepEqual(ev2.filter((e) => e.values.some((v) => v.tag === 'train/loss')).map((e) => e.step), [6, 8]);

    // the sample grid
    const before = new Set(eventFiles(exp));
    const s = await runSample(loadConfig(file, { phase: 'sample' }).config, { log: () => {}, progressStream: quiet.progressStream });
    const third = eventFiles(exp).filter((f) => !before.has(f));
    assert.equal(third.length, 1);
    const img = readEvents(third[0]).find((e) => e.values.some((v) => v.tag === 'samples/grid'))!;
    assert.equal(img.step, 8);
    const im = img.values[0].image!;
    const pngBytes = readFileSync(s.file);
    assert.deepEqual(bytes(im, 4), pngBytes);
    const { PNG } = await import('pngjs');
    const png = PNG.sync.read(pngBytes);
    assert.deepEqual([int(im, 1), int(im, 2), int(im, 3)], [png.height, png.width, 3]);

    // off
    const off = tinyConfig(['max_training_steps=2', 'tensorboard=false']);
    await train({ config: off.config, ...quiet });
    assert.equal(eventFiles(off.exp).length, 0);
    rmSync(path.dirname(off.exp), { recursive: true, force: true });
  } finally {
    rmSync(path.dirname(exp), { recursive: true, force: true });
  }
});
