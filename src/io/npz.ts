// NumPy .npz archives: a ZIP of `<key>.npy` entries. Written stored (numpy.savez
// layout, ZIP64 when an entry or the archive passes 4 GiB); read stored or
// deflated (numpy.savez_compressed), with every entry's CRC-32 checked.

import { DataError } from '../errors.js';
import {
  AtomicFileWriter,
  type NpyDtype,
  npyHeaderBytes,
  npyPayloadBytes,
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
import { type ZipEntryInfo, ZipStreamWriter, crc32, readDeflatedEntry, readZipDirectory, zipEntryDataOffset, zipStoredParts } from './zip.js';

export interface WriteNpzOptions {
  /** always write ZIP64 records (numpy reads both); default: only when needed */
  forceZip64?: boolean;
  /** modification time of the entries (default: now) */
  mtime?: Date;
}

/** The zip entry name of array `key` (`<key>.npy`), or an error for a key numpy could not have written. */
function entryName(file: string, key: string): string {
  if (key.length === 0 || key.includes('\0')) throw new DataError(file, `invalid .npz key ${JSON.stringify(key)}`);
  return `${key}.npy`;
}

/** Writes arrays as an .npz file (atomically); keys become `<key>.npy` entries. */
export function writeNpz(file: string, arrays: Record<string, NdArrayInput>, opts: WriteNpzOptions = {}): void {
  const keys = Object.keys(arrays);
  if (keys.length === 0) throw new DataError(file, 'writeNpz needs at least one array');
  const entries = keys.map((key) => {
    const name = entryName(file, key);
    return { name, parts: encodeNpyParts(toNdArray(arrays[key], `${file}[${key}]`)) };
  });
  writeFileAtomic(file, zipStoredParts(entries, { forceZip64: opts.forceZip64, mtime: opts.mtime }));
}

/**
 * An .npz file written array by array and, within an array, piece by piece, so
 * that no array needs to fit in memory (a typed array holds at most 4 GiB):
 * `begin(key, dtype, shape)`, `write(bytes)` until the shape's bytes are there,
 * `end()`; then `commit()` (atomic: nothing appears under the name before) or
 * `abort()`. The layout is writeNpz's (stored entries, ZIP64 where needed).
 */
export class NpzStreamWriter {
  readonly file: string;
  readonly #out: AtomicFileWriter;
  readonly #zip: ZipStreamWriter;

  constructor(file: string, opts: WriteNpzOptions = {}) {
    this.file = file;
    this.#out = new AtomicFileWriter(file);
    this.#zip = new ZipStreamWriter(this.#out, { forceZip64: opts.forceZip64, mtime: opts.mtime });
  }

  #run(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.abort();
      throw e instanceof DataError ? e : new DataError(this.file, (e as Error).message);
    }
  }

  begin(key: string, dtype: NpyDtype, shape: readonly number[]): void {
    this.#run(() => {
      const name = entryName(this.file, key);
      const header = npyHeaderBytes(dtype, shape);
      this.#zip.begin(name, header.length + npyPayloadBytes(dtype, shape));
      this.#zip.write(header);
    });
  }

  write(bytes: Uint8Array): void {
    this.#run(() => this.#zip.write(bytes));
  }

  end(): void {
    this.#run(() => this.#zip.end());
  }

  commit(): void {
    this.#run(() => {
      this.#zip.finish();
      this.#out.commit();
    });
  }

  abort(): void {
    this.#out.abort();
  }
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
