// What a training run shows in TensorBoard: one metrics.jsonl line as scalars,
// the time-step histogram and the loss per time-step bucket; sample grids as
// images. Tags are grouped by prefix (TensorBoard makes one section per prefix).
import type { EvalLine } from '../train/evaluation.js';
import type { MetricsLine } from '../train/metrics.js';
import { EventWriter, type Histogram } from './events.js';

/** "loss_bucket/t0050-0100": zero-padded so the charts sort by time step. */
export function bucketTag(lo: number, hi: number, T: number): string {
  const w = String(Math.max(T, hi)).length;
  return `loss_bucket/t${String(lo).padStart(w, '0')}-${String(hi).padStart(w, '0')}`;
}

/**
 * The time-step histogram of a logged interval. t is an integer in
 * [edges[b], edges[b+1]) for bucket b; only the counts are kept, so sum and
 * sum of squares use each bucket's mean integer value, and min / max are the
 * outer edges of the first and last non-empty buckets (what TensorBoard draws
 * as the histogram's range).
 */
export function timestepHistogram(counts: number[], edges: number[]): Histogram {
  if (edges.length !== counts.length + 1) throw new RangeError(`timestepHistogram: ${edges.length} edges for ${counts.length} buckets`);
  let num = 0;
  let sum = 0;
  let sumSquares = 0;
  let first = -1;
  let last = -1;
  counts.forEach((n, b) => {
    if (n <= 0) return;
    if (first < 0) first = b;
    last = b;
    // mean and mean square of the integers lo..hi-1
    const lo = edges[b];
    const hi = edges[b + 1] - 1;
    const k = hi - lo + 1;
    const mean = (lo + hi) / 2;
    const meanSq = k > 0 ? (hi * (hi + 1) * (2 * hi + 1) - (lo - 1) * lo * (2 * lo - 1)) / 6 / k : lo * lo;
    num += n;
    sum += n * mean;
    sumSquares += n * meanSq;
  });
  return {
    min: first < 0 ? 0 : edges[first],
    max: last < 0 ? 0 : edges[last + 1],
    num,
    sum,
    sumSquares,
    bucketLimit: edges.slice(1),
    bucket: [...counts],
  };
}

/** Scalars, the t histogram and the per-bucket loss of one metrics line. */
export function writeMetricsLine(w: EventWriter, l: MetricsLine): void {
  const T = l.bucket_edges[l.bucket_edges.length - 1];
  const scalars: Record<string, number> = {
    'train/lr': l.lr,
    'train/images_per_sec': l.images_per_sec,
    'train/skipped': l.skipped,
  };
  // Means over applied steps: null when every step of the interval was skipped
  // (src/train/metrics.ts); a gap in the chart, not a false 0.
  const means: [string, number | null][] = [['train/loss', l.loss], ['train/mse', l.mse], ['train/vb', l.vb], ['train/grad_norm', l.grad_norm]];
  for (const [tag, v] of means) if (v !== null) scalars[tag] = v;
  l.loss_per_bucket.forEach((v, b) => {
    // a bucket with no sample in the interval has no value: leave a gap, not a 0
    if (v !== null) scalars[bucketTag(l.bucket_edges[b], l.bucket_edges[b + 1], T)] = v;
  });
  w.scalars(l.step, scalars);
  w.histogram(l.step, 'train/t', timestepHistogram(l.t_hist, l.bucket_edges));
}

/** One evaluation during training: FID (and its two terms), KID, precision/recall and its time, under eval/. */
export function writeEvalScalars(w: EventWriter, step: number, e: EvalLine): void {
  const scalars: Record<string, number> = {
    'eval/fid': e.fid,
    'eval/fid_mean_term': e.fid_mean_term,
    'eval/fid_cov_term': e.fid_cov_term,
    'eval/seconds': e.seconds,
  };
  const optional: [string, number | null][] = [['eval/kid', e.kid_mean], ['eval/precision', e.precision], ['eval/recall', e.recall], ['eval/inception_score', e.is_mean ?? null]];
  for (const [tag, v] of optional) if (v !== null) scalars[tag] = v;
  w.scalars(step, scalars);
}
