// NumPy .npz archives: a ZIP of `<key>.npy` entries. Written stored (numpy.savez
// layout, ZIP64 when an entry or the archive passes 4 GiB); read stored or
// deflated (numpy.savez_compressed), with every entry's CRC-32 checked.

import { DataError } from '../errors.js';
import {
  type NdArray,
  type NdArrayInput,
  bufferSource,
  encodeNpyParts,
  fileRangeSource,
  readNpyFrom,
  readNpyHeaderFrom,
  toNdArray,
  withFile,
  writeFileAtomic,
} from './npy.js';
import { type ZipEntryInfo, crc32, readDeflatedEntry, readZipDirectory, zipEntryDataOffset, zipStoredParts } from './zip.js';

export interface WriteNpzOptions {
  /** always write ZIP64 records (numpy reads both); default: only when needed */
  forceZip64?: boolean;
}

/** Writes arrays as an .npz file (atomically); keys become `<key>.npy` entries. */
export function writeNpz(file: string, arrays: Record<string, NdArrayInput>, opts: WriteNpzOptions = {}): void {
  const keys = Object.keys(arrays);
  if (keys.length === 0) throw new DataError(file, 'writeNpz needs at least one array');
  const entries = keys.map((key) => {
    if (key.length === 0 || key.includes('\0')) throw new DataError(file, `invalid .npz key ${JSON.stringify(key)}`);
    const arr = toNdArray(arrays[key], `${file}[${key}]`);
    return { name: `${key}.npy`, parts: encodeNpyParts(arr) };
  });
  writeFileAtomic(file, zipStoredParts(entries, { forceZip64: opts.forceZip64 }));
}

export interface ReadNpzOptions {
  /** load only these keys (others are skipped without reading their data); a missing key is an error */
  keys?: readonly string[];
}

function keyOf(e: ZipEntryInfo): string {
  return e.name.endsWith('.npy') ? e.name.slice(0, -4) : e.name;
}

function readEntry(fd: number, e: ZipEntryInfo, file: string): NdArray {
  const label = `${file}[${keyOf(e)}]`;
  if (e.method === 8) return readNpyFrom(bufferSource(readDeflatedEntry(fd, e, file)), label);
  if (e.method !== 0) {
    throw new DataError(file, `zip entry '${e.name}' uses compression method ${e.method}; expected stored (0) or deflate (8)`);
  }
  const start = zipEntryDataOffset(fd, e, file);
  const src = fileRangeSource(fd, start, e.size);
  const h = readNpyHeaderFrom(src, label);
  const arr = readNpyFrom(src, label);
  // Check the CRC over what was read: header bytes, the payload now in memory, and any trailing bytes.
  const head = Buffer.alloc(h.dataOffset);
  src.read(head, 0);
  const parts: Uint8Array[] = [head, new Uint8Array(arr.data.buffer, arr.data.byteOffset, arr.data.byteLength)];
  const trailing = e.size - h.dataOffset - h.dataBytes;
  if (trailing > 0) {
    const trail = Buffer.alloc(trailing);
    src.read(trail, h.dataOffset + h.dataBytes);
    parts.push(trail);
  }
  if (crc32(parts) !== e.crc) throw new DataError(file, `CRC-32 mismatch in zip entry '${e.name}': the file is corrupt`);
  return arr;
}

/** Any stray RangeError from Buffer reads on a malformed archive becomes a DataError naming the file. */
function typed<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof RangeError) throw new DataError(file, `corrupt zip archive (${e.message})`);
    throw e;
  }
}

/** Reads an .npz file into `{ key: { dtype, shape, data } }` (keys without the `.npy` suffix). */
export function readNpz(file: string, opts: ReadNpzOptions = {}): Record<string, NdArray> {
  return typed(file, () => readNpzUnchecked(file, opts));
}

function readNpzUnchecked(file: string, opts: ReadNpzOptions): Record<string, NdArray> {
  return withFile(file, (fd) => {
    const entries = readZipDirectory(fd, file);
    const wanted = opts.keys ? new Set(opts.keys) : null;
    const out: Record<string, NdArray> = {};
    for (const e of entries) {
      if (e.name.endsWith('/')) continue; // folder entry
      const key = keyOf(e);
      if (wanted && !wanted.has(key)) continue;
      out[key] = readEntry(fd, e, file);
    }
    if (wanted) {
      const missing = [...wanted].filter((k) => !(k in out));
      if (missing.length) {
        throw new DataError(file, `missing array(s) ${missing.join(', ')}; the archive holds ${entries.map(keyOf).join(', ') || 'nothing'}`);
      }
    }
    return out;
  });
}

/** Lists the keys of an .npz file without reading any array. */
export function listNpz(file: string): string[] {
  return typed(file, () => withFile(file, (fd) => readZipDirectory(fd, file).filter((e) => !e.name.endsWith('/')).map(keyOf)));
}
