// Loading image sets for evaluation: samples.npz (arr_0 uint8 [N, H, W, C], the
// ADM evaluator's layout), an .npy of the same, or a folder of PNG files
// (PNG/JPEG/WebP, searched recursively in sorted order, so class subfolders work).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_LIMITS, decodeImageFile, isImageName, type ImageLimits } from '../data/image-decode.js';
import { DataError } from '../errors.js';
import { readNpy, type NdArray } from '../io/npy.js';
import { listNpz, readNpz } from '../io/npz.js';
import type { ImageBatch } from './features.js';

export interface ImageSet extends ImageBatch {
  /** where the images came from (for reports) */
  source: string;
}

/** Checks an array is uint8 images [N, H, W, C] (or [N, H, W], read as C = 1) and wraps it. */
export function imageSetFromArray(arr: NdArray, source: string): ImageSet {
  if (arr.dtype !== 'uint8') {
    throw new DataError(source, `images must be uint8 [N, H, W, C] in 0..255, found dtype ${arr.dtype}`);
  }
  const s = arr.shape;
  if (s.length === 3) return { data: arr.data as Uint8Array, N: s[0], H: s[1], W: s[2], C: 1, source };
  if (s.length !== 4) throw new DataError(source, `images must be [N, H, W, C], found shape [${s.join(', ')}]`);
  if (![1, 3, 4].includes(s[3])) {
    const hint = [1, 3, 4].includes(s[1]) ? ' (this looks like [N, C, H, W]: transpose to channels-last)' : '';
    throw new DataError(source, `images must be [N, H, W, C] with C = 1, 3 or 4, found shape [${s.join(', ')}]${hint}`);
  }
  return { data: arr.data as Uint8Array, N: s[0], H: s[1], W: s[2], C: s[3], source };
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
