// scikit-learn's handwritten digits (8x8 grey, 1797 images, labels 0-9) as a
// small real-data set for the speed-up experiment. The file is committed
// (datasets/sklearn-digits/, BSD-3-Clause, see its README) because CI has no
// scikit-learn; data.root may point at another copy (e.g. the installed
// package's sklearn/datasets/data/digits.csv.gz).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';

import { ConfigError, DataError } from '../errors.js';
import type { Batch, Dataset } from './types.js';
import { flipSample } from './types.js';

/** The committed copy: two levels above src/data and dist/data. */
export const DIGITS_FILE = fileURLToPath(new URL('../../datasets/sklearn-digits/digits.csv.gz', import.meta.url));
export const DIGITS_SIZE = 8;
const MAX_BYTES = 16 << 20;

/** Parses the CSV (gzip or plain): rows of 64 pixels in 0..16 and a label in 0..9. */
export function parseDigits(text: string, file: string): { x: Uint8Array; y: Int32Array } {
  const rows = text.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  if (rows.length === 0) throw new DataError(file, `no rows; expected lines of 64 pixel values and a label`);
  const x = new Uint8Array(rows.length * 64);
  const y = new Int32Array(rows.length);
  rows.forEach((row, i) => {
    const v = row.split(',').map(Number);
    if (v.length !== 65) throw new DataError(file, `line ${i + 1} has ${v.length} values, expected 65 (64 pixels and a label)`);
    for (let j = 0; j < 64; j++) {
      if (!Number.isInteger(v[j]) || v[j] < 0 || v[j] > 16) throw new DataError(file, `line ${i + 1}, pixel ${j}: expected an integer in 0..16, found ${JSON.stringify(row.split(',')[j])}`);
      x[i * 64 + j] = v[j];
    }
    if (!Number.isInteger(v[64]) || v[64] < 0 || v[64] > 9) throw new DataError(file, `line ${i + 1}: label must be an integer in 0..9, found ${JSON.stringify(row.split(',')[64])}`);
    y[i] = v[64];
  });
  return { x, y };
}

export function readDigits(file = DIGITS_FILE): { x: Uint8Array; y: Int32Array } {
  if (!existsSync(file)) throw new DataError(file, `the digits file is missing (it is committed under datasets/sklearn-digits/; scikit-learn ships it as sklearn/datasets/data/digits.csv.gz)`);
  const size = statSync(file).size;
  if (size > MAX_BYTES) throw new DataError(file, `${size} bytes, more than the ${MAX_BYTES} expected of the digits CSV`);
  let raw = readFileSync(file);
  if (raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      raw = gunzipSync(raw, { maxOutputLength: 4 * MAX_BYTES });
    } catch (e) {
      throw new DataError(file, `not a readable gzip file (${(e as Error).message})`);
    }
  }
  return parseDigits(raw.toString('utf8'), file);
}

export class DigitsDataset implements Dataset {
  readonly size: number;
  readonly shape: readonly [number, number, number] = [1, DIGITS_SIZE, DIGITS_SIZE];
  readonly numClasses = 10;
  readonly description: string;
  readonly badFiles = 0;
  readonly #x: Uint8Array;
  readonly #y: Int32Array;

  constructor(o: { file?: string; imageSize: number; channels: number }) {
    const file = o.file ?? DIGITS_FILE;
    if (o.imageSize !== DIGITS_SIZE) throw new ConfigError('data.image_size', `the digits are ${DIGITS_SIZE}x${DIGITS_SIZE}, found image_size ${o.imageSize}`);
    if (o.channels !== 1) throw new ConfigError('data.channels', `the digits are grey (1 channel), found channels ${o.channels}`);
    const d = readDigits(file);
    this.#x = d.x;
    this.#y = d.y;
    this.size = d.y.length;
    this.description = `handwritten digits (scikit-learn, ${file === DIGITS_FILE ? 'committed copy' : file}): ${this.size} images 1x8x8, 10 classes`;
  }

  async load(indices: Int32Array, flips: Uint8Array): Promise<Batch> {
    const n = indices.length;
    const x = new Float32Array(n * 64);
    const y = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const k = indices[i];
      if (!(k >= 0 && k < this.size)) throw new RangeError(`digits: index ${k} outside [0, ${this.size})`);
      // 0..16 -> [-1, 1]
      for (let j = 0; j < 64; j++) x[i * 64 + j] = this.#x[k * 64 + j] / 8 - 1;
      y[i] = this.#y[k];
      if (flips[i]) flipSample(x, i * 64, 1, 8, 8);
    }
    return { x, y };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
