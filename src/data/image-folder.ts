// A folder of PNG images, one subfolder per class (labels = subfolders sorted
// by name), decoded in a worker thread. Problems are found early where that is
// cheap (empty folders, bad PNG headers, sizes) and name the file.
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';

import { DataError } from '../errors.js';
import type { DecodeReply, DecodeRequest } from './decode-worker.js';
import { readPngSize } from './png.js';
import type { Batch, Dataset } from './types.js';

export interface ImageFolderOptions {
  root: string;
  imageSize: number;
  channels: number;
  numClasses: number;
  centerCrop: boolean;
  skipBadFiles: boolean;
  /** where warnings go (default: console.warn) */
  warn?: (msg: string) => void;
}

const isPng = (n: string) => n.toLowerCase().endsWith('.png') && !n.startsWith('.');

/** Files and labels of an image folder, checked. */
export function scanImageFolder(o: ImageFolderOptions): { files: string[]; labels: Int32Array; classes: string[]; skipped: number } {
  const warn = o.warn ?? ((m: string) => console.warn(m));
  if (!existsSync(o.root) || !statSync(o.root).isDirectory()) throw new DataError(o.root, 'image folder not found (data.root)');
  const entries = readdirSync(o.root).filter((n) => !n.startsWith('.')).sort();
  const classes = entries.filter((n) => statSync(path.join(o.root, n)).isDirectory());
  const files: string[] = [];
  const labels: number[] = [];
  let skipped = 0;
  const problem = (file: string, msg: string) => {
    if (!o.skipBadFiles) throw new DataError(file, `${msg} (set data.skip_bad_files: true to skip such files)`);
    warn(`warning: skipping ${file}: ${msg}`);
    skipped++;
  };
  const add = (file: string, label: number) => {
    let size: { width: number; height: number };
    try {
      size = readPngSize(file);
    } catch (e) {
      problem(file, (e as Error).message);
      return;
    }
    if (!o.centerCrop && (size.width !== o.imageSize || size.height !== o.imageSize)) {
      problem(file, `image is ${size.width}x${size.height}, expected ${o.imageSize}x${o.imageSize} (data.image_size; or set data.center_crop: true)`);
      return;
    }
    files.push(file);
    labels.push(label);
  };
  if (classes.length === 0) {
    // No class subfolders: an unconditional folder of images, all labelled 0.
    const pngs = entries.filter(isPng);
    if (pngs.length === 0) throw new DataError(o.root, 'empty image folder: no class subfolders and no .png files');
    for (const n of pngs) add(path.join(o.root, n), 0);
  } else {
    if (o.numClasses > 0 && classes.length > o.numClasses) {
      throw new DataError(path.join(o.root, classes[o.numClasses]),
        `class folder #${o.numClasses} gives label ${o.numClasses}, outside data.num_classes = ${o.numClasses} (${classes.length} class folders found)`);
    }
    classes.forEach((cls, label) => {
      const dir = path.join(o.root, cls);
      const pngs = readdirSync(dir).filter(isPng).sort();
      if (pngs.length === 0) {
        if (!o.skipBadFiles) throw new DataError(dir, 'empty class folder: no .png files (set data.skip_bad_files: true to allow)');
        warn(`warning: class folder ${dir} holds no .png files`);
      }
      for (const n of pngs) add(path.join(dir, n), label);
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

  constructor(private readonly o: ImageFolderOptions) {
    const scan = scanImageFolder(o);
    this.files = scan.files;
    this.labels = scan.labels;
    this.bad = scan.skipped;
    this.size = scan.files.length;
    this.shape = [o.channels, o.imageSize, o.imageSize];
    this.numClasses = o.numClasses;
    this.warn = o.warn ?? ((m: string) => console.warn(m));
    this.description = `image folder ${o.root}: ${this.size} PNGs in ${Math.max(1, scan.classes.length)} classes` +
      (scan.skipped ? `, ${scan.skipped} bad files skipped` : '');
  }

  get badFiles(): number {
    return this.bad;
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const url = workerUrl();
    // A .ts worker (tests, dev) needs tsx's loader registered in its thread too.
    // A .ts worker (tests, dev under tsx) is entered through a dynamic import,
    // which goes through tsx's loader; Node 20 does not hook a worker's entry file.
    const w = url.pathname.endsWith('.ts')
      ? new Worker(`import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((t) => { t.register(); return import(${JSON.stringify(url.href)}); });`, { eval: true })
      : new Worker(url);
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
    const req: DecodeRequest = { id, files, flips: Uint8Array.from(flips), opts: { size: this.o.imageSize, channels: this.o.channels, centerCrop: this.o.centerCrop } };
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
        this.bad++;
        this.warn(`warning: skipping ${b.file}: ${b.reason}`);
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
    // "checkpoint:", without the "trained" line and the sample grid (issue 13 item 8).
    w.ref();
    for (const p of this.pending.values()) p.reject(new DataError(this.o.root, 'the data set was closed before this batch was read'));
    this.pending.clear();
    await w.terminate();
  }
}
