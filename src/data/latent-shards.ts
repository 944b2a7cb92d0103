// Latent data sets in folders:
//
// - speed-train's shard sets (written by `speed-train encode`): manifest.json +
//   shard-NNNNN.npy float32 [n, C, h, w] (UNSCALED VAE latents: the posterior
//   mean, or a sample) + shard-NNNNN-labels.npy int64 [n], and with encode.flip
//   shard-NNNNN-flip.npy (the latents of the mirrored images, same rows). The
//   manifest's latent_scale is authoritative: samples are multiplied by it.
// - fast-DiT's extracted features: <root>/<name>_features/*.npy, each [1, C, h, w]
//   ALREADY scaled, and <root>/<name>_labels/*.npy, each [1] (paired by sorted
//   file name, as fast-DiT's CustomDataset does): used with scale 1.
//
// Neither is loaded whole (ImageNet-256 latents are ~20 GB): each sample is a
// positional read at its offset (shards) or one small file (features). Labels
// of a shard set are read at start-up (8 bytes a sample).
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync, type Stats } from 'node:fs';
import path from 'node:path';

import { DataError } from '../errors.js';
import { readNpy, readNpyHeader } from '../io/npy.js';
import type { Batch, Dataset } from './types.js';
import { flipSample } from './types.js';

export const MANIFEST = 'manifest.json';
export const MANIFEST_FORMAT = 'speed-train-latents';

export interface ShardEntry {
  /** file names inside the shard folder */
  file: string;
  labels: string;
  flip: string | null;
  /** rows in this shard */
  count: number;
  /** index (in the sorted image list) of the shard's first image */
  first_image: number;
  /** images of this shard's range that were skipped (data.skip_bad_files) */
  skipped: number;
}

export interface LatentManifest {
  format: typeof MANIFEST_FORMAT;
  version: 1;
  /** latents in all shards (images encoded) */
  count: number;
  /** [C, h, w] of one latent */
  shape: [number, number, number];
  dtype: 'float32';
  /** samples are multiplied by this for training (the shards hold unscaled latents) */
  latent_scale: number;
  vae: { file: string; sha256: string; down_factor: number; sample_posterior: boolean; seed: number | null };
  image_size: number;
  crop: 'adm_center_crop';
  flip: boolean;
  source: string;
  /** class folder names, label = index (empty: unconditional) */
  classes: string[];
  num_classes: number;
  skipped: number;
  shards: ShardEntry[];
  created: string;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * A file name the manifest gives for a shard: a plain, non-empty name inside the
 * folder (no separators, no leading dot, so neither "" nor ".." reaches the folder
 * itself or its parent).
 */
function plainName(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= 255 && !v.startsWith('.') && !/[/\\\0]/.test(v);
}

/**
 * Reads and checks manifest.json of a shard folder: every field any reader uses,
 * each problem named by its key as the file spells it (shards[3].flip).
 */
export function readManifest(dir: string): LatentManifest {
  const file = path.join(dir, MANIFEST);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(file, `cannot read the latent manifest (${code ?? (e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new DataError(file, `malformed latent manifest: invalid JSON (${(e as Error).message}); the file is truncated or damaged, run \`speed-train encode\` again`);
  }
  const bad = (key: string, expected: string, found: unknown) =>
    new DataError(file, `malformed latent manifest: ${key}: expected ${expected}, found ${found === undefined ? 'nothing (the key is missing)' : clip(JSON.stringify(found))}`);
  if (!isObj(raw) || raw.format !== MANIFEST_FORMAT) throw bad('format', `"${MANIFEST_FORMAT}"`, isObj(raw) ? raw.format : raw);
  const m = raw;
  if (m.version !== 1) throw new DataError(file, `malformed latent manifest: unsupported version ${clip(JSON.stringify(m.version))} (this speed-train reads 1)`);
  if (!isCount(m.count)) throw bad('count', 'a non-negative integer', m.count);
  if (!Array.isArray(m.shape) || m.shape.length !== 3 || !m.shape.every((v) => Number.isSafeInteger(v) && v > 0 && v <= 65536)) {
    throw bad('shape', '[C, h, w] of positive integers', m.shape);
  }
  if (m.dtype !== 'float32') throw bad('dtype', '"float32"', m.dtype);
  if (!(typeof m.latent_scale === 'number' && m.latent_scale > 0 && Number.isFinite(m.latent_scale))) throw bad('latent_scale', 'a positive number', m.latent_scale);
  if (!isObj(m.vae)) throw bad('vae', 'an object {file, sha256, ...}', m.vae);
  for (const k of ['file', 'sha256']) if (typeof m.vae[k] !== 'string') throw bad(`vae.${k}`, 'a string', m.vae[k]);
  if (typeof m.flip !== 'boolean') throw bad('flip', 'true or false', m.flip);
  if (!isCount(m.num_classes)) throw bad('num_classes', 'a non-negative integer', m.num_classes);
  if (!Array.isArray(m.shards) || m.shards.length === 0) throw bad('shards', 'a non-empty list of shard entries', m.shards);
  let total = 0;
  m.shards.forEach((s: unknown, i: number) => {
    const at = `shards[${i}]`;
    if (!isObj(s)) throw bad(at, 'an object {file, labels, flip, count, ...}', s);
    for (const k of ['file', 'labels']) if (!plainName(s[k])) throw bad(`${at}.${k}`, 'a plain file name inside the folder', s[k]);
    if (s.flip !== null && !plainName(s.flip)) throw bad(`${at}.flip`, 'a plain file name inside the folder, or null', s.flip);
    if (m.flip !== (s.flip !== null)) throw bad(`${at}.flip`, m.flip ? 'the flipped shard\'s file name (flip is true)' : 'null (flip is false)', s.flip);
    for (const k of ['count', 'first_image', 'skipped']) if (!isCount(s[k])) throw bad(`${at}.${k}`, 'a non-negative integer', s[k]);
    total += s.count as number;
  });
  if (total !== m.count) throw new DataError(file, `malformed latent manifest: count ${m.count} is not the sum of the shard counts (${total})`);
  return m as unknown as LatentManifest;
}

const clip = (s: string | undefined): string => (s === undefined ? 'undefined' : s.length > 80 ? s.slice(0, 80) + '...' : s);

/** A file the manifest names: it must be a regular file (a folder, or a link to one, is not a shard). */
function shardFile(root: string, name: string): string {
  const f = path.join(root, name);
  let st: Stats;
  try {
    st = statSync(f);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(f, `cannot open the file ${MANIFEST} names (${code ?? (e as Error).message})${code === 'ENOENT' ? ': the shard set is incomplete; run `speed-train encode` again' : ''}`);
  }
  if (!st.isFile()) throw new DataError(f, `${MANIFEST} names it as a shard file, but it is ${st.isDirectory() ? 'a folder' : 'not a regular file'}`);
  return f;
}

function toInt32Labels(file: string, n: number): Int32Array {
  const l = readNpy(file);
  if (l.shape.length !== 1 || l.shape[0] !== n) throw new DataError(file, `labels must be [${n}] (the shard's rows), found shape [${l.shape}]`);
  if (l.dtype === 'int64') return Int32Array.from(l.data as BigInt64Array, (v) => (v > 2147483647n || v < -2147483648n ? -1 : Number(v)));
  if (l.dtype === 'int32' || l.dtype === 'uint8') return Int32Array.from(l.data as Int32Array);
  throw new DataError(file, `labels must be integers (int64, int32 or uint8), found ${l.dtype}`);
}

export interface LatentFolderOptions {
  root: string;
  numClasses: number;
  /** expected [C, H, W] (from the model config) */
  shape: readonly [number, number, number];
  skipBadFiles: boolean;
  /** data.latent_scale as configured: ignored (with a note) where the folder says otherwise */
  configuredScale: number;
  warn?: (msg: string) => void;
}

const MAX_OPEN = 32;

/** Keeps at most MAX_OPEN shard files open (least recently used closed first). */
class FdCache {
  private readonly fds = new Map<string, number>();
  get(file: string): number {
    let fd = this.fds.get(file);
    if (fd !== undefined) {
      this.fds.delete(file);
      this.fds.set(file, fd);
      return fd;
    }
    if (this.fds.size >= MAX_OPEN) {
      const [old, ofd] = this.fds.entries().next().value as [string, number];
      closeSync(ofd);
      this.fds.delete(old);
    }
    try {
      fd = openSync(file, 'r');
    } catch (e) {
      throw new DataError(file, `cannot open shard: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    this.fds.set(file, fd);
    return fd;
  }
  closeAll(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

/** Throws naming the file and sample (`where(i)`: [file, what]) of the first non-finite value. */
function checkFinite(x: Float32Array, per: number, where: (i: number) => [string, string]): void {
  for (let k = 0; k < x.length; k++) {
    if (!Number.isFinite(x[k])) {
      const [file, what] = where(Math.floor(k / per));
      throw new DataError(file, `${what} holds a non-finite value (${x[k]})`);
    }
  }
}

/** A speed-train shard set (manifest.json + shards). */
export class LatentShardsDataset implements Dataset {
  readonly size: number;
  readonly shape: readonly [number, number, number];
  readonly numClasses: number;
  readonly description: string;
  readonly badFiles: number;
  readonly manifest: LatentManifest;
  readonly scale: number;
  private readonly files: { main: string; flip: string | null; offset: number; flipOffset: number }[] = [];
  /** per usable sample: shard index, row in shard, label */
  private readonly shardOf: Int32Array;
  private readonly rowOf: Int32Array;
  private readonly labelOf: Int32Array;
  private readonly rowBytes: number;
  private readonly fds = new FdCache();

  constructor(private readonly o: LatentFolderOptions) {
    const m = readManifest(o.root);
    const mf = path.join(o.root, MANIFEST);
    const [C, H, W] = m.shape;
    if (C !== o.shape[0] || H !== o.shape[1] || W !== o.shape[2]) {
      throw new DataError(mf, `latents are [${m.shape}] per sample, the model expects [${o.shape}] (model.in_channels, model.input_size)`);
    }
    const hi = Math.max(1, o.numClasses);
    if (o.numClasses > 0 && m.num_classes > o.numClasses) {
      (o.warn ?? console.warn)(`warning: ${mf}: the images have ${m.num_classes} classes, data.num_classes is ${o.numClasses}; samples with labels >= ${o.numClasses} are bad`);
    }
    const warn = o.warn ?? console.warn;
    this.rowBytes = C * H * W * 4;
    const shardOf: number[] = [];
    const rowOf: number[] = [];
    const labelOf: number[] = [];
    let bad = 0;
    m.shards.forEach((s, k) => {
      const main = shardFile(o.root, s.file);
      const flip = s.flip ? shardFile(o.root, s.flip) : null;
      const check = (f: string) => {
        const h = readNpyHeader(f);
        if (h.dtype !== 'float32' || h.shape.length !== 4 || h.shape[0] !== s.count || h.shape[1] !== C || h.shape[2] !== H || h.shape[3] !== W) {
          throw new DataError(f, `shard must be float32 [${s.count}, ${C}, ${H}, ${W}] (${MANIFEST}), found ${h.dtype} [${h.shape}]`);
        }
        return h.dataOffset;
      };
      const offset = check(main);
      const flipOffset = flip ? check(flip) : 0;
      this.files.push({ main, flip, offset, flipOffset });
      const labelsFile = shardFile(o.root, s.labels);
      const labels = toInt32Labels(labelsFile, s.count);
      for (let r = 0; r < s.count; r++) {
        if (labels[r] >= 0 && labels[r] < hi) { shardOf.push(k); rowOf.push(r); labelOf.push(labels[r]); continue; }
        const msg = `label ${labels[r]} of row ${r} is outside [0, ${hi}) (data.num_classes)`;
        if (!o.skipBadFiles) throw new DataError(labelsFile, `${msg} (set data.skip_bad_files: true to skip such samples)`);
        if (bad === 0) warn(`warning: ${labelsFile}: ${msg}; skipping (further ones counted)`);
        bad++;
      }
    });
    if (shardOf.length === 0) throw new DataError(mf, 'no sample has a usable label');
    this.shardOf = Int32Array.from(shardOf);
    this.rowOf = Int32Array.from(rowOf);
    this.labelOf = Int32Array.from(labelOf);
    this.manifest = m;
    this.scale = m.latent_scale;
    if (o.configuredScale !== 1 && o.configuredScale !== m.latent_scale) {
      warn(`note: data.latent_scale ${o.configuredScale} is ignored: ${mf} says ${m.latent_scale} (the shards hold unscaled latents)`);
    }
    this.badFiles = bad;
    this.size = shardOf.length;
    this.shape = [C, H, W];
    this.numClasses = o.numClasses;
    this.description = `latent shards ${o.root}: ${this.size} x [${C}, ${H}, ${W}] in ${m.shards.length} shards, scale ${m.latent_scale} (manifest)` +
      (m.flip ? ', with flipped copies' : '') + (bad ? `, ${bad} samples skipped` : '');
  }

  load(indices: Int32Array, flips: Uint8Array): Promise<Batch> {
    const [C, H, W] = this.shape;
    const per = C * H * W;
    const n = indices.length;
    const x = new Float32Array(n * per);
    const bytes = new Uint8Array(x.buffer);
    const y = new Int32Array(n);
    const read: string[] = [];
    for (let i = 0; i < n; i++) {
      const j = indices[i];
      const f = this.files[this.shardOf[j]];
      const row = this.rowOf[j];
      // A flipped sample is the latent of the flipped image when the set has one
      // (encode.flip), else the latent mirrored (what the plain .npy loader does).
      const useFlipFile = flips[i] === 1 && f.flip !== null;
      const file = useFlipFile ? f.flip! : f.main;
      read.push(file);
      const got = readSync(this.fds.get(file), bytes, i * this.rowBytes, this.rowBytes, (useFlipFile ? f.flipOffset : f.offset) + row * this.rowBytes);
      if (got !== this.rowBytes) throw new DataError(file, `short read at row ${row} (file truncated?)`);
      if (flips[i] === 1 && !useFlipFile) flipSample(x, i * per, C, H, W);
      y[i] = this.labelOf[j];
    }
    if (this.scale !== 1) for (let k = 0; k < x.length; k++) x[k] *= this.scale;
    checkFinite(x, per, (i) => [read[i], `row ${this.rowOf[indices[i]]}`]);
    return Promise.resolve({ x, y });
  }

  close(): Promise<void> {
    this.fds.closeAll();
    return Promise.resolve();
  }
}

/** The fast-DiT layout under `root`, if it is one: the features and labels folders. */
export function findFeatureFolders(root: string): { features: string; labels: string } | null {
  const pair = (f: string) => f.replace(/_features$/, '_labels');
  if (/_features$/.test(path.basename(root))) {
    const l = pair(root);
    return existsSync(l) ? { features: root, labels: l } : null;
  }
  let names: string[];
  try {
    names = readdirSync(root).sort();
  } catch {
    return null;
  }
  for (const n of names) {
    if (/_features$/.test(n) && names.includes(pair(n))) return { features: path.join(root, n), labels: path.join(root, pair(n)) };
  }
  return null;
}

/** fast-DiT's per-image feature files (already scaled by 0.18215: used with scale 1). */
export class FeatureFolderDataset implements Dataset {
  readonly size: number;
  readonly shape: readonly [number, number, number];
  readonly numClasses: number;
  readonly description: string;
  readonly badFiles = 0;
  private readonly feats: string[];
  private readonly labs: string[];

  constructor(private readonly o: LatentFolderOptions, dirs: { features: string; labels: string }) {
    const list = (d: string) => readdirSync(d).filter((n) => n.endsWith('.npy') && !n.startsWith('.')).sort();
    const f = list(dirs.features);
    const l = list(dirs.labels);
    if (f.length === 0) throw new DataError(dirs.features, 'no .npy feature files');
    if (f.length !== l.length) throw new DataError(dirs.labels, `${l.length} label files for ${f.length} feature files in ${dirs.features}`);
    for (let i = 0; i < f.length; i++) {
      if (f[i] !== l[i]) throw new DataError(path.join(dirs.labels, l[i]), `label file does not pair with feature file ${f[i]} (sorted names must match)`);
    }
    this.feats = f.map((n) => path.join(dirs.features, n));
    this.labs = l.map((n) => path.join(dirs.labels, n));
    const h = readNpyHeader(this.feats[0]);
    const s = h.shape.length === 4 && h.shape[0] === 1 ? h.shape.slice(1) : h.shape;
    if (h.dtype !== 'float32' || s.length !== 3 || s[0] !== o.shape[0] || s[1] !== o.shape[1] || s[2] !== o.shape[2]) {
      throw new DataError(this.feats[0], `features must be float32 [1, ${o.shape}] (model.in_channels, model.input_size), found ${h.dtype} [${h.shape}]`);
    }
    if (o.configuredScale !== 1) {
      (o.warn ?? console.warn)(`note: data.latent_scale ${o.configuredScale} is ignored: fast-DiT features in ${dirs.features} are already scaled (scale 1)`);
    }
    this.size = f.length;
    this.shape = [o.shape[0], o.shape[1], o.shape[2]];
    this.numClasses = o.numClasses;
    this.description = `fast-DiT features ${dirs.features}: ${this.size} x [${this.shape}], already scaled (scale 1)`;
  }

  load(indices: Int32Array, flips: Uint8Array): Promise<Batch> {
    const [C, H, W] = this.shape;
    const per = C * H * W;
    const n = indices.length;
    const x = new Float32Array(n * per);
    const y = new Int32Array(n);
    const hi = Math.max(1, this.o.numClasses);
    for (let i = 0; i < n; i++) {
      const file = this.feats[indices[i]];
      const a = readNpy(file);
      if (a.dtype !== 'float32' || a.data.length !== per) throw new DataError(file, `features must be float32 [1, ${C}, ${H}, ${W}], found ${a.dtype} [${a.shape}]`);
      x.set(a.data as Float32Array, i * per);
      if (flips[i]) flipSample(x, i * per, C, H, W);
      const lf = this.labs[indices[i]];
      const l = readNpy(lf);
      if (l.data.length !== 1) throw new DataError(lf, `label must hold one value, found shape [${l.shape}]`);
      const v = Number((l.data as ArrayLike<number | bigint>)[0]);
      if (!Number.isInteger(v) || v < 0 || v >= hi) throw new DataError(lf, `label ${v} is outside [0, ${hi}) (data.num_classes)`);
      y[i] = v;
    }
    checkFinite(x, per, (i) => [this.feats[indices[i]], 'the feature array']);
    return Promise.resolve({ x, y });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
