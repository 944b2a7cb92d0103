// safetensors (huggingface/safetensors): u64 little-endian header length, a
// JSON header {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__},
// then the raw little-endian tensor bytes. The reader trusts nothing: every
// inconsistency is a CheckpointError naming the file.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

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

/** Serialises tensors (in the given order) to the parts of one file. */
export function encodeSafetensors(tensors: Iterable<[string, SafeTensor]>, metadata: Record<string, string> = {}): Uint8Array[] {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel * ITEM[t.dtype] !== t.bytes.byteLength) {
      throw new RangeError(`safetensors: tensor ${name} has ${t.bytes.byteLength} bytes, shape [${t.shape}] ${t.dtype} needs ${numel * ITEM[t.dtype]}`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.byteLength] };
    offset += t.bytes.byteLength;
    parts.push(t.bytes);
  }
  let json = JSON.stringify(header);
  // Pad with spaces so the data starts 8-byte aligned (as the reference writer does).
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const head = Buffer.alloc(8 + Buffer.byteLength(json));
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)), 0);
  head.write(json, 8, 'utf8');
  return [head, ...parts];
}

const MAX_HEADER = 100 * 1024 * 1024;

/** Reads and checks a whole safetensors file. */
export function readSafetensors(file: string): SafetensorsFile {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw new CheckpointError(file, `cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const size = fstatSync(fd).size;
    if (size < 8) throw new CheckpointError(file, `truncated: ${size} bytes, a safetensors file has at least an 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = lenBuf.readBigUInt64LE(0);
    if (headerLen > BigInt(size - 8)) {
      throw new CheckpointError(file, `truncated or not safetensors: header length ${headerLen} exceeds the ${size - 8} bytes after it`);
    }
    if (headerLen > BigInt(MAX_HEADER)) throw new CheckpointError(file, `header length ${headerLen} is implausibly large`);
    const hlen = Number(headerLen);
    const hbuf = Buffer.alloc(hlen);
    readSync(fd, hbuf, 0, hlen, 8);
    let header: unknown;
    try {
      header = JSON.parse(hbuf.toString('utf8'));
    } catch (e) {
      throw new CheckpointError(file, `invalid JSON header (${(e as Error).message})`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) {
      throw new CheckpointError(file, 'the header is not a JSON object');
    }
    const dataStart = 8 + hlen;
    const dataLen = size - dataStart;
    const metadata: Record<string, string> = {};
    const entries: { name: string; dtype: SafeDtype; shape: number[]; begin: number; end: number }[] = [];
    for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (typeof v !== 'object' || v === null) throw new CheckpointError(file, '__metadata__ is not an object');
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
      if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) {
        throw new CheckpointError(file, `tensor ${name}: shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
      }
      const off = e.data_offsets;
      if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0) || off[0] > off[1]) {
        throw new CheckpointError(file, `tensor ${name}: data_offsets ${JSON.stringify(off)} is not [begin, end] with 0 <= begin <= end`);
      }
      const dtype = e.dtype as SafeDtype;
      const numel = (e.shape as number[]).reduce((a, b) => a * b, 1);
      if (off[1] > dataLen) {
        throw new CheckpointError(file, `tensor ${name}: data_offsets [${off}] run past the end of the data (${dataLen} bytes; file truncated?)`);
      }
      if (off[1] - off[0] !== numel * ITEM[dtype]) {
        throw new CheckpointError(file, `tensor ${name}: ${off[1] - off[0]} bytes for shape [${e.shape}] ${dtype}, expected ${numel * ITEM[dtype]}`);
      }
      entries.push({ name, dtype, shape: e.shape as number[], begin: off[0], end: off[1] });
    }
    // The tensors must tile the data region exactly: no overlap, no gap, no tail.
    const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
    let pos = 0;
    for (const e of sorted) {
      if (e.begin < pos) throw new CheckpointError(file, `tensor ${e.name}: data_offsets [${e.begin}, ${e.end}] overlap the previous tensor`);
      if (e.begin > pos) throw new CheckpointError(file, `tensor ${e.name}: gap of ${e.begin - pos} bytes before its data`);
      pos = e.end;
    }
    if (pos !== dataLen) throw new CheckpointError(file, `the tensors cover ${pos} of ${dataLen} data bytes (trailing bytes or a tampered header)`);
    const data = Buffer.alloc(dataLen);
    if (dataLen > 0 && readSync(fd, data, 0, dataLen, dataStart) !== dataLen) throw new CheckpointError(file, 'short read');
    const tensors = new Map<string, SafeTensor>();
    for (const e of entries) tensors.set(e.name, { dtype: e.dtype, shape: e.shape, bytes: data.subarray(e.begin, e.end) });
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}
