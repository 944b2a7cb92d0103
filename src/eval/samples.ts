// Loading image sets for evaluation: samples.npz (arr_0 uint8 [N, H, W, C], the
// ADM evaluator's layout), an .npy of the same, or a folder of PNG files
// (PNG/JPEG/WebP, searched recursively in sorted order, so class subfolders work).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_LIMITS, decodeImageFile, isImageName, type ImageLimits } from '../data/image-decode.js';
import { DataError } from '../errors.js';
import * as zlib from 'node:zlib';
import { fileRangeSource, readNpy, readNpyHeaderFrom, type NdArray, type NpyHeader } from '../io/npy.js';
import { listNpz, readNpz } from '../io/npz.js';
import { readZipDirectory, zipEntryDataOffset } from '../io/zip.js';
import type { ImageBatch, ImageRows } from './features.js';

export interface ImageSet extends ImageBatch {
  /** where the images came from (for reports) */
  source: string;
}

/**
 * An image set read from its file in rows, for sets too large to load whole (50k
 * samples at 256x256 are 9.8 GB; one typed array holds 4 GiB). Read in order from
 * the first image (as extractFeatures does), an .npz entry's CRC-32 is checked on the
 * way, when the last row is read. `close()` releases the file.
 */
export interface StreamedImageSet extends ImageRows {
  source: string;
  close(): void;
}

/** What evaluation takes: images in memory, or streamed from a file. */
export type EvalImages = ImageSet | StreamedImageSet;

/** Image arrays above this many bytes are streamed rather than loaded. */
export const STREAM_IMAGES_ABOVE = 2 ** 30;

/** [N, H, W, C] of uint8 images (or [N, H, W], read as C = 1), or an error saying what was found. */
function imageDims(dtype: string, s: readonly number[], source: string): { N: number; H: number; W: number; C: number } {
  if (dtype !== 'uint8') {
    throw new DataError(source, `images must be uint8 [N, H, W, C] in 0..255, found dtype ${dtype}`);
  }
  if (s.length === 3) return { N: s[0], H: s[1], W: s[2], C: 1 };
  if (s.length !== 4) throw new DataError(source, `images must be [N, H, W, C], found shape [${s.join(', ')}]`);
  if (![1, 3, 4].includes(s[3])) {
    const hint = [1, 3, 4].includes(s[1]) ? ' (this looks like [N, C, H, W]: transpose to channels-last)' : '';
    throw new DataError(source, `images must be [N, H, W, C] with C = 1, 3 or 4, found shape [${s.join(', ')}]${hint}`);
  }
  return { N: s[0], H: s[1], W: s[2], C: s[3] };
}

/** Checks an array is uint8 images [N, H, W, C] (or [N, H, W], read as C = 1) and wraps it. */
export function imageSetFromArray(arr: NdArray, source: string): ImageSet {
  return { data: arr.data as Uint8Array, ...imageDims(arr.dtype, arr.shape, source), source };
}

/**
 * The images of an .npy payload at byte `start` of fd (header h), streamed.
 * crc: the CRC-32 the whole zip entry must have, with the entry's header bytes
 * already folded into `crc0` and `trailing` bytes after the payload; null for a
 * plain .npy (no checksum).
 */
function streamedSet(fd: number, start: number, h: NpyHeader, source: string, check: { crc: number; crc0: number; entrySize: number } | null): StreamedImageSet {
  const dims = imageDims(h.dtype, h.shape, source);
  const per = dims.H * dims.W * dims.C;
  let next = 0;
  let crc = check?.crc0 ?? 0;
  let open = true;
  const src = fileRangeSource(fd, start, check?.entrySize ?? h.dataOffset + h.dataBytes);
  const readAt = (len: number, pos: number): Buffer => {
    const b = Buffer.alloc(len);
    if (src.read(b, pos) !== len) throw new DataError(source, `file ends inside the images (before byte ${start + pos + len})`);
    return b;
  };
  return {
    ...dims,
    source,
    rows(i0: number, n: number): Uint8Array {
      if (!open) throw new DataError(source, 'read after close');
      if (!(Number.isInteger(i0) && Number.isInteger(n) && i0 >= 0 && n >= 0 && i0 + n <= dims.N)) {
        throw new RangeError(`${source}: rows ${i0}..${i0 + n} outside 0..${dims.N}`);
      }
      const buf = readAt(n * per, h.dataOffset + i0 * per);
      if (check && i0 === next) {
        crc = zlib.crc32(buf, crc);
        next += n;
        if (next === dims.N) {
          const trailing = check.entrySize - h.dataOffset - h.dataBytes;
          if (trailing > 0) crc = zlib.crc32(readAt(trailing, h.dataOffset + h.dataBytes), crc);
          if (crc >>> 0 !== check.crc) throw new DataError(source, 'CRC-32 mismatch in the zip entry: the file is corrupt');
        }
      }
      return buf;
    },
    close(): void {
      if (open) fs.closeSync(fd);
      open = false;
    },
  };
}

/** A large stored `key` of an .npz, or an .npy, as a streamed set; null when it is small enough to load (or deflated). */
function openLarge(p: string, key: string | null): StreamedImageSet | null {
  const fd = fs.openSync(p, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    let start = 0;
    let entrySize = size;
    let entry: { crc: number } | null = null;
    if (key !== null) {
      const e = readZipDirectory(fd, p).find((x) => x.name === `${key}.npy` || x.name === key);
      if (!e || e.method !== 0) {
        fs.closeSync(fd);
        return null;
      }
      start = zipEntryDataOffset(fd, e, p);
      entrySize = e.size;
      entry = e;
    }
    const label = key === null ? p : `${p}[${key}]`;
    const h = readNpyHeaderFrom(fileRangeSource(fd, start, entrySize), label);
    if (h.dataBytes <= STREAM_IMAGES_ABOVE) {
      fs.closeSync(fd);
      return null;
    }
    let check = null;
    if (entry) {
      const head = Buffer.alloc(h.dataOffset);
      fs.readSync(fd, head, 0, h.dataOffset, start);
      check = { crc: entry.crc, crc0: zlib.crc32(head), entrySize };
    }
    return streamedSet(fd, start, h, label, check);
  } catch (e) {
    try { fs.closeSync(fd); } catch { /* closed */ }
    throw e;
  }
}

function listImages(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, depth: number): void => {
    if (depth > 32) throw new DataError(d, 'folders nested more than 32 deep (a symbolic link loop?)');
    const entries = fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p, depth + 1);
      else if (e.isFile() && isImageName(e.name)) out.push(p);
    }
  };
  walk(dir, 0);
  return out;
}

/**
 * Reads every image (PNG, JPEG, WebP) under `dir` as RGB (alpha dropped, grey
 * expanded) through the checked decoder (size limits before decoding); all must
 * share one size.
 */
export async function loadPngFolder(dir: string, limits: ImageLimits = DEFAULT_LIMITS): Promise<ImageSet> {
  const files = listImages(dir);
  if (files.length === 0) throw new DataError(dir, 'no .png/.jpg/.jpeg/.webp files found in this folder (searched recursively)');
  let H = 0;
  let W = 0;
  let data = new Uint8Array(0);
  for (let n = 0; n < files.length; n++) {
    const f = files[n];
    const img = await decodeImageFile(f, limits);
    if (n === 0) {
      H = img.height;
      W = img.width;
      data = new Uint8Array(files.length * H * W * 3);
    } else if (img.height !== H || img.width !== W) {
      throw new DataError(f, `image is ${img.width}x${img.height}, but ${files[0]} is ${W}x${H}; all images must have one size`);
    }
    data.set(img.data, n * H * W * 3);
  }
  return { data, N: files.length, H, W, C: 3, source: dir };
}

/**
 * Images from an .npz (its `arr_0`, or its only array), an .npy, or a PNG folder:
 * loaded, or streamed from the file when the array passes STREAM_IMAGES_ABOVE bytes.
 */
export async function openImageSet(p: string): Promise<EvalImages> {
  if (p.endsWith('.npy') || p.endsWith('.npz')) {
    let key: string | null = null;
    if (p.endsWith('.npz')) {
      const keys = listNpz(p);
      key = keys.includes('arr_0') ? 'arr_0' : keys.length === 1 ? keys[0] : null;
    }
    if (p.endsWith('.npy') || key !== null) {
      const big = openLarge(p, key);
      if (big) return big;
    }
  }
  return loadImageSet(p);
}

/** Loads images from an .npz (its `arr_0`, or its only array), an .npy, or a PNG folder. */
export async function loadImageSet(p: string): Promise<ImageSet> {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    throw new DataError(p, 'not found (expected samples.npz, an .npy of uint8 images, or a folder of PNG files)');
  }
  if (st.isDirectory()) return loadPngFolder(p);
  if (p.endsWith('.npy')) return imageSetFromArray(readNpy(p), p);
  if (p.endsWith('.npz')) {
    const keys = listNpz(p);
    const key = keys.includes('arr_0') ? 'arr_0' : keys.length === 1 ? keys[0] : null;
    if (!key) throw new DataError(p, `no image array: expected 'arr_0' (uint8 [N, H, W, C]), the archive holds ${keys.join(', ')}`);
    return imageSetFromArray(readNpz(p, { keys: [key] })[key], `${p}[${key}]`);
  }
  if (p.toLowerCase().endsWith('.png')) throw new DataError(p, 'a single PNG is not a sample set; pass the folder that holds the PNGs');
  throw new DataError(p, 'unknown sample-set format: expected a .npz, a .npy or a folder of PNG files');
}

/**
 * The conditioning labels of a samples .npz (arr_1, as -p inference writes and
 * ADM's sample batches hold), as int32 [N]; null when the file has none.
 */
export function readSampleLabels(p: string, N: number): Int32Array | null {
  if (!listNpz(p).includes('arr_1')) return null;
  const a = readNpz(p, { keys: ['arr_1'] }).arr_1;
  const src = `${p}[arr_1]`;
  if (!['int64', 'int32', 'int16', 'uint8', 'uint16', 'uint32', 'int8'].includes(a.dtype) || a.shape.length !== 1 || a.shape[0] !== N) {
    throw new DataError(src, `labels must be an integer vector [${N}] (one per sample), found ${a.dtype} [${a.shape.join(', ')}]`);
  }
  const out = new Int32Array(N);
  for (let i = 0; i < N; i++) {
    const v = Number(a.data[i] as number | bigint);
    if (!Number.isInteger(v) || v < 0 || v > 2 ** 31 - 1) throw new DataError(src, `label ${i} is ${v}, expected a class index >= 0`);
    out[i] = v;
  }
  return out;
}
