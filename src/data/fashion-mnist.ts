// Fashion-MNIST (Zalando Research; 60k training and 10k test images, 28x28
// grey, 10 classes of clothing) as read from Debian's `dataset-fashion-mnist`
// package (/usr/share/datasets/fashion-mnist/) or any folder holding the four
// IDX files (gzip-compressed or not) under their original names.
//
// The IDX format: 2 zero bytes, a type byte (0x08: unsigned bytes), the
// number of dimensions, then each dimension as a big-endian uint32, then the
// data. Every size is checked against the header and the file length before
// anything is allocated from it, and the gzip output is bounded, so a corrupt
// or hostile file gives an error naming it rather than an out-of-memory.
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';

import { ConfigError, DataError } from '../errors.js';
import type { Batch, Dataset } from './types.js';
import { flipSample } from './types.js';

export const FASHION_MNIST_ROOT = '/usr/share/datasets/fashion-mnist';
export const FASHION_MNIST_SIDE = 28;
export const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'] as const;
export type FashionSplit = 'train' | 't10k';
/** how a 28x28 image becomes image_size: 2 px of background on each side (32), or bilinear resizing */
export type FashionFit = 'pad' | 'resize';

/** Largest decompressed IDX file accepted (the training images are 47 MB). */
export const MAX_IDX_BYTES = 128 << 20;
const INSTALL = 'install Debian\'s package (`apt-get install dataset-fashion-mnist`) or set data.root to a folder holding ' +
  'train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz';

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

/** Parses an unsigned-byte IDX buffer with `ndim` dimensions; every size is checked against the buffer. */
export function parseIdx(buf: Uint8Array, ndim: number, file: string, maxBytes = MAX_IDX_BYTES): IdxArray {
  const head = 4 + 4 * ndim;
  if (buf.length < head) throw new DataError(file, `${buf.length} bytes, shorter than the ${head}-byte IDX header of a ${ndim}-dimensional array (truncated?)`);
  const magic = Array.from(buf.subarray(0, 4), (b) => `0x${b.toString(16).padStart(2, '0')}`).join(' ');
  if (buf[0] !== 0 || buf[1] !== 0 || buf[2] !== 0x08 || buf[3] !== ndim) {
    throw new DataError(file, `bad IDX magic ${magic}: expected 0x00 0x00 0x08 0x0${ndim} (unsigned bytes, ${ndim} dimension${ndim === 1 ? '' : 's'})`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const dims = Array.from({ length: ndim }, (_, i) => view.getUint32(4 + 4 * i, false));
  // a product of uint32s may exceed 2^53: compare step by step against the limit
  let n = 1;
  for (const d of dims) {
    n *= d;
    if (n > maxBytes) throw new DataError(file, `the header declares dimensions ${dims.join(' x ')}, more than the ${maxBytes} bytes accepted`);
  }
  if (buf.length !== head + n) {
    throw new DataError(file, `the header declares ${dims.join(' x ')} = ${n} bytes of data, the file holds ${buf.length - head}${buf.length < head + n ? ' (truncated)' : ' (trailing bytes)'}`);
  }
  return { dims, data: buf.subarray(head) };
}

/** Reads `<name>.gz` (gunzipped in memory, bounded) or `<name>` in `root`. */
export function readIdxFile(root: string, name: string, ndim: number, maxBytes = MAX_IDX_BYTES): IdxArray & { file: string } {
  const gz = path.join(root, `${name}.gz`);
  const plain = path.join(root, name);
  const file = existsSync(gz) ? gz : existsSync(plain) ? plain : null;
  if (!file) throw new DataError(gz, `Fashion-MNIST file missing: ${INSTALL}`);
  const size = statSync(file).size;
  if (size > maxBytes + 4096) throw new DataError(file, `${size} bytes, more than the ${maxBytes} accepted for an IDX file`);
  let raw: Uint8Array = readFileSync(file);
  if (raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      raw = gunzipSync(raw, { maxOutputLength: maxBytes + 4 + 4 * ndim });
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const why = err.code === 'ERR_BUFFER_TOO_LARGE' ? `decompresses to more than the ${maxBytes} bytes accepted` : `not a readable gzip file (${err.message})`;
      throw new DataError(file, why);
    }
  }
  return { ...parseIdx(raw, ndim, file, maxBytes), file };
}

/** One split's images [N, 28, 28] (uint8, 0 = background) and labels [N] in 0..9, cross-checked. */
export function readFashionMnist(root: string, split: FashionSplit, maxBytes = MAX_IDX_BYTES): { images: Uint8Array; labels: Uint8Array; n: number; files: string[] } {
  const im = readIdxFile(root, `${split}-images-idx3-ubyte`, 3, maxBytes);
  const lb = readIdxFile(root, `${split}-labels-idx1-ubyte`, 1, maxBytes);
  const [n, h, w] = im.dims;
  if (h !== FASHION_MNIST_SIDE || w !== FASHION_MNIST_SIDE) throw new DataError(im.file, `images are ${h}x${w}, expected ${FASHION_MNIST_SIDE}x${FASHION_MNIST_SIDE}`);
  if (n === 0) throw new DataError(im.file, 'holds no images');
  if (lb.dims[0] !== n) throw new DataError(lb.file, `${lb.dims[0]} labels for the ${n} images of ${im.file}`);
  const bad = lb.data.findIndex((y) => y >= FASHION_MNIST_CLASSES.length);
  if (bad >= 0) throw new DataError(lb.file, `label ${bad} is ${lb.data[bad]}, expected 0..${FASHION_MNIST_CLASSES.length - 1}`);
  return { images: im.data, labels: lb.data, n, files: [im.file, lb.file] };
}

/** Bilinear sampling of a 28x28 byte image onto s x s (pixel centres aligned, as image resizers do). */
function resizeInto(src: Uint8Array, off: number, s: number, out: Float32Array, o: number): void {
  const S = FASHION_MNIST_SIDE;
  const scale = S / s;
  for (let y = 0; y < s; y++) {
    const fy = Math.min(S - 1, Math.max(0, (y + 0.5) * scale - 0.5));
    const y0 = Math.floor(fy);
    const y1 = Math.min(S - 1, y0 + 1);
    const wy = fy - y0;
    for (let x = 0; x < s; x++) {
      const fx = Math.min(S - 1, Math.max(0, (x + 0.5) * scale - 0.5));
      const x0 = Math.floor(fx);
      const x1 = Math.min(S - 1, x0 + 1);
      const wx = fx - x0;
      const v = (1 - wy) * ((1 - wx) * src[off + y0 * S + x0] + wx * src[off + y0 * S + x1]) + wy * ((1 - wx) * src[off + y1 * S + x0] + wx * src[off + y1 * S + x1]);
      out[o + y * s + x] = v / 127.5 - 1;
    }
  }
}

export interface FashionMnistOptions {
  /** folder of the IDX files (default: Debian's) */
  root?: string | null;
  split: FashionSplit;
  imageSize: number;
  channels: number;
  numClasses: number;
  fit: FashionFit;
}

/** Fashion-MNIST in [-1, 1], [1, S, S], S = 28 as stored, or 32 padded / any size resized. */
export class FashionMnistDataset implements Dataset {
  readonly size: number;
  readonly shape: readonly [number, number, number];
  readonly numClasses = FASHION_MNIST_CLASSES.length;
  readonly description: string;
  readonly badFiles = 0;
  readonly #images: Uint8Array;
  readonly #labels: Uint8Array;
  readonly #side: number;
  readonly #fit: FashionFit;

  constructor(o: FashionMnistOptions) {
    const root = o.root ?? FASHION_MNIST_ROOT;
    const S = o.imageSize;
    if (o.channels !== 1) throw new ConfigError('data.channels', `Fashion-MNIST is grey (1 channel), found channels ${o.channels}`);
    if (o.numClasses !== 0 && o.numClasses !== FASHION_MNIST_CLASSES.length) throw new ConfigError('data.num_classes', `Fashion-MNIST has ${FASHION_MNIST_CLASSES.length} classes; set 10 (conditional) or 0 (unconditional), found ${o.numClasses}`);
    if (o.fit === 'pad' && S < FASHION_MNIST_SIDE) throw new ConfigError('data.image_size', `padding cannot shrink the ${FASHION_MNIST_SIDE}x${FASHION_MNIST_SIDE} images to ${S}; use data.fashion_mnist_fit: resize or image_size >= 28`);
    if (o.fit === 'pad' && (S - FASHION_MNIST_SIDE) % 2 !== 0) throw new ConfigError('data.image_size', `padding adds the same background on each side, so image_size must be 28 + an even number (e.g. 28 or 32), found ${S}`);
    if (!Number.isInteger(S) || S < 4 || S > 256) throw new ConfigError('data.image_size', `expected 4..256 for Fashion-MNIST, found ${S}`);
    const d = readFashionMnist(root, o.split);
    this.#images = d.images;
    this.#labels = d.labels;
    this.#side = S;
    this.#fit = o.fit;
    this.size = d.n;
    this.shape = [1, S, S];
    const how = S === FASHION_MNIST_SIDE ? 'as stored' : o.fit === 'pad' ? `padded with ${(S - FASHION_MNIST_SIDE) / 2} px of background` : 'resized (bilinear)';
    this.description = `Fashion-MNIST ${o.split === 'train' ? 'training' : 'test'} split (${root}): ${d.n} images 1x${S}x${S} (${how}), 10 classes`;
  }

  /** the label of image i (0..9) */
  label(i: number): number {
    return this.#labels[i];
  }

  async load(indices: Int32Array, flips: Uint8Array): Promise<Batch> {
    const n = indices.length;
    const S = this.#side;
    const P = S * S;
    const A = FASHION_MNIST_SIDE * FASHION_MNIST_SIDE;
    const x = new Float32Array(n * P);
    const y = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const k = indices[i];
      if (!(k >= 0 && k < this.size)) throw new RangeError(`fashion-mnist: index ${k} outside [0, ${this.size})`);
      const src = k * A;
      if (S === FASHION_MNIST_SIDE || this.#fit === 'pad') {
        const m = (S - FASHION_MNIST_SIDE) / 2;
        x.fill(-1, i * P, (i + 1) * P);
        for (let r = 0; r < FASHION_MNIST_SIDE; r++) {
          for (let c = 0; c < FASHION_MNIST_SIDE; c++) x[i * P + (r + m) * S + c + m] = this.#images[src + r * FASHION_MNIST_SIDE + c] / 127.5 - 1;
        }
      } else resizeInto(this.#images, src, S, x, i * P);
      y[i] = this.#labels[k];
      if (flips[i]) flipSample(x, i * P, 1, S, S);
    }
    return { x, y };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
