// NumPy .npy files (format versions 1.0, 2.0 and 3.0), little-endian, C order.
// Readers pull the payload with positioned reads instead of readFileSync, so
// arrays over 2 GiB (Node's readFileSync limit) load as long as they fit in a
// typed array, and the same code reads entries stored inside an .npz.

import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DataError } from '../errors.js';

export type NpyDtype = 'float32' | 'float64' | 'int32' | 'int64' | 'uint8' | 'bool';

/** Typed storage per dtype; `bool` is a Uint8Array of 0/1. */
export interface NpyDataMap {
  float32: Float32Array;
  float64: Float64Array;
  int32: Int32Array;
  int64: BigInt64Array;
  uint8: Uint8Array;
  bool: Uint8Array;
}
export type NpyData = NpyDataMap[NpyDtype];

/** An n-dimensional array: flat C-order data plus its shape. */
export interface NdArray<D extends NpyDtype = NpyDtype> {
  dtype: D;
  shape: number[];
  data: NpyDataMap[D];
}

/**
 * What writers accept. `data` may be the matching typed array or any array of
 * numbers (integers for int64 and bool, 0..255 for uint8); it is converted.
 */
export interface NdArrayInput {
  dtype: NpyDtype;
  shape: readonly number[];
  data: NpyData | ArrayLike<number> | ArrayLike<bigint>;
}

/** Header facts of an .npy file, for callers that read rows themselves. */
export interface NpyHeader {
  dtype: NpyDtype;
  shape: number[];
  /** format major version (1, 2 or 3) */
  version: number;
  /** byte offset of the payload from the start of the .npy data */
  dataOffset: number;
  /** payload size in bytes */
  dataBytes: number;
}

/** numpy refuses headers over 10000 bytes by default; we allow more but not megabytes. */
const MAX_NPY_HEADER = 1 << 20;
/** Largest payload read into one typed array (Node's Buffer limit). */
const MAX_NPY_LOAD = bufferConstants.MAX_LENGTH;

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY

const DESCR: Record<NpyDtype, string> = {
  float32: '<f4',
  float64: '<f8',
  int32: '<i4',
  int64: '<i8',
  uint8: '|u1',
  bool: '|b1',
};

// Every spelling numpy may write for the dtypes we support ('=' and '<' mean
// little-endian on the machines we run on; one-byte types have no order).
const DESCR_IN: Record<string, NpyDtype> = {
  '<f4': 'float32', '=f4': 'float32',
  '<f8': 'float64', '=f8': 'float64',
  '<i4': 'int32', '=i4': 'int32',
  '<i8': 'int64', '=i8': 'int64',
  '|u1': 'uint8', '<u1': 'uint8', '=u1': 'uint8', '>u1': 'uint8',
  '|b1': 'bool', '<b1': 'bool', '=b1': 'bool', '>b1': 'bool',
};

export const ITEMSIZE: Record<NpyDtype, number> = {
  float32: 4, float64: 8, int32: 4, int64: 8, uint8: 1, bool: 1,
};

export const NPY_DTYPES: readonly NpyDtype[] = ['float32', 'float64', 'int32', 'int64', 'uint8', 'bool'];

if (os.endianness() !== 'LE') {
  // Typed arrays use the host byte order; .npy payloads we write are '<'.
  throw new Error('speed-train .npy I/O requires a little-endian host');
}

/** Reads `length` bytes at `position` of some byte source (file, zip entry). */
export interface ByteSource {
  /** total size in bytes */
  size: number;
  /** Fills `target` from `position`; returns bytes actually read. */
  read(target: Uint8Array, position: number): number;
}

/** A ByteSource over a range of an open file descriptor. */
export function fileRangeSource(fd: number, start: number, size: number): ByteSource {
  return {
    size,
    read(target, position) {
      let done = 0;
      const want = Math.min(target.length, size - position);
      while (done < want) {
        // Node reads at most 2 GiB per call; loop in 1 GiB pieces.
        const chunk = Math.min(want - done, 1 << 30);
        const n = fs.readSync(fd, target, done, chunk, start + position + done);
        if (n === 0) break;
        done += n;
      }
      return done;
    },
  };
}

/** A ByteSource over a Buffer (an inflated zip entry, for example). */
export function bufferSource(buf: Uint8Array): ByteSource {
  return {
    size: buf.length,
    read(target, position) {
      const end = Math.min(buf.length, position + target.length);
      if (end <= position) return 0;
      target.set(buf.subarray(position, end));
      return end - position;
    },
  };
}

function product(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

/** Payload bytes of an array of this dtype and shape (what follows the .npy header). */
export function npyPayloadBytes(dtype: NpyDtype, shape: readonly number[]): number {
  return product(shape) * ITEMSIZE[dtype];
}

/** Parses the Python-literal header dict, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } */
function parseHeaderDict(text: string, label: string): { descr: string; fortran: boolean; shape: number[] } {
  const t = text.trim();
  if (!t.startsWith('{') || !t.endsWith('}')) {
    throw new DataError(label, `.npy header is not a dict literal: ${JSON.stringify(t.slice(0, 120))}`);
  }
  const descr = /['"]descr['"]\s*:\s*['"]([^'"]*)['"]/.exec(t);
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(t);
  const shape = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(t);
  if (!descr) {
    // Structured dtypes are written as a list: [('a', '<f4'), ...]
    if (/['"]descr['"]\s*:\s*\[/.test(t)) {
      throw new DataError(label, `structured (record) dtypes are not supported; expected one of ${NPY_DTYPES.join(', ')}`);
    }
    throw new DataError(label, `.npy header has no 'descr' string: ${JSON.stringify(t.slice(0, 120))}`);
  }
  if (!fortran) throw new DataError(label, `.npy header has no 'fortran_order' True/False: ${JSON.stringify(t.slice(0, 120))}`);
  if (!shape) throw new DataError(label, `.npy header has no 'shape' tuple: ${JSON.stringify(t.slice(0, 120))}`);
  const dims = shape[1]
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => {
      const v = Number(s.replace(/L$/, ''));
      if (!Number.isSafeInteger(v) || v < 0) {
        throw new DataError(label, `.npy shape entry ${JSON.stringify(s)} is not a non-negative integer`);
      }
      return v;
    });
  return { descr: descr[1], fortran: fortran[1] === 'True', shape: dims };
}

/** Reads and validates the header of .npy data held by `src`. `label` names the file in errors. */
export function readNpyHeaderFrom(src: ByteSource, label: string): NpyHeader {
  const pre = Buffer.alloc(12);
  const got = src.read(pre, 0);
  if (got < 10 || !pre.subarray(0, 6).equals(MAGIC)) {
    throw new DataError(label, `not an .npy file: bad magic (expected \\x93NUMPY, found ${JSON.stringify(pre.subarray(0, Math.min(got, 6)).toString('latin1'))})`);
  }
  const major = pre[6];
  let headerLen: number;
  let headerStart: number;
  if (major === 1) {
    headerLen = pre.readUInt16LE(8);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (got < 12) throw new DataError(label, `truncated .npy header (file has ${src.size} bytes)`);
    headerLen = pre.readUInt32LE(8);
    headerStart = 12;
  } else {
    throw new DataError(label, `unsupported .npy format version ${major}.${pre[7]} (expected 1.0, 2.0 or 3.0)`);
  }
  if (headerLen > MAX_NPY_HEADER) {
    throw new DataError(label, `.npy header length ${headerLen} exceeds ${MAX_NPY_HEADER} bytes (numpy writes a few hundred): not an .npy file or a damaged one`);
  }
  if (headerStart + headerLen > src.size) {
    throw new DataError(label, `truncated .npy header: needs ${headerStart + headerLen} bytes, file has ${src.size}`);
  }
  const hbuf = Buffer.alloc(headerLen);
  src.read(hbuf, headerStart);
  const text = hbuf.toString(major === 3 ? 'utf8' : 'latin1');
  const { descr, fortran, shape } = parseHeaderDict(text, label);
  const dtype = DESCR_IN[descr];
  if (!dtype) {
    const hint = descr.startsWith('>') ? ' (big-endian data is not supported)' : '';
    throw new DataError(label, `unsupported dtype '${descr}'${hint}; expected one of ${NPY_DTYPES.map((d) => `${d} ('${DESCR[d]}')`).join(', ')}`);
  }
  const n = product(shape);
  if (fortran && shape.filter((s) => s > 1).length > 1) {
    // A Fortran-ordered array with at most one non-trivial axis has C layout too.
    throw new DataError(label, `Fortran-ordered arrays are not supported (shape [${shape.join(', ')}]); save with numpy.ascontiguousarray`);
  }
  const dataOffset = headerStart + headerLen;
  const dataBytes = n * ITEMSIZE[dtype];
  // Checked against the bytes present before anything is allocated (a
  // product past 2^53 is inexact but still far larger than any file).
  if (!Number.isSafeInteger(dataBytes) || dataOffset + dataBytes > src.size) {
    throw new DataError(label, `truncated .npy data: ${dtype} [${shape.join(', ')}] needs ${dataBytes} bytes after the header, file has ${src.size - dataOffset}`);
  }
  return { dtype, shape, version: major, dataOffset, dataBytes };
}

function allocate(dtype: NpyDtype, n: number): NpyData {
  switch (dtype) {
    case 'float32': return new Float32Array(n);
    case 'float64': return new Float64Array(n);
    case 'int32': return new Int32Array(n);
    case 'int64': return new BigInt64Array(n);
    case 'uint8':
    case 'bool': return new Uint8Array(n);
  }
}

/** Reads a whole .npy array from a byte source. */
export function readNpyFrom(src: ByteSource, label: string): NdArray {
  const h = readNpyHeaderFrom(src, label);
  if (h.dataBytes > MAX_NPY_LOAD) {
    throw new DataError(label, `${h.dtype} [${h.shape.join(', ')}] is ${h.dataBytes} bytes, more than one typed array holds (${MAX_NPY_LOAD}); read it in rows (readNpyHeader + positioned reads)`);
  }
  const data = allocate(h.dtype, product(h.shape));
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const got = src.read(bytes, h.dataOffset);
  if (got !== h.dataBytes) {
    throw new DataError(label, `truncated .npy data: expected ${h.dataBytes} bytes, read ${got}`);
  }
  if (h.dtype === 'bool') {
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] > 1) throw new DataError(label, `bool array holds byte ${bytes[i]} at index ${i} (expected 0 or 1)`);
    }
  }
  return { dtype: h.dtype, shape: h.shape, data } as NdArray;
}

/** Runs fn on `file` opened for reading (its fd and size), closing it after; an open failure is a DataError naming the file. */
export function withFile<T>(file: string, fn: (fd: number, size: number) => T): T {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new DataError(file, `cannot open: ${(e as Error).message}`);
  }
  try {
    return fn(fd, fs.fstatSync(fd).size);
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads an .npy file: `{ dtype, shape, data }` with data in C order. */
export function readNpy(file: string): NdArray {
  return withFile(file, (fd, size) => readNpyFrom(fileRangeSource(fd, 0, size), file));
}

/** Reads only the header of an .npy file (dtype, shape, payload offset), e.g. to read rows lazily. */
export function readNpyHeader(file: string): NpyHeader {
  return withFile(file, (fd, size) => readNpyHeaderFrom(fileRangeSource(fd, 0, size), file));
}

/** Validates an input array and converts its data to the dtype's typed array (no copy when it already is one). */
export function toNdArray(arr: NdArrayInput, label: string): NdArray {
  const { dtype } = arr;
  if (!(NPY_DTYPES as readonly string[]).includes(dtype)) {
    throw new DataError(label, `unsupported dtype '${String(dtype)}'; expected one of ${NPY_DTYPES.join(', ')}`);
  }
  if (arr.shape == null || typeof arr.shape.length !== 'number') {
    throw new DataError(label, 'shape must be an array of non-negative integers');
  }
  const shape = Array.from(arr.shape);
  for (const s of shape) {
    if (!Number.isSafeInteger(s) || s < 0) {
      throw new DataError(label, `shape [${shape.join(', ')}] must hold non-negative integers`);
    }
  }
  const n = product(shape);
  const d = arr.data as ArrayLike<number | bigint>;
  if (d == null || typeof d.length !== 'number') throw new DataError(label, `data of ${dtype} array is missing`);
  if (d.length !== n) {
    throw new DataError(label, `data has ${d.length} elements but shape [${shape.join(', ')}] needs ${n}`);
  }
  const ok =
    (dtype === 'float32' && d instanceof Float32Array) ||
    (dtype === 'float64' && d instanceof Float64Array) ||
    (dtype === 'int32' && d instanceof Int32Array) ||
    (dtype === 'int64' && d instanceof BigInt64Array) ||
    ((dtype === 'uint8' || dtype === 'bool') && d instanceof Uint8Array && !(d instanceof Uint8ClampedArray));
  let data: NpyData;
  if (ok) {
    data = d as NpyData;
  } else {
    data = allocate(dtype, n);
    for (let i = 0; i < n; i++) {
      const v = d[i];
      if (dtype === 'int64') {
        if (typeof v === 'bigint') (data as BigInt64Array)[i] = v;
        else if (Number.isSafeInteger(v)) (data as BigInt64Array)[i] = BigInt(v);
        else throw new DataError(label, `int64 data[${i}] = ${String(v)} is not an integer`);
        continue;
      }
      const x = Number(v);
      if (dtype === 'uint8' && !(Number.isInteger(x) && x >= 0 && x <= 255)) {
        throw new DataError(label, `uint8 data[${i}] = ${String(v)} is not an integer in 0..255`);
      }
      if (dtype === 'int32' && !(Number.isInteger(x) && x >= -2147483648 && x <= 2147483647)) {
        throw new DataError(label, `int32 data[${i}] = ${String(v)} is not a 32-bit integer`);
      }
      if (dtype === 'bool') {
        (data as Uint8Array)[i] = x ? 1 : 0;
        continue;
      }
      (data as Float64Array)[i] = x;
    }
  }
  if (dtype === 'bool' && ok) {
    const u = data as Uint8Array;
    for (let i = 0; i < u.length; i++) {
      if (u[i] > 1) throw new DataError(label, `bool data[${i}] = ${u[i]} (expected 0 or 1)`);
    }
  }
  return { dtype, shape, data } as NdArray;
}

/** The .npy header bytes for an array (version 1.0 unless the header needs 2.0), padded to 64 bytes. */
export function npyHeaderBytes(dtype: NpyDtype, shape: readonly number[]): Buffer {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  const dict = `{'descr': '${DESCR[dtype]}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // numpy aligns the payload to 64 bytes; the header ends with '\n'.
  let pre = 10;
  let total = pre + dict.length + 1;
  let padded = Math.ceil(total / 64) * 64;
  let version = 1;
  if (padded - pre > 0xffff) {
    version = 2;
    pre = 12;
    total = pre + dict.length + 1;
    padded = Math.ceil(total / 64) * 64;
  }
  const hlen = padded - pre;
  const buf = Buffer.alloc(padded, 0x20);
  MAGIC.copy(buf, 0);
  buf[6] = version;
  buf[7] = 0;
  if (version === 1) buf.writeUInt16LE(hlen, 8);
  else buf.writeUInt32LE(hlen, 8);
  buf.write(dict, pre, 'latin1');
  buf[padded - 1] = 0x0a;
  return buf;
}

/** The byte pieces of an .npy file: header, then a view of the payload (no copy). */
export function encodeNpyParts(arr: NdArray): Uint8Array[] {
  const header = npyHeaderBytes(arr.dtype, arr.shape);
  const payload = new Uint8Array(arr.data.buffer, arr.data.byteOffset, arr.data.byteLength);
  return [header, payload];
}

/**
 * A file written in pieces and made visible only when complete: a temporary file in
 * the same folder, then fsync and rename (commit), or removed (abort). Nothing of a
 * failed or interrupted write is left under the final name.
 */
export class AtomicFileWriter {
  readonly file: string;
  readonly #tmp: string;
  #fd: number | null;
  #pos = 0;

  constructor(file: string) {
    this.file = file;
    const dir = path.dirname(path.resolve(file));
    this.#tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
    try {
      this.#fd = fs.openSync(this.#tmp, 'w');
    } catch (e) {
      throw new DataError(file, `cannot write: ${(e as Error).message}`);
    }
  }

  #guard<T>(fn: (fd: number) => T): T {
    if (this.#fd === null) throw new DataError(this.file, 'write after the file was committed or aborted');
    try {
      return fn(this.#fd);
    } catch (e) {
      this.abort();
      throw e instanceof DataError ? e : new DataError(this.file, `cannot write: ${(e as Error).message}`);
    }
  }

  write(p: Uint8Array): void {
    this.#guard((fd) => {
      let done = 0;
      while (done < p.length) done += fs.writeSync(fd, p, done, Math.min(p.length - done, 1 << 30), this.#pos + done);
      this.#pos += p.length;
    });
  }

  /** Overwrites bytes already written (a header field known only at the end). */
  writeAt(p: Uint8Array, position: number): void {
    if (position < 0 || position + p.length > this.#pos) throw new RangeError(`${this.file}: writeAt ${position}+${p.length} outside the ${this.#pos} bytes written`);
    this.#guard((fd) => {
      let done = 0;
      while (done < p.length) done += fs.writeSync(fd, p, done, p.length - done, position + done);
    });
  }

  commit(): void {
    this.#guard((fd) => {
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      this.#fd = null;
      fs.renameSync(this.#tmp, this.file);
    });
  }

  /** Removes the temporary file (idempotent; after commit it does nothing). */
  abort(): void {
    if (this.#fd === null) return;
    try { fs.closeSync(this.#fd); } catch { /* already closed */ }
    this.#fd = null;
    try { fs.unlinkSync(this.#tmp); } catch { /* never created or already renamed */ }
  }
}

/** Writes pieces (any iterable, so a generator streams them) to `file` atomically: a temporary file in the same folder, fsync, rename. */
export function writeFileAtomic(file: string, parts: Iterable<Uint8Array>): void {
  const w = new AtomicFileWriter(file);
  try {
    for (const p of parts) w.write(p);
    w.commit();
  } finally {
    w.abort();
  }
}

/**
 * An .npy file whose payload arrives in pieces (the shape is known up front): the
 * header, then `write` calls that must add up to the shape's bytes, then `commit`.
 */
export class NpyStreamWriter {
  readonly #w: AtomicFileWriter;
  readonly #bytes: number;
  #written = 0;

  constructor(file: string, dtype: NpyDtype, shape: readonly number[]) {
    this.#bytes = npyPayloadBytes(dtype, shape);
    this.#w = new AtomicFileWriter(file);
    this.#w.write(npyHeaderBytes(dtype, shape));
  }

  write(p: Uint8Array): void {
    if (this.#written + p.length > this.#bytes) {
      this.#w.abort();
      throw new DataError(this.#w.file, `${this.#written + p.length} payload bytes written, the shape holds ${this.#bytes}`);
    }
    this.#w.write(p);
    this.#written += p.length;
  }

  commit(): void {
    if (this.#written !== this.#bytes) {
      this.#w.abort();
      throw new DataError(this.#w.file, `${this.#written} payload bytes written, the shape holds ${this.#bytes}`);
    }
    this.#w.commit();
  }

  abort(): void {
    this.#w.abort();
  }
}

/** Writes an array as an .npy file (atomically). */
export function writeNpy(file: string, arr: NdArrayInput): void {
  writeFileAtomic(file, encodeNpyParts(toNdArray(arr, file)));
}
