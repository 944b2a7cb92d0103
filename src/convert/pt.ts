// PyTorch checkpoints, in both layouts torch.save writes:
//  - zip (torch >= 1.6): `<name>/data.pkl` (the pickle) plus one entry
//    `<name>/data/<key>` per storage, raw little-endian elements;
//  - legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): pickles
//    and storages back to back in one file (src/convert/legacy.ts).
// openPt tells them apart by their first bytes and returns the same PtFile.
// Tensors are views of storages (offset, size, stride), so a transposed or
// sliced tensor is gathered into contiguous row-major bytes here.
//
// Only the part of a storage that the file's tensors reach is kept in memory,
// and a zip whose deflated storages would inflate to far more than its tensors
// use is refused before anything is inflated: a small file cannot make the
// conversion hold or inflate more than about its output's size.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

import { CheckpointError, DataError } from '../errors.js';
import { readZipDirectory, readZipEntryPrefix, type ZipEntryInfo } from '../io/zip.js';
import { readLegacyPt } from './legacy.js';
import { storageUses, tensorNeed } from './storages.js';
import { ITEM_BYTES, unpickle, type PtTensor, type PyValue } from './unpickle.js';

export { ITEM_BYTES };

/** A state dict's pickle is KiBs to a few MiB; more is not a state dict. */
export const MAX_PICKLE_BYTES = 64 * 2 ** 20;
/** Deflated storages may inflate to twice what the tensors use plus this much (a zip tool may compress a few spare storages). */
export const INFLATE_SLACK = 64 * 2 ** 20;

export interface PtFile {
  /** which torch.save layout the file has */
  format: 'zip' | 'legacy';
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

/** Opens a .pt / .pth file of either layout: reads its pickle (restricted) and gives access to its storages. */
export function openPt(file: string): PtFile {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw new CheckpointError(file, `cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const size = fstatSync(fd).size;
    const head = Buffer.alloc(4);
    const n = readSync(fd, head, 0, 4, 0);
    if (n === 4 && head.readUInt32LE(0) === 0x04034b50) return openZipPt(fd, file);
    if (n >= 2 && head[0] === 0x80) return openLegacy(fd, file, size);
    throw new CheckpointError(file, `not a PyTorch checkpoint: neither a zip archive (torch.save since 1.6) nor a pickle (the legacy torch.save format); it starts with ${head.subarray(0, n).toString('hex') || 'nothing (empty file)'}`);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** Keeps the needed part of one storage at a time: a checkpoint's tensors are converted one by one. */
function storageCache(read: (key: string, keep: number) => Uint8Array) {
  let held: { key: string; bytes: Uint8Array } | null = null;
  return (key: string, keep: number): Uint8Array => {
    if (held?.key === key && held.bytes.byteLength >= keep) return held.bytes;
    held = null;
    held = { key, bytes: read(key, keep) };
    return held.bytes;
  };
}

function openZipPt(fd: number, file: string): PtFile {
  let entries: ZipEntryInfo[];
  try {
    entries = readZipDirectory(fd, file);
  } catch (e) {
    return rethrow(file, e);
  }
  const pkl = entries.filter((e) => /(^|\/)data\.pkl$/.test(e.name));
  if (pkl.length !== 1) throw new CheckpointError(file, `expected one <archive>/data.pkl entry, found ${pkl.length}`);
  const prefix = pkl[0].name.slice(0, -'data.pkl'.length);
  const byName = new Map<string, ZipEntryInfo>();
  for (const e of entries) {
    // Two entries of one name would let a damaged directory hand one storage's bytes (with their valid CRC) to another.
    if (byName.has(e.name)) throw new CheckpointError(file, `zip entry ${e.name} appears twice in the central directory`);
    byName.set(e.name, e);
  }
  const read = (e: ZipEntryInfo, keep: number): Uint8Array => {
    try {
      return readZipEntryPrefix(fd, e, file, keep);
    } catch (err) {
      return rethrow(file, err);
    }
  };
  if (pkl[0].size > MAX_PICKLE_BYTES) throw new CheckpointError(file, `zip entry ${pkl[0].name} is ${pkl[0].size} bytes, more than the ${MAX_PICKLE_BYTES} a state dict's pickle takes`);
  const root = unpickle(read(pkl[0], pkl[0].size), file);
  const uses = storageUses(root);
  const entryOf = (key: string): ZipEntryInfo => {
    const e = byName.get(`${prefix}data/${key}`);
    if (!e) throw new CheckpointError(file, `storage ${key}: zip entry ${prefix}data/${key} is missing`);
    return e;
  };

  // Deflated storages are inflated whole (their CRC-32 covers all of them): refuse, before
  // inflating anything, a file whose deflated storages declare far more than its tensors use.
  let declared = 0;
  let needed = 0;
  let worst: { key: string; e: ZipEntryInfo; need: number } | null = null;
  for (const [key, u] of uses) {
    needed += u.need;
    const e = byName.get(`${prefix}data/${key}`);
    if (e?.method !== 8) continue;
    declared += e.size;
    if (!worst || e.size - u.need > worst.e.size - worst.need) worst = { key, e, need: u.need };
  }
  if (worst && declared > 2 * needed + INFLATE_SLACK) {
    throw new CheckpointError(file, `storage ${worst.key}: zip entry ${worst.e.name} is deflated to ${worst.e.compressedSize} bytes and declares ${worst.e.size} ` +
      `but its tensors use ${worst.need}; the deflated storages declare ${declared} bytes for ${needed} bytes of tensors, more than the ` +
      `2 x ${needed} + ${INFLATE_SLACK} inflated to convert them (a decompression bomb, or storages far larger than their tensors)`);
  }

  const storage = storageCache((key, keep) => read(entryOf(key), keep));
  return {
    format: 'zip',
    root,
    tensorBytes: (t) => {
      const key = t.storage.key;
      const e = entryOf(key);
      const bytes = t.storage.numel * ITEM_BYTES[t.storage.dtype];
      if (e.size < bytes) throw new CheckpointError(file, `storage ${key}: ${e.size} bytes, the pickle says ${bytes}`);
      return gather(t, storage(key, Math.max(uses.get(key)?.need ?? 0, tensorNeed(t))), file);
    },
    close: () => closeSync(fd),
  };
}

function openLegacy(fd: number, file: string, size: number): PtFile {
  const { root, data } = readLegacyPt(fd, file, size, MAX_PICKLE_BYTES);
  const uses = storageUses(root);
  const storage = storageCache((key, keep) => {
    const at = data.get(key)!.offset;
    const out = Buffer.alloc(keep);
    for (let done = 0; done < keep; ) {
      const n = readSync(fd, out, done, keep - done, at + done);
      if (n === 0) throw new CheckpointError(file, `storage ${key}: the file ended while reading it (was it truncated while open?)`);
      done += n;
    }
    return out;
  });
  return {
    format: 'legacy',
    root,
    tensorBytes: (t) => {
      const key = t.storage.key;
      const loc = data.get(key);
      if (!loc) throw new CheckpointError(file, `storage ${key}: not among the storages the file holds`);
      const bytes = t.storage.numel * ITEM_BYTES[t.storage.dtype];
      if (loc.bytes < bytes) throw new CheckpointError(file, `storage ${key}: ${loc.bytes} bytes, the pickle says ${bytes}`);
      return gather(t, storage(key, Math.max(uses.get(key)?.need ?? 0, tensorNeed(t))), file);
    },
    close: () => closeSync(fd),
  };
}

/** A view may repeat its storage (stride 0) but not blow it up without bound. */
const MAX_EXPANSION = 16;

/**
 * Copies a strided view of `storage` into contiguous row-major bytes. `storage`
 * may be only the part of the storage the view reaches.
 */
export function gather(t: PtTensor, storage: Uint8Array, file: string): Uint8Array {
  const item = ITEM_BYTES[t.storage.dtype];
  const numel = t.size.reduce((a, b) => a * b, 1);
  if (numel === 0) return new Uint8Array(0);
  let last = t.offset;
  for (let d = 0; d < t.size.length; d++) last += (t.size[d] - 1) * t.stride[d];
  if (!Number.isSafeInteger(numel) || numel * item > MAX_EXPANSION * Math.max(t.storage.numel * item, 1 << 20)) {
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
