// A folder of images (JPEG, PNG, WebP), one subfolder per class (labels =
// subfolders sorted by name) or flat (unconditional, all labelled 0; with
// data.num_classes 0 subfolders are only a layout, every image labelled 0), decoded
// in a worker thread. Problems are found early where that is cheap (empty
// folders, symlink loops, dangling links, bad headers, sizes and pixel counts
// above the limits) and name the file.
import { lstatSync, readdirSync, statSync, type Stats } from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';

import { DataError } from '../errors.js';
import type { DecodeReply, DecodeRequest } from './decode-worker.js';
import { DEFAULT_LIMITS, isImageName, readImageHeader, type ImageLimits } from './image-decode.js';
import type { Batch, Dataset } from './types.js';

export interface ImageFolderOptions {
  root: string;
  imageSize: number;
  channels: number;
  numClasses: number;
  centerCrop: boolean;
  skipBadFiles: boolean;
  limits?: ImageLimits;
  /** the config key that names root, for messages (default data.root) */
  rootKey?: string;
  /** where warnings go (default: console.warn) */
  warn?: (msg: string) => void;
}

/** stat that follows links, with a loop or a dangling link said in words. */
export function statPath(p: string): Stats {
  try {
    return statSync(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new DataError(p, 'symbolic link loop (ELOOP): the link resolves to itself');
    if (code === 'ENOENT') {
      let link = false;
      try { link = lstatSync(p).isSymbolicLink(); } catch { /* not there at all */ }
      throw new DataError(p, link ? 'dangling symbolic link: its target does not exist' : 'not found');
    }
    if (code === 'EACCES' || code === 'EPERM') throw new DataError(p, `permission denied (${code})`);
    throw new DataError(p, `cannot stat: ${code ?? (e as Error).message}`);
  }
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch (e) {
    throw new DataError(dir, `cannot list folder: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

export interface ImageFolderScan {
  files: string[];
  labels: Int32Array;
  /** class folder names (empty for a flat folder) */
  classes: string[];
  skipped: number;
}

/** Files and labels of an image folder, checked (headers and limits, not pixels). */
export function scanImageFolder(o: ImageFolderOptions): ImageFolderScan {
  const warn = o.warn ?? ((m: string) => console.warn(m));
  const lim = o.limits ?? DEFAULT_LIMITS;
  let rootStat: Stats;
  try {
    rootStat = statPath(o.root);
  } catch (e) {
    throw new DataError(o.root, `image folder not usable (${o.rootKey ?? 'data.root'}): ${(e as DataError).message.slice(o.root.length + 2)}`);
  }
  if (!rootStat.isDirectory()) throw new DataError(o.root, `image folder not found (${o.rootKey ?? 'data.root'} is not a folder)`);
  const files: string[] = [];
  const labels: number[] = [];
  let skipped = 0;
  const problem = (file: string, msg: string) => {
    if (!o.skipBadFiles) throw new DataError(file, `${msg} (set data.skip_bad_files: true to skip such files)`);
    warn(`warning: skipping ${file}: ${msg}`);
    skipped++;
  };
  /** Entries of a folder that are usable: stat'ed (links followed), loops and dangling links reported. */
  const entriesOf = (dir: string) => {
    const out: { name: string; p: string; dir: boolean }[] = [];
    for (const name of listDir(dir)) {
      if (name.startsWith('.')) continue;
      const p = path.join(dir, name);
      let st: Stats;
      try {
        st = statPath(p);
      } catch (e) {
        problem(p, (e as DataError).message.slice(p.length + 2));
        continue;
      }
      out.push({ name, p, dir: st.isDirectory() });
    }
    return out;
  };
  const add = (file: string, label: number) => {
    let size: { width: number; height: number };
    try {
      size = readImageHeader(file, lim);
    } catch (e) {
      problem(file, (e as DataError).message.slice(file.length + 2));
      return;
    }
    if (!o.centerCrop && (size.width !== o.imageSize || size.height !== o.imageSize)) {
      problem(file, `image is ${size.width}x${size.height}, expected ${o.imageSize}x${o.imageSize} (data.image_size; or set data.center_crop: true)`);
      return;
    }
    files.push(file);
    labels.push(label);
  };
  const top = entriesOf(o.root);
  const subdirs = top.filter((e) => e.dir).map((e) => e.name);
  if (o.numClasses === 0 && subdirs.length > 0) {
    // Unconditional data in subfolders (FFHQ ships as 00000/, 01000/, ...): every
    // image of the folder and its subfolders (one level), all labelled 0.
    for (const e of top) if (!e.dir && isImageName(e.name)) add(e.p, 0);
    for (const d of subdirs) for (const e of entriesOf(path.join(o.root, d))) if (!e.dir && isImageName(e.name)) add(e.p, 0);
    if (files.length === 0 && skipped === 0) throw new DataError(o.root, 'empty image folder: no .jpg/.jpeg/.png/.webp files in it or its subfolders');
    if (files.length === 0) throw new DataError(o.root, 'no usable images found');
    return { files, labels: Int32Array.from(labels), classes: [], skipped };
  }
  const classes = subdirs;
  if (classes.length === 0) {
    // No class subfolders: an unconditional folder of images, all labelled 0.
    const imgs = top.filter((e) => isImageName(e.name));
    if (imgs.length === 0) throw new DataError(o.root, 'empty image folder: no class subfolders and no .jpg/.jpeg/.png/.webp files');
    for (const e of imgs) add(e.p, 0);
  } else {
    if (o.numClasses > 0 && classes.length > o.numClasses) {
      throw new DataError(path.join(o.root, classes[o.numClasses]),
        `class folder #${o.numClasses} gives label ${o.numClasses}, outside data.num_classes = ${o.numClasses} (${classes.length} class folders found)`);
    }
    classes.forEach((cls, label) => {
      const dir = path.join(o.root, cls);
      const imgs = entriesOf(dir).filter((e) => !e.dir && isImageName(e.name));
      if (imgs.length === 0) {
        if (!o.skipBadFiles) throw new DataError(dir, 'empty class folder: no .jpg/.jpeg/.png/.webp files (set data.skip_bad_files: true to allow)');
        warn(`warning: class folder ${dir} holds no images`);
      }
      for (const e of imgs) add(e.p, label);
    });
  }
  if (files.length === 0) throw new DataError(o.root, 'no usable images found');
  return { files, labels: Int32Array.from(labels), classes, skipped };
}

function workerUrl(): URL {
  // Under tsx (tests, dev) this module is .ts and so is its worker.
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  return new URL(`./decode-worker${ext}`, import.meta.url);
}

/** A new decode worker thread (decode-worker.ts). */
export function startDecodeWorker(): Worker {
  const url = workerUrl();
  // A .ts worker (tests, dev under tsx) is entered through a dynamic import,
  // which goes through tsx's loader; Node 20 does not hook a worker's entry file.
  return url.pathname.endsWith('.ts')
    ? new Worker(`import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((t) => { t.register(); return import(${JSON.stringify(url.href)}); });`, { eval: true })
    : new Worker(url);
}

export class ImageFolderDataset implements Dataset {
  readonly size: number;
  readonly shape: readonly [number, number, number];
  readonly numClasses: number;
  readonly description: string;
  private bad: number;
  private readonly files: string[];
  private readonly labels: Int32Array;
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (r: DecodeReply) => void; reject: (e: Error) => void }>();
  private readonly warn: (msg: string) => void;
  /** files found bad while training: warned about and counted once each, however often drawn */
  private readonly badSeen = new Set<string>();

  constructor(private readonly o: ImageFolderOptions) {
    const scan = scanImageFolder(o);
    this.files = scan.files;
    this.labels = scan.labels;
    this.bad = scan.skipped;
    this.size = scan.files.length;
    this.shape = [o.channels, o.imageSize, o.imageSize];
    this.numClasses = o.numClasses;
    this.warn = o.warn ?? ((m: string) => console.warn(m));
    this.description = `image folder ${o.root}: ${this.size} images in ${Math.max(1, scan.classes.length)} classes` +
      (scan.skipped ? `, ${scan.skipped} bad files skipped` : '');
  }

  get badFiles(): number {
    return this.bad;
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const w = startDecodeWorker();
    w.on('message', (r: DecodeReply) => {
      const p = this.pending.get(r.id);
      this.pending.delete(r.id);
      // An idle worker must not keep the process alive; a busy one must. Not once
      // close() has begun: see there.
      if (this.pending.size === 0 && this.worker === w) w.unref();
      p?.resolve(r);
    });
    const failAll = (e: Error) => {
      for (const p of this.pending.values()) p.reject(new DataError(this.o.root, `decode worker failed: ${e.message}`));
      this.pending.clear();
      this.worker = undefined;
    };
    w.on('error', failAll);
    w.on('exit', (code) => { if (this.pending.size) failAll(new Error(`exited with code ${code}`)); });
    w.unref();
    this.worker = w;
    return w;
  }

  async load(indices: Int32Array, flips: Uint8Array): Promise<Batch> {
    const files = Array.from(indices, (i) => this.files[i]);
    const y = Int32Array.from(indices, (i) => this.labels[i]);
    const id = this.nextId++;
    const req: DecodeRequest = { id, files, flips: Uint8Array.from(flips), opts: { size: this.o.imageSize, channels: this.o.channels, centerCrop: this.o.centerCrop, limits: this.o.limits ?? DEFAULT_LIMITS } };
    const reply = await new Promise<DecodeReply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      const w = this.ensureWorker();
      w.ref();
      w.postMessage(req);
    });
    const x = reply.x;
    if (reply.bad.length > 0) {
      if (!this.o.skipBadFiles) {
        const b = reply.bad[0];
        throw new DataError(b.file, `cannot decode: ${b.reason} (set data.skip_bad_files: true to skip such files)`);
      }
      const badSet = new Set(reply.bad.map((b) => b.i));
      const good = [...Array(indices.length).keys()].find((i) => !badSet.has(i));
      if (good === undefined) throw new DataError(reply.bad[0].file, 'every image of a batch failed to decode');
      // Keep the batch full: a bad sample is replaced by a good one of the same batch.
      const per = x.length / indices.length;
      for (const b of reply.bad) {
        if (!this.badSeen.has(b.file)) {
          this.badSeen.add(b.file);
          this.bad++;
          this.warn(`warning: skipping ${b.file}: ${b.reason} (said once; the file is replaced whenever it is drawn)`);
        }
        x.copyWithin(b.i * per, good * per, (good + 1) * per);
        y[b.i] = y[good];
      }
    }
    return { x, y };
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    if (!w) return;
    // The worker stays ref'd until it has exited. Otherwise a reply arriving while
    // terminate() is pending (the loader's prefetch of a batch nobody takes) unref'd
    // the idle worker, the event loop emptied with terminate()'s promise unresolved,
    // and the process exited 0 in the middle of train()'s cleanup: after
    // "checkpoint:", without the "trained" line and the sample grid.
    w.ref();
    for (const p of this.pending.values()) p.reject(new DataError(this.o.root, 'the data set was closed before this batch was read'));
    this.pending.clear();
    await w.terminate();
  }
}
