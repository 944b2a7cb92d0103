// safetensors (huggingface/safetensors): u64 little-endian header length, a
// JSON header {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__},
// then the raw little-endian tensor bytes. The reader trusts nothing: every
// inconsistency is a CheckpointError naming the file.
//
// Files are streamed per tensor in both directions: the reader parses the
// header and then reads one tensor at a time with positioned reads, the writer
// asks for each tensor's bytes only when it writes them. No Buffer ever holds a
// whole file, so checkpoints of any size work (a DiT-XL/2 optimizer file is
// 5 GiB; a Node Buffer holds at most 4 GiB).
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { constants as bufferConstants } from 'node:buffer';
import * as zlib from 'node:zlib';

import { CheckpointError } from '../errors.js';

export type SafeDtype = 'F32' | 'F64' | 'F16' | 'BF16' | 'I32' | 'I64' | 'U8';
const ITEM: Record<SafeDtype, number> = { F32: 4, F64: 8, F16: 2, BF16: 2, I32: 4, I64: 8, U8: 1 };

export interface SafeTensor {
  dtype: SafeDtype;
  shape: number[];
  /** raw little-endian bytes */
  bytes: Uint8Array;
}

export interface SafetensorsFile {
  tensors: Map<string, SafeTensor>;
  metadata: Record<string, string>;
}

/** A tensor as the header describes it; `offset` is absolute (from the start of the file). */
export interface TensorEntry {
  name: string;
  dtype: SafeDtype;
  shape: number[];
  offset: number;
  byteLength: number;
}

/** A tensor to write whose bytes are produced only when the writer reaches it. */
export interface LazyTensor {
  name: string;
  dtype: SafeDtype;
  shape: number[];
  bytes: () => Uint8Array;
}

export const f32Tensor = (data: Float32Array, shape: number[]): SafeTensor => ({
  dtype: 'F32',
  shape,
  bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
});

/** IEEE half -> float (exact: every half is a float). */
function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24; // zero and subnormals
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/**
 * The tensor's values as float32 (copied, so the result is aligned and owned).
 * F16 and BF16 widen exactly; F64 rounds to nearest. Integer dtypes are refused.
 */
export function asFloat32(t: SafeTensor, file: string, name: string): Float32Array {
  const n = t.bytes.byteLength / ITEM[t.dtype];
  const dv = new DataView(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
  switch (t.dtype) {
    case 'F32': {
      const out = new Float32Array(n);
      new Uint8Array(out.buffer).set(t.bytes);
      return out;
    }
    case 'BF16': {
      // bf16 is the top half of a float32: shift it into place.
      const out = new Float32Array(n);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = dv.getUint16(2 * i, true) << 16;
      return out;
    }
    case 'F16': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(2 * i, true));
      return out;
    }
    case 'F64': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true);
      return out;
    }
    default:
      throw new CheckpointError(file, `tensor ${name}: expected a floating-point dtype (F32, F16, BF16, F64), found ${t.dtype}`);
  }
}

const numelOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** The header bytes (length prefix + JSON, padded so the data starts 8-byte aligned) for tensors in this order. */
export function safetensorsHeader(specs: Iterable<{ name: string; dtype: SafeDtype; shape: number[] }>, metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of specs) {
    if (t.name === '__metadata__' || Object.hasOwn(header, t.name)) throw new RangeError(`safetensors: duplicate or reserved tensor name ${JSON.stringify(t.name)}`);
    const bytes = numelOf(t.shape) * ITEM[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so the data starts 8-byte aligned (as the reference writer does).
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const head = Buffer.alloc(8 + Buffer.byteLength(json));
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)), 0);
  head.write(json, 8, 'utf8');
  return head;
}

function checkedBytes(t: { name: string; dtype: SafeDtype; shape: number[] }, bytes: Uint8Array): Uint8Array {
  const want = numelOf(t.shape) * ITEM[t.dtype];
  if (bytes.byteLength !== want) {
    throw new RangeError(`safetensors: tensor ${t.name} has ${bytes.byteLength} bytes, shape [${t.shape}] ${t.dtype} needs ${want}`);
  }
  return bytes;
}

/**
 * The pieces of one file in order: the header, then each tensor's bytes,
 * produced one at a time (a lazy tensor's bytes are asked for only here).
 */
export function* safetensorsParts(tensors: readonly LazyTensor[], metadata: Record<string, string> = {}): Generator<Uint8Array> {
  yield safetensorsHeader(tensors, metadata);
  for (const t of tensors) yield checkedBytes(t, t.bytes());
}

/** Serialises in-memory tensors (in the given order) to the parts of one file (small files, tests). */
export function encodeSafetensors(tensors: Iterable<[string, SafeTensor]>, metadata: Record<string, string> = {}): Uint8Array[] {
  const list = [...tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, bytes: () => t.bytes }));
  return [...safetensorsParts(list, metadata)];
}

/** What a writer records about a file so a reader can verify it (see src/checkpoint). */
export interface FileDigest {
  /** file size in bytes */
  bytes: number;
  /** CRC-32 of the header (length prefix + JSON), 8 hex digits */
  header_crc32: string;
  /** CRC-32 of each tensor's bytes, 8 hex digits */
  tensor_crc32: Record<string, string>;
}

export const hex32 = (c: number): string => (c >>> 0).toString(16).padStart(8, '0');

function writeAll(fd: number, p: Uint8Array): void {
  for (let done = 0; done < p.byteLength; ) done += writeSync(fd, p, done, Math.min(p.byteLength - done, 1 << 30));
}

/**
 * Writes a safetensors file to the open descriptor `fd`, tensor by tensor,
 * and returns its digest (CRC-32 per tensor computed on the bytes written).
 * I/O errors propagate as they are (the caller knows which file and why).
 */
export function writeSafetensorsTo(fd: number, tensors: readonly LazyTensor[], metadata: Record<string, string> = {}): FileDigest {
  const head = safetensorsHeader(tensors, metadata);
  writeAll(fd, head);
  let bytes = head.byteLength;
  const tensorCrc: Record<string, string> = {};
  for (const t of tensors) {
    const b = checkedBytes(t, t.bytes());
    writeAll(fd, b);
    tensorCrc[t.name] = hex32(zlib.crc32(b));
    bytes += b.byteLength;
  }
  return { bytes, header_crc32: hex32(zlib.crc32(head)), tensor_crc32: tensorCrc };
}

const MAX_HEADER = 100 * 1024 * 1024;
/** Largest tensor read into one buffer (Node's Buffer limit). */
const MAX_TENSOR = bufferConstants.MAX_LENGTH;
/** Pieces in which a tensor is read for checksumming without holding it. */
const CHUNK = 16 << 20;

function readFully(fd: number, target: Uint8Array, position: number): number {
  let done = 0;
  while (done < target.byteLength) {
    const n = readSync(fd, target, done, Math.min(target.byteLength - done, 1 << 30), position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/**
 * An open safetensors file whose header has been read and checked; tensors
 * are read one at a time. Close it when done (or use `withSafetensors`).
 */
export class SafetensorsReader {
  readonly metadata: Record<string, string>;
  /** tensors in header order */
  readonly entries: TensorEntry[];
  /** the raw header region (length prefix + JSON), for checksums */
  readonly headerBytes: Buffer;
  readonly size: number;
  private readonly byName = new Map<string, TensorEntry>();
  private fd: number | null;

  private constructor(readonly file: string, fd: number) {
    this.fd = fd;
    try {
      const parsed = parseHeader(fd, file);
      this.metadata = parsed.metadata;
      this.entries = parsed.entries;
      this.headerBytes = parsed.headerBytes;
      this.size = parsed.size;
      for (const e of this.entries) this.byName.set(e.name, e);
    } catch (e) {
      closeSync(fd);
      this.fd = null;
      throw e;
    }
  }

  static open(file: string): SafetensorsReader {
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch (e) {
      throw new CheckpointError(file, `cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    return new SafetensorsReader(file, fd);
  }

  get(name: string): TensorEntry | undefined {
    return this.byName.get(name);
  }

  private entry(name: string): TensorEntry {
    const e = this.byName.get(name);
    if (!e) throw new CheckpointError(this.file, `no tensor ${name}`);
    return e;
  }

  private handle(): number {
    if (this.fd === null) throw new CheckpointError(this.file, 'read after close');
    return this.fd;
  }

  /** One tensor's raw bytes (an owned buffer). */
  readBytes(name: string): Uint8Array {
    const e = this.entry(name);
    if (e.byteLength > MAX_TENSOR) {
      throw new CheckpointError(this.file, `tensor ${name}: ${e.byteLength} bytes exceed the ${MAX_TENSOR} bytes one buffer can hold`);
    }
    const buf = new Uint8Array(e.byteLength);
    if (readFully(this.handle(), buf, e.offset) !== e.byteLength) throw new CheckpointError(this.file, `tensor ${name}: short read (file truncated while open?)`);
    return buf;
  }

  read(name: string): SafeTensor {
    const e = this.entry(name);
    return { dtype: e.dtype, shape: e.shape, bytes: this.readBytes(name) };
  }

  /** CRC-32 of one tensor's bytes, read in bounded pieces (any size). */
  crc32(name: string): number {
    const e = this.entry(name);
    const fd = this.handle();
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(1, e.byteLength)));
    let c = 0;
    for (let at = 0; at < e.byteLength; ) {
      const piece = buf.subarray(0, Math.min(buf.length, e.byteLength - at));
      if (readFully(fd, piece, e.offset + at) !== piece.length) throw new CheckpointError(this.file, `tensor ${name}: short read (file truncated while open?)`);
      c = zlib.crc32(piece, c);
      at += piece.length;
    }
    return c >>> 0;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** Opens `file`, runs fn with the reader, closes it. */
export function withSafetensors<T>(file: string, fn: (r: SafetensorsReader) => T): T {
  const r = SafetensorsReader.open(file);
  try {
    return fn(r);
  } finally {
    r.close();
  }
}

function parseHeader(fd: number, file: string): { metadata: Record<string, string>; entries: TensorEntry[]; headerBytes: Buffer; size: number } {
  const size = fstatSync(fd).size;
  if (size < 8) throw new CheckpointError(file, `truncated: ${size} bytes, a safetensors file has at least an 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  readFully(fd, lenBuf, 0);
  const headerLen = lenBuf.readBigUInt64LE(0);
  if (headerLen > BigInt(size - 8)) {
    throw new CheckpointError(file, `truncated or not safetensors: header length ${headerLen} exceeds the ${size - 8} bytes after it`);
  }
  if (headerLen > BigInt(MAX_HEADER)) throw new CheckpointError(file, `header length ${headerLen} is implausibly large`);
  const hlen = Number(headerLen);
  const headerBytes = Buffer.alloc(8 + hlen);
  if (readFully(fd, headerBytes, 0) !== 8 + hlen) throw new CheckpointError(file, 'short read of the header');
  let header: unknown;
  try {
    header = JSON.parse(headerBytes.toString('utf8', 8));
  } catch (e) {
    throw new CheckpointError(file, `invalid JSON header (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new CheckpointError(file, 'the header is not a JSON object');
  }
  const dataStart = 8 + hlen;
  const dataLen = size - dataStart;
  const metadata: Record<string, string> = {};
  const entries: TensorEntry[] = [];
  const rel: { e: TensorEntry; begin: number; end: number }[] = [];
  for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new CheckpointError(file, '__metadata__ is not an object');
      for (const [k, s] of Object.entries(v)) {
        if (typeof s !== 'string') throw new CheckpointError(file, `__metadata__.${k} is not a string`);
        metadata[k] = s;
      }
      continue;
    }
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== 'object' || e === null) throw new CheckpointError(file, `tensor ${name}: entry is not an object`);
    if (typeof e.dtype !== 'string' || !Object.hasOwn(ITEM, e.dtype)) {
      throw new CheckpointError(file, `tensor ${name}: unsupported dtype ${JSON.stringify(e.dtype)} (expected one of ${Object.keys(ITEM).join(', ')})`);
    }
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new CheckpointError(file, `tensor ${name}: shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
    }
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0) || off[0] > off[1]) {
      throw new CheckpointError(file, `tensor ${name}: data_offsets ${JSON.stringify(off)} is not [begin, end] with 0 <= begin <= end`);
    }
    const dtype = e.dtype as SafeDtype;
    const numel = numelOf(e.shape as number[]);
    if (off[1] > dataLen) {
      throw new CheckpointError(file, `tensor ${name}: data_offsets [${off}] run past the end of the data (${dataLen} bytes; file truncated?)`);
    }
    // A huge shape whose product is not exact cannot match a length that fits in the file.
    if (!Number.isSafeInteger(numel * ITEM[dtype]) || off[1] - off[0] !== numel * ITEM[dtype]) {
      throw new CheckpointError(file, `tensor ${name}: ${off[1] - off[0]} bytes for shape [${e.shape}] ${dtype}, expected ${numel * ITEM[dtype]}`);
    }
    const entry: TensorEntry = { name, dtype, shape: e.shape as number[], offset: dataStart + off[0], byteLength: off[1] - off[0] };
    entries.push(entry);
    rel.push({ e: entry, begin: off[0], end: off[1] });
  }
  // The tensors must tile the data region exactly: no overlap, no gap, no tail.
  rel.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const r of rel) {
    if (r.begin < pos) throw new CheckpointError(file, `tensor ${r.e.name}: data_offsets [${r.begin}, ${r.end}] overlap the previous tensor`);
    if (r.begin > pos) throw new CheckpointError(file, `tensor ${r.e.name}: gap of ${r.begin - pos} bytes before its data`);
    pos = r.end;
  }
  if (pos !== dataLen) throw new CheckpointError(file, `the tensors cover ${pos} of ${dataLen} data bytes (trailing bytes or a tampered header)`);
  return { metadata, entries, headerBytes, size };
}

/** Just the header of a file: metadata and tensor entries (no tensor data read). */
export function readSafetensorsHeader(file: string): { metadata: Record<string, string>; entries: TensorEntry[] } {
  return withSafetensors(file, (r) => ({ metadata: r.metadata, entries: r.entries }));
}

/**
 * Reads and checks a whole file, each tensor into its own buffer: for small
 * files (tests, tools). Large files go through SafetensorsReader.
 */
export function readSafetensors(file: string): SafetensorsFile {
  return withSafetensors(file, (r) => {
    const tensors = new Map<string, SafeTensor>();
    for (const e of r.entries) tensors.set(e.name, r.read(e.name));
    return { tensors, metadata: r.metadata };
  });
}
