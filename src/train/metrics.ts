// Accumulates per-step figures between log lines: means of loss/mse/vb, the
// time-step histogram and the mean loss per time-step bucket.

export interface MetricsAccum {
  steps: number;
  samples: number;
  loss: number;
  mse: number;
  vb: number;
  gradNorm: number;
  skipped: number;
  tHist: number[];
  bucketLoss: number[];
}

export interface MetricsLine {
  step: number;
  epoch: number;
  loss: number;
  mse: number;
  vb: number;
  images_per_sec: number;
  lr: number;
  grad_norm: number;
  skipped: number;
  t_hist: number[];
  loss_per_bucket: (number | null)[];
  bucket_edges: number[];
  time: number;
}

export const NUM_BUCKETS = 20;

export function bucketEdges(T: number, n = NUM_BUCKETS): number[] {
  return Array.from({ length: n + 1 }, (_, i) => Math.round((i * T) / n));
}

export function emptyAccum(n = NUM_BUCKETS): MetricsAccum {
  return { steps: 0, samples: 0, loss: 0, mse: 0, vb: 0, gradNorm: 0, skipped: 0, tHist: new Array(n).fill(0), bucketLoss: new Array(n).fill(0) };
}

export function accumulate(a: MetricsAccum, T: number, t: Int32Array, r: { loss: Float32Array; mse: Float32Array; vb: Float32Array; gradNorm: number; skipped: boolean }): void {
  const n = a.tHist.length;
  a.steps++;
  if (r.skipped) a.skipped++;
  a.gradNorm += Number.isFinite(r.gradNorm) ? r.gradNorm : 0;
  for (let i = 0; i < t.length; i++) {
    const b = Math.min(n - 1, Math.floor((t[i] * n) / T));
    a.tHist[b]++;
    if (Number.isFinite(r.loss[i])) {
      a.bucketLoss[b] += r.loss[i];
      a.loss += r.loss[i];
      a.mse += r.mse[i];
      a.vb += r.vb[i];
      a.samples++;
    }
  }
}

export function summarise(a: MetricsAccum, fields: { step: number; epoch: number; lr: number; imagesPerSec: number; T: number }): MetricsLine {
  const s = Math.max(1, a.samples);
  return {
    step: fields.step,
    epoch: fields.epoch,
    loss: a.loss / s,
    mse: a.mse / s,
    vb: a.vb / s,
    images_per_sec: fields.imagesPerSec,
    lr: fields.lr,
    grad_norm: a.gradNorm / Math.max(1, a.steps),
    skipped: a.skipped,
    t_hist: [...a.tHist],
    loss_per_bucket: a.bucketLoss.map((l, i) => (a.tHist[i] > 0 ? l / a.tHist[i] : null)),
    bucket_edges: bucketEdges(fields.T, a.tHist.length),
    time: Date.now() / 1000,
  };
}
