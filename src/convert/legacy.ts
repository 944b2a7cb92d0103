// The legacy torch.save layout (torch < 1.6, and later torch with
// `_use_new_zipfile_serialization=False`), e.g. pytorch-fid's Inception weights:
//
//   pickle  magic number 0x1950a86a20f9469cfc6c
//   pickle  protocol version 1001
//   pickle  sys info {'protocol_version', 'little_endian', 'type_sizes'}
//   pickle  the object; storages are persistent ids
//           ('storage', torch.<T>Storage, key, location, numel, view_metadata)
//   pickle  the storage keys, in the order their data follows
//   per key: numel as 8 bytes little-endian, then numel elements of T
//
// The pickles go through the same restricted unpickler as a zip's data.pkl.
// Nothing marks where the pickles end, so they are parsed from a prefix of
// the file that grows (x4) until they fit, up to the pickle limit; the
// storages are then located by their counts and must tile the rest of the
// file exactly.
import { readSync } from 'node:fs';

import { CheckpointError } from '../errors.js';
import { storageUses } from './storages.js';
import { ITEM_BYTES, PickleTruncatedError, unpickleAt, type PyValue } from './unpickle.js';
import { describeValue } from './describe.js';

const MAGIC = 0x1950a86a20f9469cfc6cn;
const PROTOCOL_VERSION = 1001;
/** The first read of the pickles; most state dicts' pickles fit. */
const FIRST_READ = 1 << 20;

export interface LegacyLayout {
  root: PyValue;
  /** where each storage's elements are (after its 8-byte count), and how many bytes */
  data: Map<string, { offset: number; bytes: number }>;
}

function readFully(fd: number, buf: Buffer, position: number): number {
  let done = 0;
  while (done < buf.length) {
    const n = readSync(fd, buf, done, buf.length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** The five pickles at the start of the file, and the byte after the last. */
function readPickles(fd: number, file: string, size: number, maxPickleBytes: number): { values: PyValue[]; end: number } {
  const limit = Math.min(size, maxPickleBytes);
  for (let len = Math.min(limit, FIRST_READ); ; len = Math.min(limit, len * 4)) {
    const buf = Buffer.alloc(len);
    const got = readFully(fd, buf, 0);
    if (got < len) throw new CheckpointError(file, `the file ended after ${got} of its ${size} bytes while reading it`);
    try {
      const values: PyValue[] = [];
      let pos = 0;
      for (let i = 0; i < 5; i++) {
        const r = unpickleAt(buf, pos, file);
        values.push(r.value);
        pos = r.end;
        if (i === 0 && r.value !== MAGIC) {
          throw new CheckpointError(file, `a pickle that is not a torch.save file: it starts with ${describeValue(r.value)}, not torch's magic number 0x${MAGIC.toString(16)}`);
        }
      }
      return { values, end: pos };
    } catch (e) {
      if (!(e instanceof PickleTruncatedError) || len === limit) {
        if (e instanceof PickleTruncatedError && limit < size) {
          throw new CheckpointError(file, `legacy torch.save file: its pickles run past ${maxPickleBytes} bytes, more than a state dict's take`);
        }
        throw e;
      }
    }
  }
}

/** Reads the legacy layout's pickles and locates its storages; the object's storages are checked against the file. */
export function readLegacyPt(fd: number, file: string, size: number, maxPickleBytes: number): LegacyLayout {
  const { values: [, protocol, info, root, keys], end } = readPickles(fd, file, size, maxPickleBytes);
  if (protocol !== PROTOCOL_VERSION) throw new CheckpointError(file, `legacy torch.save protocol ${describeValue(protocol)}, expected ${PROTOCOL_VERSION}`);
  if (!(info instanceof Map) || info.get('little_endian') !== true) {
    throw new CheckpointError(file, `legacy torch.save sys info ${describeValue(info)}: expected a dict with little_endian True (big-endian files are not read)`);
  }
  if (!Array.isArray(keys) || keys.some((k) => typeof k !== 'string')) throw new CheckpointError(file, `legacy torch.save storage key list ${describeValue(keys)}: expected a list of strings`);
  const uses = storageUses(root);
  const data = new Map<string, { offset: number; bytes: number }>();
  let at = end;
  const count = Buffer.alloc(8);
  for (const key of keys as string[]) {
    const u = uses.get(key);
    if (!u) throw new CheckpointError(file, `storage ${describeValue(key)} is listed but the pickled object does not use it`);
    if (data.has(key)) throw new CheckpointError(file, `storage ${key} is listed twice`);
    if (u.mixed) throw new CheckpointError(file, `storage ${key}: the pickle gives it two dtypes or sizes`);
    if (at + 8 > size) throw new CheckpointError(file, `storage ${key}: its element count at byte ${at} runs past the end of the file (${size} bytes): the file is truncated`);
    readFully(fd, count, at);
    const numel = count.readBigUInt64LE(0);
    if (numel !== BigInt(u.numel)) {
      throw new CheckpointError(file, `storage ${key}: the file holds ${numel} elements at byte ${at}, the pickle says ${u.numel}`);
    }
    const bytes = u.numel * ITEM_BYTES[u.dtype];
    if (at + 8 + bytes > size) {
      throw new CheckpointError(file, `storage ${key}: ${u.numel} ${u.dtype} elements (${bytes} bytes) at byte ${at + 8} run past the end of the file (${size} bytes): the file is truncated`);
    }
    data.set(key, { offset: at + 8, bytes });
    at += 8 + bytes;
  }
  for (const key of uses.keys()) if (!data.has(key)) throw new CheckpointError(file, `storage ${key}: used by the pickled object but not in the file's storage list`);
  if (at !== size) throw new CheckpointError(file, `${size - at} bytes after the last storage (ends at byte ${at}): the file is damaged or not a torch.save file`);
  return { root, data };
}
