// Pre-encoded latents: a float32 .npy [N, C, H, W] (encoded elsewhere, e.g. with
// the SD VAE) and an integer labels .npy [N]. Rows are read from disk per batch,
// so data sets larger than memory work.
import { closeSync, existsSync, openSync, readSync } from 'node:fs';

import { DataError } from '../errors.js';
import { readNpy, readNpyHeader } from '../io/npy.js';
import type { Batch, Dataset } from './types.js';
import { flipSample } from './types.js';

export interface LatentsOptions {
  file: string;
  /** labels .npy (default: <file without .npy>_labels.npy) */
  labels: string | null;
  numClasses: number;
  /** expected [C, H, W] (from the model config) */
  shape: readonly [number, number, number];
  scale: number;
  skipBadFiles: boolean;
  warn?: (msg: string) => void;
}

export const defaultLabelsPath = (file: string): string => file.replace(/\.npy$/i, '') + '_labels.npy';

export class LatentsDataset implements Dataset {
  readonly size: number;
  readonly shape: readonly [number, number, number];
  readonly numClasses: number;
  readonly description: string;
  readonly badFiles: number;
  private readonly fd: number;
  private readonly dataOffset: number;
  private readonly rowBytes: number;
  /** usable rows (labels in range) and their labels */
  private readonly rows: Int32Array;
  private readonly rowLabels: Int32Array;

  constructor(private readonly o: LatentsOptions) {
    if (!existsSync(o.file)) {
      // The usual first-run mistake: training a latent config before encoding its images.
      throw new DataError(o.file, 'not found: data.root names the latents (a folder of shards written by `speed-train encode`, ' +
        'or a float32 .npy [N, C, H, W]); run `speed-train encode -c CONFIG` with this config first ' +
        '(it encodes encode.images into encode.out, else data.root), or point data.root at existing latents');
    }
    const h = readNpyHeader(o.file);
    if (h.dtype !== 'float32') throw new DataError(o.file, `latents must be float32, found ${h.dtype}`);
    if (h.shape.length !== 4) throw new DataError(o.file, `latents must be [N, C, H, W], found shape [${h.shape}]`);
    const [N, C, H, W] = h.shape;
    if (C !== o.shape[0] || H !== o.shape[1] || W !== o.shape[2]) {
      throw new DataError(o.file, `latents are [${C}, ${H}, ${W}] per sample, the model expects [${o.shape}] (model.in_channels, model.input_size)`);
    }
    if (N === 0) throw new DataError(o.file, 'no samples (N = 0)');
    const labelsFile = o.labels ?? defaultLabelsPath(o.file);
    let labels: Int32Array;
    if (o.numClasses === 0 && !o.labels && !existsSync(labelsFile)) {
      labels = new Int32Array(N);
    } else {
      const l = readNpy(labelsFile);
      if (l.shape.length !== 1 || l.shape[0] !== N) {
        throw new DataError(labelsFile, `labels must be [N] with N = ${N} (the latents' count), found shape [${l.shape}]`);
      }
      if (l.dtype === 'int64') labels = Int32Array.from(l.data as BigInt64Array, (v) => (v > 2147483647n || v < -2147483648n ? -1 : Number(v)));
      else if (l.dtype === 'int32' || l.dtype === 'uint8') labels = Int32Array.from(l.data as Int32Array);
      else throw new DataError(labelsFile, `labels must be integers (int64, int32 or uint8), found ${l.dtype}`);
    }
    const keep: number[] = [];
    let bad = 0;
    const hi = Math.max(1, o.numClasses);
    for (let i = 0; i < N; i++) {
      if (labels[i] >= 0 && labels[i] < hi) { keep.push(i); continue; }
      const msg = `label ${labels[i]} of sample ${i} is outside [0, ${hi}) (data.num_classes)`;
      if (!o.skipBadFiles) throw new DataError(labelsFile, `${msg} (set data.skip_bad_files: true to skip such samples)`);
      if (bad === 0) (o.warn ?? console.warn)(`warning: ${labelsFile}: ${msg}; skipping (further ones counted)`);
      bad++;
    }
    if (keep.length === 0) throw new DataError(labelsFile, 'no sample has a usable label');
    this.rows = Int32Array.from(keep);
    this.rowLabels = Int32Array.from(keep, (i) => labels[i]);
    this.badFiles = bad;
    this.size = keep.length;
    this.shape = [C, H, W];
    this.numClasses = o.numClasses;
    this.dataOffset = h.dataOffset;
    this.rowBytes = C * H * W * 4;
    this.fd = openSync(o.file, 'r');
    this.description = `latents ${o.file}: ${this.size} x [${C}, ${H}, ${W}], scale ${o.scale}` + (bad ? `, ${bad} samples skipped` : '');
  }

  load(indices: Int32Array, flips: Uint8Array): Promise<Batch> {
    const [C, H, W] = this.shape;
    const n = indices.length;
    const x = new Float32Array(n * C * H * W);
    const bytes = new Uint8Array(x.buffer);
    const y = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const row = this.rows[indices[i]];
      const got = readSync(this.fd, bytes, i * this.rowBytes, this.rowBytes, this.dataOffset + row * this.rowBytes);
      if (got !== this.rowBytes) throw new DataError(this.o.file, `short read at sample ${row} (file truncated?)`);
      y[i] = this.rowLabels[indices[i]];
      if (flips[i]) flipSample(x, i * C * H * W, C, H, W);
    }
    if (this.o.scale !== 1) for (let k = 0; k < x.length; k++) x[k] *= this.o.scale;
    for (let k = 0; k < x.length; k++) {
      if (!Number.isFinite(x[k])) {
        const s = this.rows[indices[Math.floor(k / (C * H * W))]];
        throw new DataError(this.o.file, `sample ${s} holds a non-finite value`);
      }
    }
    return Promise.resolve({ x, y });
  }

  close(): Promise<void> {
    closeSync(this.fd);
    return Promise.resolve();
  }
}
