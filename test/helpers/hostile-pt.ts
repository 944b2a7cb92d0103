// Hostile .pt inputs, built small in the tests (and fed to the fuzzer): pickles
// that cost far more than their size to interpret or describe, and zip archives
// around them. Each mirrors a reported attack at a size a test can afford.
import * as zlib from 'node:zlib';

import { crc32 } from '../../src/io/zip.js';

const op = {
  PROTO: 0x80, STOP: 0x2e, MARK: 0x28, EMPTY_DICT: 0x7d, EMPTY_LIST: 0x5d, EMPTY_TUPLE: 0x29, MEMOIZE: 0x94, POP: 0x30,
  LONG4: 0x8b, LIST: 0x6c, TUPLE1: 0x85, APPEND: 0x61, APPENDS: 0x65, SETITEM: 0x73, NONE: 0x4e, LONG_BINPUT: 0x72,
  LONG_BINGET: 0x6a, BINUNICODE: 0x58,
} as const;

const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v, 0); return b; };
const str = (s: string) => Buffer.concat([Buffer.from([op.BINUNICODE]), u32(Buffer.byteLength(s)), Buffer.from(s)]);
const PROTO2 = Buffer.from([op.PROTO, 2]);

/** `EMPTY_DICT, MEMOIZE, POP` n times: every dict stays alive in the memo. */
export function memoBomb(n: number): Buffer {
  return Buffer.concat([PROTO2, Buffer.alloc(3 * n, Buffer.from([op.EMPTY_DICT, op.MEMOIZE, op.POP])), Buffer.from([op.NONE, op.STOP])]);
}

/** One LONG4 integer of `n` bytes. */
export function longInt(n: number): Buffer {
  return Buffer.concat([PROTO2, Buffer.from([op.LONG4]), u32(n), Buffer.alloc(n, 0x5a), Buffer.from([op.STOP])]);
}

/** {key: None} where key is a `levels`-deep DAG: each level a list holding the level below twice (2^levels leaves). */
export function dagKeyDict(levels: number): Buffer {
  const parts: Buffer[] = [PROTO2, Buffer.from([op.EMPTY_DICT, op.EMPTY_LIST, op.LONG_BINPUT]), u32(0), Buffer.from([op.POP])];
  for (let i = 1; i <= levels; i++) {
    parts.push(Buffer.from([op.MARK, op.LONG_BINGET]), u32(i - 1), Buffer.from([op.LONG_BINGET]), u32(i - 1), Buffer.from([op.LIST, op.LONG_BINPUT]), u32(i), Buffer.from([op.POP]));
  }
  parts.push(Buffer.from([op.LONG_BINGET]), u32(levels), Buffer.from([op.NONE, op.SETITEM, op.STOP]));
  return Buffer.concat(parts);
}

/** {key: None} where key is a list nested `depth` deep. */
export function deepListKeyDict(depth: number): Buffer {
  return Buffer.concat([PROTO2, Buffer.from([op.EMPTY_DICT]), Buffer.alloc(depth, op.EMPTY_LIST), Buffer.alloc(depth - 1, op.APPEND), Buffer.from([op.NONE, op.SETITEM, op.STOP])]);
}

/** {t: 'x'} where the key t is a tuple nested `depth` deep. */
export function deepTupleKeyDict(depth: number): Buffer {
  return Buffer.concat([PROTO2, Buffer.from([op.EMPTY_DICT, op.EMPTY_TUPLE]), Buffer.alloc(depth, op.TUPLE1), str('x'), Buffer.from([op.SETITEM, op.STOP])]);
}

/** {'x': [None] * n} built by one APPENDS. */
export function bigAppendsDict(n: number): Buffer {
  return Buffer.concat([PROTO2, Buffer.from([op.EMPTY_DICT]), str('x'), Buffer.from([op.EMPTY_LIST, op.MARK]), Buffer.alloc(n, op.NONE), Buffer.from([op.APPENDS, op.SETITEM, op.STOP])]);
}

/**
 * {'w': tensor} of `used` F32 elements viewing storage '0' of `numel` elements,
 * as torch.save pickles it (protocol 2, _rebuild_tensor_v2).
 */
export function tensorPickle(numel: number, used: number): Buffer {
  const g = (m: string, n: string) => Buffer.from(`c${m}\n${n}\n`);
  const int = (v: number) => Buffer.concat([Buffer.from([0x4a]), u32(v)]); // BININT
  return Buffer.concat([
    PROTO2, Buffer.from([op.EMPTY_DICT]), str('w'), g('torch._utils', '_rebuild_tensor_v2'), Buffer.from([op.MARK, op.MARK]),
    str('storage'), g('torch', 'FloatStorage'), str('0'), str('cpu'), int(numel), Buffer.from([0x74, 0x51]), // TUPLE, BINPERSID
    int(0), int(used), Buffer.from([op.TUPLE1]), int(1), Buffer.from([op.TUPLE1, 0x89]), g('collections', 'OrderedDict'),
    Buffer.from([op.EMPTY_TUPLE, 0x52, 0x74, 0x52, op.SETITEM, op.STOP]), // REDUCE, TUPLE, REDUCE
  ]);
}

export interface ZipPiece {
  name: string;
  /** stored bytes */
  data?: Uint8Array;
  /** a raw deflate stream, the size it inflates to and the CRC-32 of that */
  deflated?: { stream: Uint8Array; size: number; crc: number };
}

/** A zip archive (no ZIP64) of stored and deflated entries. */
export function zipOf(pieces: readonly ZipPiece[]): Buffer {
  const out: Buffer[] = [];
  const cen: Buffer[] = [];
  let offset = 0;
  for (const p of pieces) {
    const name = Buffer.from(p.name);
    const body = p.deflated ? p.deflated.stream : p.data!;
    const size = p.deflated ? p.deflated.size : body.length;
    const crc = p.deflated ? p.deflated.crc : crc32([body]);
    const method = p.deflated ? 8 : 0;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0); local.writeUInt16LE(20, 4); local.writeUInt16LE(method, 8);
    local.writeUInt32LE(crc, 14); local.writeUInt32LE(body.length, 18); local.writeUInt32LE(size, 22); local.writeUInt16LE(name.length, 26);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0); c.writeUInt16LE(20, 4); c.writeUInt16LE(20, 6); c.writeUInt16LE(method, 10);
    c.writeUInt32LE(crc, 16); c.writeUInt32LE(body.length, 20); c.writeUInt32LE(size, 24); c.writeUInt16LE(name.length, 28); c.writeUInt32LE(offset, 42);
    out.push(local, name, Buffer.from(body));
    cen.push(c, name);
    offset += 30 + name.length + body.length;
  }
  const cd = Buffer.concat(cen);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0); end.writeUInt16LE(pieces.length, 8); end.writeUInt16LE(pieces.length, 10);
  end.writeUInt32LE(cd.length, 12); end.writeUInt32LE(offset, 16);
  return Buffer.concat([...out, cd, end]);
}

/**
 * A raw deflate stream of `mib` MiB of zeros (~1 KB per MiB), built without
 * compressing them all: one MiB deflated with a full flush (self-contained,
 * byte-aligned) repeated, then an empty final block. Also its CRC-32.
 */
export function zerosDeflated(mib: number): { stream: Buffer; size: number; crc: number } {
  const zeros = Buffer.alloc(1 << 20);
  const block = zlib.deflateRawSync(zeros, { finishFlush: zlib.constants.Z_FULL_FLUSH });
  let crc = 0;
  for (let i = 0; i < mib; i++) crc = zlib.crc32(zeros, crc);
  return { stream: Buffer.concat([...Array<Buffer>(mib).fill(block), Buffer.from([0x03, 0x00])]), size: mib << 20, crc: crc >>> 0 };
}

/** A .pt holding {'w': 16 floats} of a storage of `mib` MiB that is deflated. */
export function inflateBombPt(mib: number): Buffer {
  const z = zerosDeflated(mib);
  return zipOf([
    { name: 'archive/data.pkl', data: tensorPickle((mib << 20) / 4, 16) },
    { name: 'archive/data/0', deflated: z },
  ]);
}

/** A .pt whose data.pkl is `pickle` (stored). */
export function ptOfPickle(pickle: Uint8Array): Buffer {
  return zipOf([{ name: 'archive/data.pkl', data: pickle }]);
}

/** A .pt whose data.pkl is `pickle`, deflated. */
export function ptOfDeflatedPickle(pickle: Uint8Array): Buffer {
  return zipOf([{ name: 'archive/data.pkl', deflated: { stream: zlib.deflateRawSync(pickle, { level: 9 }), size: pickle.length, crc: crc32([pickle]) } }]);
}
