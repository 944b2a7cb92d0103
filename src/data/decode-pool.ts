// A pool of decode worker threads (decode-worker.ts): a batch of image files is
// split into contiguous parts, one per worker, decoded and centre-cropped in
// parallel, and joined back in order. Used by `encode`, where decoding and
// cropping would otherwise run on the main thread beside the VAE.
import type { Worker } from 'node:worker_threads';

import { DataError } from '../errors.js';
import type { DecodeReply, DecodeRequest } from './decode-worker.js';
import { startDecodeWorker } from './image-folder.js';
import type { DecodeOptions } from './image-sample.js';

interface Slot {
  w: Worker;
  pending: Map<number, { resolve: (r: DecodeReply) => void; reject: (e: Error) => void }>;
}

export class DecodePool {
  private readonly slots: Slot[] = [];
  private nextId = 0;
  private closed = false;

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`DecodePool: size must be a positive integer, got ${size}`);
  }

  private slot(k: number): Slot {
    if (this.slots[k]) return this.slots[k];
    const w = startDecodeWorker();
    const s: Slot = { w, pending: new Map() };
    w.on('message', (r: DecodeReply) => {
      const p = s.pending.get(r.id);
      s.pending.delete(r.id);
      if (s.pending.size === 0) w.unref();
      p?.resolve(r);
    });
    const failAll = (e: Error) => {
      for (const p of s.pending.values()) p.reject(new DataError('decode worker', `failed: ${e.message}`));
      s.pending.clear();
    };
    w.on('error', failAll);
    w.on('exit', (code) => { if (s.pending.size) failAll(new Error(`exited with code ${code}`)); });
    w.unref();
    this.slots[k] = s;
    return s;
  }

  private one(k: number, files: string[], opts: DecodeOptions): Promise<DecodeReply> {
    const s = this.slot(k);
    const id = this.nextId++;
    const req: DecodeRequest = { id, files, flips: new Uint8Array(files.length), opts };
    return new Promise<DecodeReply>((resolve, reject) => {
      s.pending.set(id, { resolve, reject });
      s.w.ref();
      s.w.postMessage(req);
    });
  }

  /** [n, C, S, S] in [-1, 1] for `files` (unflipped), and the files that failed (index into `files`). */
  async decode(files: string[], opts: DecodeOptions): Promise<DecodeReply> {
    if (this.closed) throw new Error('DecodePool: closed');
    const n = files.length;
    const per = opts.channels * opts.size * opts.size;
    const parts = Math.min(this.size, n);
    const step = Math.ceil(n / Math.max(1, parts));
    const jobs: Promise<DecodeReply>[] = [];
    for (let k = 0, a = 0; a < n; k++, a += step) jobs.push(this.one(k, files.slice(a, a + step), opts));
    const replies = await Promise.all(jobs);
    const x = new Float32Array(n * per);
    const bad: DecodeReply['bad'] = [];
    replies.forEach((r, k) => {
      x.set(r.x, k * step * per);
      for (const b of r.bad) bad.push({ ...b, i: b.i + k * step });
    });
    return { id: -1, x, bad };
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.filter(Boolean).map((s) => s.w.terminate()));
  }
}
