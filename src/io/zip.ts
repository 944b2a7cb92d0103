// The subset of ZIP (PKWARE APPNOTE 6.3) that .npz needs: writing stored
// entries, reading stored and deflated ones, with ZIP64 both ways, since numpy
// writes ZIP64 extra fields even for small arrays and real sample sets pass 4 GiB.

import * as fs from 'node:fs';
import { constants as bufferConstants } from 'node:buffer';
import * as zlib from 'node:zlib';
import { DataError } from '../errors.js';

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const U32_MAX = 0xffffffff;
const U16_MAX = 0xffff;
/** Deflate's largest expansion (a stored block aside): 1032 output bytes per input byte. */
const MAX_DEFLATE_RATIO = 1032;
/** Largest entry inflated into one buffer (Node's Buffer limit). */
const MAX_INFLATE = bufferConstants.MAX_LENGTH;

/** CRC-32 (IEEE, as ZIP uses) over several pieces. */
export function crc32(parts: readonly Uint8Array[], initial = 0): number {
  let c = initial;
  for (const p of parts) c = zlib.crc32(p, c);
  return c >>> 0;
}

function dosDateTime(d: Date): { time: number; date: number } {
  const year = Math.max(1980, d.getFullYear());
  return {
    time: (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1),
    date: ((year - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate(),
  };
}

export interface ZipWriteEntry {
  name: string;
  /** the entry's bytes, in pieces (no concatenation is needed) */
  parts: readonly Uint8Array[];
}

export interface ZipWriteOptions {
  /** write ZIP64 records even when the sizes do not need them (for testing readers) */
  forceZip64?: boolean;
  /** modification time recorded for every entry (default: now) */
  mtime?: Date;
}

interface RecordInfo {
  name: Buffer;
  size: number;
  crc: number;
  offset: number;
  zip64: boolean;
  time: number;
  date: number;
}

const FLAGS = 0x0800; // names are UTF-8

function localHeader(e: RecordInfo): Buffer {
  const { name, size, zip64 } = e;
  const local = Buffer.alloc(30 + name.length + (zip64 ? 20 : 0));
  local.writeUInt32LE(SIG_LOCAL, 0);
  local.writeUInt16LE(zip64 ? 45 : 20, 4);
  local.writeUInt16LE(FLAGS, 6);
  local.writeUInt16LE(0, 8); // stored
  local.writeUInt16LE(e.time, 10);
  local.writeUInt16LE(e.date, 12);
  local.writeUInt32LE(e.crc, 14);
  local.writeUInt32LE(zip64 ? U32_MAX : size, 18);
  local.writeUInt32LE(zip64 ? U32_MAX : size, 22);
  local.writeUInt16LE(name.length, 26);
  local.writeUInt16LE(zip64 ? 20 : 0, 28);
  name.copy(local, 30);
  if (zip64) {
    const x = 30 + name.length;
    local.writeUInt16LE(0x0001, x);
    local.writeUInt16LE(16, x + 2);
    local.writeBigUInt64LE(BigInt(size), x + 4);
    local.writeBigUInt64LE(BigInt(size), x + 12);
  }
  return local;
}

/** Where the CRC-32 sits in a local header (a streamed entry's is written last). */
const LOCAL_CRC_AT = 14;

// Central record: ZIP64 extra holds, in order, only the fields set to 0xFFFFFFFF.
function centralRecord(e: RecordInfo, forceZip64: boolean): Buffer {
  const { name, size, offset, crc } = e;
  const version = e.zip64 ? 45 : 20;
  const bigSize = e.zip64;
  const bigOffset = offset >= U32_MAX || forceZip64;
  const extraLen = (bigSize ? 16 : 0) + (bigOffset ? 8 : 0);
  const cen = Buffer.alloc(46 + name.length + (extraLen ? 4 + extraLen : 0));
  cen.writeUInt32LE(SIG_CENTRAL, 0);
  cen.writeUInt16LE(version, 4); // made by (MS-DOS attributes)
  cen.writeUInt16LE(version, 6);
  cen.writeUInt16LE(FLAGS, 8);
  cen.writeUInt16LE(0, 10);
  cen.writeUInt16LE(e.time, 12);
  cen.writeUInt16LE(e.date, 14);
  cen.writeUInt32LE(crc, 16);
  cen.writeUInt32LE(bigSize ? U32_MAX : size, 20);
  cen.writeUInt32LE(bigSize ? U32_MAX : size, 24);
  cen.writeUInt16LE(name.length, 28);
  cen.writeUInt16LE(extraLen ? 4 + extraLen : 0, 30);
  cen.writeUInt16LE(0, 32); // comment
  cen.writeUInt16LE(0, 34); // disk
  cen.writeUInt16LE(0, 36); // internal attributes
  cen.writeUInt32LE(0, 38); // external attributes
  cen.writeUInt32LE(bigOffset ? U32_MAX : offset, 42);
  name.copy(cen, 46);
  if (extraLen) {
    let x = 46 + name.length;
    cen.writeUInt16LE(0x0001, x);
    cen.writeUInt16LE(extraLen, x + 2);
    x += 4;
    if (bigSize) {
      cen.writeBigUInt64LE(BigInt(size), x);
      cen.writeBigUInt64LE(BigInt(size), x + 8);
      x += 16;
    }
    if (bigOffset) cen.writeBigUInt64LE(BigInt(offset), x);
  }
  return cen;
}

/** The central directory and end records of an archive whose entries end at `cdOffset`. */
function directoryParts(records: readonly RecordInfo[], cdOffset: number, forceZip64: boolean): Buffer[] {
  const central = records.map((r) => centralRecord(r, forceZip64));
  let cdSize = 0;
  for (const c of central) cdSize += c.length;
  const out: Buffer[] = [...central];
  const n = records.length;
  const needZip64End = forceZip64 || n >= U16_MAX || cdOffset >= U32_MAX || cdSize >= U32_MAX;
  if (needZip64End) {
    const z = Buffer.alloc(56 + 20);
    z.writeUInt32LE(SIG_ZIP64_EOCD, 0);
    z.writeBigUInt64LE(44n, 4); // size of the rest of this record
    z.writeUInt16LE(45, 12);
    z.writeUInt16LE(45, 14);
    z.writeUInt32LE(0, 16);
    z.writeUInt32LE(0, 20);
    z.writeBigUInt64LE(BigInt(n), 24);
    z.writeBigUInt64LE(BigInt(n), 32);
    z.writeBigUInt64LE(BigInt(cdSize), 40);
    z.writeBigUInt64LE(BigInt(cdOffset), 48);
    z.writeUInt32LE(SIG_ZIP64_LOCATOR, 56);
    z.writeUInt32LE(0, 60);
    z.writeBigUInt64LE(BigInt(cdOffset + cdSize), 64);
    z.writeUInt32LE(1, 72);
    out.push(z);
  }
  const end = Buffer.alloc(22);
  end.writeUInt32LE(SIG_EOCD, 0);
  const n16 = needZip64End ? U16_MAX : n;
  end.writeUInt16LE(n16, 8);
  end.writeUInt16LE(n16, 10);
  end.writeUInt32LE(needZip64End ? U32_MAX : cdSize, 12);
  end.writeUInt32LE(needZip64End ? U32_MAX : cdOffset, 16);
  out.push(end);
  return out;
}

/**
 * Lays out a ZIP archive of stored (uncompressed) entries and returns the byte
 * pieces in file order. Payload pieces are passed through, not copied.
 */
export function zipStoredParts(entries: readonly ZipWriteEntry[], opts: ZipWriteOptions = {}): Uint8Array[] {
  const out: Uint8Array[] = [];
  const records: RecordInfo[] = [];
  const { time, date } = dosDateTime(opts.mtime ?? new Date());
  const force = opts.forceZip64 === true;
  let offset = 0;
  const seen = new Set<string>();
  for (const e of entries) {
    if (seen.has(e.name)) throw new Error(`duplicate zip entry name '${e.name}'`);
    seen.add(e.name);
    let size = 0;
    for (const p of e.parts) size += p.length;
    const r: RecordInfo = { name: Buffer.from(e.name, 'utf8'), size, crc: crc32(e.parts), offset, time, date, zip64: force || size >= U32_MAX || offset >= U32_MAX };
    records.push(r);
    const local = localHeader(r);
    out.push(local, ...e.parts);
    offset += local.length + size;
  }
  out.push(...directoryParts(records, offset, force));
  return out;
}

/** The file a streamed archive goes to: appends, patches earlier bytes, then commits or aborts. */
export interface ZipSink {
  write(bytes: Uint8Array): void;
  writeAt(bytes: Uint8Array, position: number): void;
}

/**
 * A ZIP archive of stored entries written as it is produced, so an entry can be
 * larger than memory (a 50k x 256 x 256 x 3 sample set is 9.8 GB, past the 4 GiB a
 * typed array can hold). Each entry's size is declared up front; its CRC-32 is
 * computed on the way and written into the local header when the entry ends.
 */
export class ZipStreamWriter {
  readonly #sink: ZipSink;
  readonly #records: RecordInfo[] = [];
  readonly #force: boolean;
  readonly #time: number;
  readonly #date: number;
  #offset = 0;
  #open: { r: RecordInfo; written: number; crc: number } | null = null;

  constructor(sink: ZipSink, opts: ZipWriteOptions = {}) {
    this.#sink = sink;
    this.#force = opts.forceZip64 === true;
    ({ time: this.#time, date: this.#date } = dosDateTime(opts.mtime ?? new Date()));
  }

  begin(name: string, size: number): void {
    if (this.#open) throw new Error(`zip entry '${this.#open.r.name.toString()}' is still open`);
    if (this.#records.some((r) => r.name.toString() === name)) throw new Error(`duplicate zip entry name '${name}'`);
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`zip entry size must be a non-negative integer, got ${size}`);
    const r: RecordInfo = { name: Buffer.from(name, 'utf8'), size, crc: 0, offset: this.#offset, time: this.#time, date: this.#date, zip64: this.#force || size >= U32_MAX || this.#offset >= U32_MAX };
    const local = localHeader(r);
    this.#sink.write(local);
    this.#offset += local.length;
    this.#open = { r, written: 0, crc: 0 };
  }

  write(bytes: Uint8Array): void {
    const o = this.#open;
    if (!o) throw new Error('zip: write outside an entry');
    if (o.written + bytes.length > o.r.size) throw new RangeError(`zip entry '${o.r.name.toString()}': ${o.written + bytes.length} bytes written, ${o.r.size} declared`);
    this.#sink.write(bytes);
    o.crc = zlib.crc32(bytes, o.crc);
    o.written += bytes.length;
    this.#offset += bytes.length;
  }

  end(): void {
    const o = this.#open;
    if (!o) throw new Error('zip: end outside an entry');
    if (o.written !== o.r.size) throw new RangeError(`zip entry '${o.r.name.toString()}': ${o.written} bytes written, ${o.r.size} declared`);
    o.r.crc = o.crc >>> 0;
    const crc = Buffer.alloc(4);
    crc.writeUInt32LE(o.r.crc, 0);
    this.#sink.writeAt(crc, o.r.offset + LOCAL_CRC_AT);
    this.#records.push(o.r);
    this.#open = null;
  }

  /** Writes the central directory; the sink is then complete. */
  finish(): void {
    if (this.#open) throw new Error(`zip entry '${this.#open.r.name.toString()}' is still open`);
    for (const p of directoryParts(this.#records, this.#offset, this.#force)) this.#sink.write(p);
  }
}

export interface ZipEntryInfo {
  name: string;
  /** 0 = stored, 8 = deflate */
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

function u64(buf: Buffer, at: number, file: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new DataError(file, `zip field ${v} exceeds 2^53`);
  return Number(v);
}

function readAt(fd: number, buf: Buffer, position: number, file: string, what: string): void {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, buf.length - done, position + done);
    if (n === 0) throw new DataError(file, `truncated zip archive: ${what} at byte ${position} runs past the end of the file`);
    done += n;
  }
}

/** Reads the central directory of the ZIP archive open as `fd`. */
export function readZipDirectory(fd: number, file: string): ZipEntryInfo[] {
  const size = fs.fstatSync(fd).size;
  if (size < 22) throw new DataError(file, `not a zip archive (.npz): ${size} bytes is too short for an end-of-central-directory record`);
  // The end record sits in the last 22 + (comment <= 65535) bytes.
  const tailLen = Math.min(size, 22 + 0xffff);
  const tail = Buffer.alloc(tailLen);
  readAt(fd, tail, size - tailLen, file, 'end record');
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === SIG_EOCD) { eocd = i; break; }
  }
  if (eocd < 0) {
    const head = Buffer.alloc(Math.min(4, size));
    readAt(fd, head, 0, file, 'signature');
    const hint = head.length === 4 && head.readUInt32LE(0) === SIG_LOCAL ? ' (the archive is truncated)' : '';
    throw new DataError(file, `not a zip archive (.npz): no end-of-central-directory record${hint}`);
  }
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
    const loc = eocd - 20;
    if (loc < 0 || tail.readUInt32LE(loc) !== SIG_ZIP64_LOCATOR) {
      throw new DataError(file, 'zip end record points to a ZIP64 record that is missing');
    }
    const z64at = u64(tail, loc + 8, file);
    const z = Buffer.alloc(56);
    readAt(fd, z, z64at, file, 'ZIP64 end record');
    if (z.readUInt32LE(0) !== SIG_ZIP64_EOCD) throw new DataError(file, 'bad ZIP64 end-of-central-directory signature');
    count = u64(z, 32, file);
    cdSize = u64(z, 40, file);
    cdOffset = u64(z, 48, file);
  }
  if (count > cdSize / 46) {
    throw new DataError(file, `corrupt zip end record: ${count} entries cannot fit in a ${cdSize}-byte central directory`);
  }
  if (cdOffset + cdSize > size) {
    throw new DataError(file, `truncated zip archive: central directory at ${cdOffset}+${cdSize} exceeds file size ${size}`);
  }
  const cd = Buffer.alloc(cdSize);
  readAt(fd, cd, cdOffset, file, 'central directory');
  const entries: ZipEntryInfo[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) {
      throw new DataError(file, `corrupt zip central directory at entry ${i}`);
    }
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    const crc = cd.readUInt32LE(p + 16);
    let compressedSize = cd.readUInt32LE(p + 20);
    let usize = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localHeaderOffset = cd.readUInt32LE(p + 42);
    if (p + 46 + nameLen + extraLen + commentLen > cd.length) {
      throw new DataError(file, `corrupt zip central directory at entry ${i}: its name, extra field and comment (${nameLen} + ${extraLen} + ${commentLen} bytes) run past the directory's ${cd.length} bytes`);
    }
    const name = cd.toString(flags & 0x0800 ? 'utf8' : 'latin1', p + 46, p + 46 + nameLen);
    if (flags & 0x0001) throw new DataError(file, `zip entry '${name}' is encrypted`);
    // ZIP64 extra: 64-bit values for exactly those fields that read 0xFFFFFFFF.
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = cd.readUInt16LE(x);
      const len = cd.readUInt16LE(x + 2);
      if (x + 4 + len > xEnd) throw new DataError(file, `corrupt zip central directory: extra field 0x${id.toString(16)} of entry '${name}' overruns its ${extraLen} bytes`);
      if (id === 0x0001) {
        let q = x + 4;
        const take = (what: string): number => {
          if (q + 8 > x + 4 + len) throw new DataError(file, `corrupt zip central directory: ZIP64 extra field of entry '${name}' lacks its ${what}`);
          const v = u64(cd, q, file);
          q += 8;
          return v;
        };
        if (usize === U32_MAX) usize = take('size');
        if (compressedSize === U32_MAX) compressedSize = take('compressed size');
        if (localHeaderOffset === U32_MAX) localHeaderOffset = take('local header offset');
      }
      x += 4 + len;
    }
    // Declared sizes against the file, before anything is allocated for them.
    if (localHeaderOffset + 30 > size || compressedSize > size) {
      throw new DataError(file, `corrupt zip central directory: entry '${name}' claims ${compressedSize} bytes at offset ${localHeaderOffset}, the file has ${size}`);
    }
    if (method === 0 && compressedSize !== usize) {
      throw new DataError(file, `corrupt zip central directory: stored entry '${name}' has size ${usize} but ${compressedSize} bytes of data`);
    }
    if (method === 8 && usize > MAX_DEFLATE_RATIO * compressedSize + 1024) {
      throw new DataError(file, `zip entry '${name}' claims ${usize} bytes from ${compressedSize} compressed ones, more than deflate can produce (at most ${MAX_DEFLATE_RATIO}:1)`);
    }
    entries.push({ name, method, crc, compressedSize, size: usize, localHeaderOffset });
    p = xEnd + commentLen;
  }
  return entries;
}

/** Byte offset where an entry's data begins (after its local header, whose extra field may differ from the central one). */
export function zipEntryDataOffset(fd: number, e: ZipEntryInfo, file: string): number {
  const h = Buffer.alloc(30);
  readAt(fd, h, e.localHeaderOffset, file, `local header of '${e.name}'`);
  if (h.readUInt32LE(0) !== SIG_LOCAL) throw new DataError(file, `bad local header signature for zip entry '${e.name}'`);
  const start = e.localHeaderOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
  const size = fs.fstatSync(fd).size;
  if (start + e.compressedSize > size) {
    throw new DataError(file, `truncated zip archive: entry '${e.name}' needs ${e.compressedSize} bytes at ${start}, file has ${size}`);
  }
  return start;
}

/** Reads and inflates a deflated entry, checking its size and CRC. */
export function readDeflatedEntry(fd: number, e: ZipEntryInfo, file: string): Buffer {
  const start = zipEntryDataOffset(fd, e, file);
  if (e.size > MAX_INFLATE) throw new DataError(file, `zip entry '${e.name}' inflates to ${e.size} bytes, more than one buffer holds (${MAX_INFLATE}); store it uncompressed`);
  const comp = Buffer.alloc(e.compressedSize);
  readAt(fd, comp, start, file, `data of '${e.name}'`);
  let raw: Buffer;
  try {
    // Never more than the directory declares: a deflate bomb stops here, not after filling memory.
    raw = zlib.inflateRawSync(comp, { maxOutputLength: Math.max(1, e.size) });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new DataError(file, `zip entry '${e.name}' inflates to more than the ${e.size} bytes its directory declares (a corrupt entry or a decompression bomb)`);
    }
    throw new DataError(file, `zip entry '${e.name}' does not inflate: ${(err as Error).message}`);
  }
  if (raw.length !== e.size) throw new DataError(file, `zip entry '${e.name}' inflates to ${raw.length} bytes, directory says ${e.size}`);
  if (crc32([raw]) !== e.crc) throw new DataError(file, `CRC-32 mismatch in zip entry '${e.name}': the file is corrupt`);
  return raw;
}

/** Bytes read per step when a stored entry's CRC-32 is checked past the part that is kept. */
const CRC_CHUNK = 1 << 20;

/**
 * Reads the first `keep` bytes of an entry (all of them when `keep` is its size)
 * and checks the CRC-32 of the whole entry, stored or deflated. A stored entry is
 * read once, in place: the kept prefix goes straight into the returned buffer and
 * the rest passes through one reused chunk, so a torn or bit-flipped entry is
 * refused without holding a second copy of it.
 */
export function readZipEntryPrefix(fd: number, e: ZipEntryInfo, file: string, keep: number): Buffer {
  if (!Number.isSafeInteger(keep) || keep < 0 || keep > e.size) throw new DataError(file, `zip entry '${e.name}': ${keep} bytes wanted of its ${e.size}`);
  if (e.method === 8) {
    const raw = readDeflatedEntry(fd, e, file);
    // Copied so the rest of the inflated entry can be freed.
    return keep === raw.length ? raw : Buffer.from(raw.subarray(0, keep));
  }
  if (e.method !== 0) throw new DataError(file, `zip entry '${e.name}' uses compression method ${e.method}; expected stored (0) or deflate (8)`);
  const start = zipEntryDataOffset(fd, e, file);
  const out = Buffer.alloc(keep);
  readAt(fd, out, start, file, `data of '${e.name}'`);
  let crc = zlib.crc32(out, 0);
  if (keep < e.size) {
    const chunk = Buffer.alloc(Math.min(CRC_CHUNK, e.size - keep));
    for (let at = keep; at < e.size; at += chunk.length) {
      const piece = at + chunk.length <= e.size ? chunk : chunk.subarray(0, e.size - at);
      readAt(fd, piece, start + at, file, `data of '${e.name}'`);
      crc = zlib.crc32(piece, crc);
    }
  }
  if (crc >>> 0 !== e.crc) throw new DataError(file, `CRC-32 mismatch in zip entry '${e.name}': the file is corrupt`);
  return out;
}
