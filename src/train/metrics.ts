// Accumulates per-step figures between log lines: means of loss/mse/vb, the
// time-step histogram and the mean loss per time-step bucket.
//
// Skipped steps (non-finite loss, gradient or update: the weights were not touched)
// are counted, with their reason, and kept out of every mean: loss, mse, vb,
// grad_norm and loss_per_bucket are means over the applied steps of the interval,
// and null when every step of it was skipped (never a made-up 0).
import { skipReason, type SkipReason } from './guard.js';

export interface MetricsAccum {
  steps: number;
  samples: number;
  loss: number;
  mse: number;
  vb: number;
  gradNorm: number;
  skipped: number;
  /** skipped steps by reason (absent in checkpoints written before it existed) */
  skippedBy?: Record<SkipReason, number>;
  tHist: number[];
  bucketLoss: number[];
  /** samples of applied steps per bucket (absent in older checkpoints: tHist is used) */
  bucketCount?: number[];
}

export interface MetricsLine {
  step: number;
  epoch: number;
  /** means over the applied steps; null when every step of the interval was skipped */
  loss: number | null;
  mse: number | null;
  vb: number | null;
  images_per_sec: number;
  lr: number;
  grad_norm: number | null;
  /** skipped steps in the interval, and why (loss, gradient or update not finite) */
  skipped: number;
  skipped_by: Record<SkipReason, number>;
  t_hist: number[];
  loss_per_bucket: (number | null)[];
  bucket_edges: number[];
  time: number;
}

export const NUM_BUCKETS = 20;

export function bucketEdges(T: number, n = NUM_BUCKETS): number[] {
  return Array.from({ length: n + 1 }, (_, i) => Math.round((i * T) / n));
}

const noSkips = (): Record<SkipReason, number> => ({ loss: 0, gradient: 0, update: 0 });

export function emptyAccum(n = NUM_BUCKETS): MetricsAccum {
  return {
    steps: 0, samples: 0, loss: 0, mse: 0, vb: 0, gradNorm: 0, skipped: 0, skippedBy: noSkips(),
    tHist: new Array(n).fill(0), bucketLoss: new Array(n).fill(0), bucketCount: new Array(n).fill(0),
  };
}

export function accumulate(a: MetricsAccum, T: number, t: Int32Array, r: { loss: Float32Array; mse: Float32Array; vb: Float32Array; gradNorm: number; skipped: boolean }): void {
  const n = a.tHist.length;
  a.steps++;
  a.skippedBy ??= noSkips();
  a.bucketCount ??= [...a.tHist];
  const reason = skipReason(r);
  if (reason) {
    a.skipped++;
    a.skippedBy[reason]++;
  } else {
    a.gradNorm += r.gradNorm;
  }
  for (let i = 0; i < t.length; i++) {
    const b = Math.min(n - 1, Math.floor((t[i] * n) / T));
    a.tHist[b]++;
    if (!reason) {
      a.bucketLoss[b] += r.loss[i];
      a.bucketCount[b]++;
      a.loss += r.loss[i];
      a.mse += r.mse[i];
      a.vb += r.vb[i];
      a.samples++;
    }
  }
}

export function summarise(a: MetricsAccum, fields: { step: number; epoch: number; lr: number; imagesPerSec: number; T: number }): MetricsLine {
  const s = a.samples;
  const applied = a.steps - a.skipped;
  const counts = a.bucketCount ?? a.tHist;
  return {
    step: fields.step,
    epoch: fields.epoch,
    loss: s > 0 ? a.loss / s : null,
    mse: s > 0 ? a.mse / s : null,
    vb: s > 0 ? a.vb / s : null,
    images_per_sec: fields.imagesPerSec,
    lr: fields.lr,
    grad_norm: applied > 0 ? a.gradNorm / applied : null,
    skipped: a.skipped,
    skipped_by: { ...noSkips(), ...a.skippedBy },
    t_hist: [...a.tHist],
    loss_per_bucket: a.bucketLoss.map((l, i) => (counts[i] > 0 ? l / counts[i] : null)),
    bucket_edges: bucketEdges(fields.T, a.tHist.length),
    time: Date.now() / 1000,
  };
}

