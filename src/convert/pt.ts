// PyTorch .pt files (torch.save since 1.6): a zip archive `<name>/data.pkl`
// (the pickle, read by the restricted unpickler) plus one entry
// `<name>/data/<key>` per storage, raw little-endian elements. Tensors are
// views of storages (offset, size, stride), so a transposed or sliced tensor
// is gathered into contiguous row-major bytes here.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

import { CheckpointError, DataError } from '../errors.js';
import * as zlib from 'node:zlib';

import { crc32, readZipDirectory, zipEntryDataOffset, type ZipEntryInfo } from '../io/zip.js';
import { unpickle, type PtDtype, type PtTensor, type PyValue } from './unpickle.js';

export const ITEM_BYTES: Record<PtDtype, number> = { F32: 4, F64: 8, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
/** data.pkl of a state dict is KiBs to a few MiB; more is not a state dict. */
const MAX_PICKLE_BYTES = 256 * 1024 * 1024;

export interface PtFile {
  /** the unpickled object */
  root: PyValue;
  /** contiguous row-major bytes of a tensor of this file */
  tensorBytes(t: PtTensor): Uint8Array;
  close(): void;
}

const rethrow = (file: string, e: unknown): never => {
  if (e instanceof DataError) throw new CheckpointError(file, e.message.startsWith(file) ? e.message.slice(file.length + 2) : e.message);
  // A damaged central directory can send the zip reader's Buffer reads out of range.
  if (e instanceof RangeError) throw new CheckpointError(file, `corrupt zip archive (${e.message})`);
  throw e;
};

/** Opens a .pt file: reads its pickle (restricted) and gives access to its storages. */
export function openPt(file: string): PtFile {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw new CheckpointError(file, `cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const head = Buffer.alloc(4);
    readSync(fd, head, 0, 4, 0);
    if (head.readUInt32LE(0) !== 0x04034b50) {
      const legacy = head[0] === 0x80 ? ' (a pickle without a zip: the legacy format of torch < 1.6; re-save it with torch.save in torch >= 1.6)' : '';
      throw new CheckpointError(file, `not a PyTorch zip checkpoint${legacy}`);
    }
    let entries: ZipEntryInfo[];
    try {
      entries = readZipDirectory(fd, file);
    } catch (e) {
      return rethrow(file, e);
    }
    const pkl = entries.filter((e) => /(^|\/)data\.pkl$/.test(e.name));
    if (pkl.length !== 1) throw new CheckpointError(file, `expected one <archive>/data.pkl entry, found ${pkl.length}`);
    const prefix = pkl[0].name.slice(0, -'data.pkl'.length);
    const byName = new Map(entries.map((e) => [e.name, e]));
    const readEntry = (e: ZipEntryInfo, limit: number): Uint8Array => {
      if (e.size > limit) throw new CheckpointError(file, `zip entry ${e.name} is ${e.size} bytes, more than the ${limit} allowed`);
      try {
        if (e.method === 8) return inflateEntry(fd, e, file, limit);
        if (e.method !== 0) throw new CheckpointError(file, `zip entry ${e.name}: compression method ${e.method} is not supported`);
        if (e.compressedSize !== e.size) throw new CheckpointError(file, `zip entry ${e.name}: stored sizes disagree`);
        if (e.size > fstatSync(fd).size) throw new CheckpointError(file, `zip entry ${e.name} claims ${e.size} bytes, more than the file holds`);
        const start = zipEntryDataOffset(fd, e, file);
        const buf = Buffer.alloc(e.size);
        for (let done = 0; done < e.size; ) {
          const n = readSync(fd, buf, done, e.size - done, start + done);
          if (n === 0) throw new CheckpointError(file, `zip entry ${e.name} is truncated`);
          done += n;
        }
        return buf;
      } catch (err) {
        return rethrow(file, err);
      }
    };
    const root = unpickle(readEntry(pkl[0], MAX_PICKLE_BYTES), file);
    const cache = new Map<string, Uint8Array>();
    const storage = (key: string, bytes: number): Uint8Array => {
      let b = cache.get(key);
      if (!b) {
        const e = byName.get(`${prefix}data/${key}`);
        if (!e) throw new CheckpointError(file, `storage ${key}: zip entry ${prefix}data/${key} is missing`);
        b = readEntry(e, Number.MAX_SAFE_INTEGER);
        if (b.byteLength < bytes) throw new CheckpointError(file, `storage ${key}: ${b.byteLength} bytes, the pickle says ${bytes}`);
        cache.clear(); // one storage at a time: a checkpoint's tensors are converted one by one
        cache.set(key, b);
      }
      return b;
    };
    return {
      root,
      tensorBytes: (t) => gather(t, storage(t.storage.key, t.storage.numel * ITEM_BYTES[t.storage.dtype]), file),
      close: () => closeSync(fd),
    };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** Inflates a deflated entry (torch writes stored ones; other zip tools may not), never past its declared size. */
function inflateEntry(fd: number, e: ZipEntryInfo, file: string, limit: number): Uint8Array {
  const start = zipEntryDataOffset(fd, e, file);
  const comp = Buffer.alloc(e.compressedSize);
  if (e.compressedSize > 0 && readSync(fd, comp, 0, e.compressedSize, start) !== e.compressedSize) throw new CheckpointError(file, `zip entry ${e.name} is truncated`);
  let raw: Buffer;
  try {
    raw = zlib.inflateRawSync(comp, { maxOutputLength: Math.max(1, Math.min(limit, e.size)) });
  } catch (err) {
    throw new CheckpointError(file, `zip entry ${e.name} does not inflate to its declared ${e.size} bytes (${(err as Error).message})`);
  }
  if (raw.length !== e.size) throw new CheckpointError(file, `zip entry ${e.name} inflates to ${raw.length} bytes, the directory says ${e.size}`);
  if (crc32([raw]) !== e.crc) throw new CheckpointError(file, `CRC-32 mismatch in zip entry ${e.name}: the file is corrupt`);
  return raw;
}

/** A view may repeat its storage (stride 0) but not blow it up without bound. */
const MAX_EXPANSION = 16;

/** Copies a strided view of `storage` into contiguous row-major bytes. */
export function gather(t: PtTensor, storage: Uint8Array, file: string): Uint8Array {
  const item = ITEM_BYTES[t.storage.dtype];
  const numel = t.size.reduce((a, b) => a * b, 1);
  if (numel === 0) return new Uint8Array(0);
  let last = t.offset;
  for (let d = 0; d < t.size.length; d++) last += (t.size[d] - 1) * t.stride[d];
  if (!Number.isSafeInteger(numel) || numel * item > MAX_EXPANSION * Math.max(storage.byteLength, 1 << 20)) {
    throw new CheckpointError(file, `tensor view of size [${t.size}] is more than ${MAX_EXPANSION}x its storage of ${t.storage.numel} elements`);
  }
  if (!Number.isSafeInteger(last) || last >= t.storage.numel || (last + 1) * item > storage.byteLength) {
    throw new CheckpointError(file, `tensor view (offset ${t.offset}, size [${t.size}], stride [${t.stride}]) runs past its storage of ${t.storage.numel} elements`);
  }
  // Contiguous (row-major strides): one slice.
  let expect = 1;
  let contiguous = true;
  for (let d = t.size.length - 1; d >= 0; d--) {
    if (t.size[d] !== 1 && t.stride[d] !== expect) contiguous = false;
    expect *= t.size[d];
  }
  if (contiguous) return storage.slice(t.offset * item, (t.offset + numel) * item);
  const out = new Uint8Array(numel * item);
  const nd = t.size.length;
  const idx = new Array<number>(nd).fill(0);
  const inner = t.size[nd - 1];
  const innerStride = t.stride[nd - 1] * item;
  let o = 0;
  for (;;) {
    let src = t.offset;
    for (let d = 0; d < nd - 1; d++) src += idx[d] * t.stride[d];
    let s = src * item;
    for (let i = 0; i < inner; i++, s += innerStride) {
      for (let b = 0; b < item; b++) out[o++] = storage[s + b];
    }
    let d = nd - 2;
    while (d >= 0 && ++idx[d] === t.size[d]) idx[d--] = 0;
    if (d < 0) break;
  }
  return out;
}
