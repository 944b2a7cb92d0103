// Inception Score (Salimans et al. 2016) from a classifier's logits, computed as
// openai/guided-diffusion's evaluations/evaluator.py does: softmax, then per
// split of `splitSize` consecutive samples exp(mean_i KL(p(y|x_i) || p(y))),
// with p(y) the split's mean prediction; the score is the mean over splits
// (the last split may be shorter).

import { checkFeatures } from './fid.js';

export interface InceptionScoreResult {
  /** mean over splits (the number ADM's evaluator prints) */
  mean: number;
  /** standard deviation over splits (ddof = 0; 0 with one split) */
  std: number;
  splits: number;
  splitSize: number;
}

/** ADM's split size: 50 000 samples give 10 splits. */
export const IS_SPLIT_SIZE = 5000;

/** Row-wise softmax of logits [n, k] in float64 (max subtracted first). */
export function softmaxRows(logits: ArrayLike<number>, n: number, k: number): Float64Array {
  checkFeatures(logits, n, k, 'softmax logits');
  const p = new Float64Array(n * k);
  for (let i = 0; i < n; i++) {
    const o = i * k;
    let max = -Infinity;
    for (let j = 0; j < k; j++) max = Math.max(max, logits[o + j]);
    let sum = 0;
    for (let j = 0; j < k; j++) {
      const e = Math.exp(logits[o + j] - max);
      p[o + j] = e;
      sum += e;
    }
    for (let j = 0; j < k; j++) p[o + j] /= sum;
  }
  return p;
}

/** The Inception Score of n samples' logits [n, k]. */
export function inceptionScore(logits: ArrayLike<number>, n: number, k: number, splitSize = IS_SPLIT_SIZE): InceptionScoreResult {
  if (!Number.isInteger(splitSize) || splitSize < 1) throw new RangeError(`inception score: split size must be a positive integer, got ${splitSize}`);
  if (n < 1) throw new RangeError('inception score: needs at least 1 sample');
  const p = softmaxRows(logits, n, k);
  const scores: number[] = [];
  const marginal = new Float64Array(k);
  for (let a = 0; a < n; a += splitSize) {
    const b = Math.min(n, a + splitSize);
    marginal.fill(0);
    for (let i = a; i < b; i++) for (let j = 0; j < k; j++) marginal[j] += p[i * k + j];
    for (let j = 0; j < k; j++) marginal[j] /= b - a;
    let kl = 0;
    for (let i = a; i < b; i++) {
      for (let j = 0; j < k; j++) {
        const q = p[i * k + j];
        // q log q -> 0 as q -> 0 (a probability that underflowed contributes nothing)
        if (q > 0) kl += q * (Math.log(q) - Math.log(marginal[j]));
      }
    }
    scores.push(Math.exp(kl / (b - a)));
  }
  const mean = scores.reduce((s, v) => s + v, 0) / scores.length;
  const std = Math.sqrt(scores.reduce((s, v) => s + (v - mean) * (v - mean), 0) / scores.length);
  return { mean, std, splits: scores.length, splitSize };
}

/** Share of samples whose argmax logit is their label (logits [n, k], labels [n] in 0..k-1). */
export function labelAccuracy(logits: ArrayLike<number>, n: number, k: number, labels: ArrayLike<number>): number {
  checkFeatures(logits, n, k, 'class-accuracy logits');
  if (labels.length !== n) throw new RangeError(`class accuracy: ${labels.length} labels for ${n} samples`);
  let correct = 0;
  for (let i = 0; i < n; i++) {
    let arg = 0;
    for (let j = 1; j < k; j++) if (logits[i * k + j] > logits[i * k + arg]) arg = j;
    if (arg === labels[i]) correct++;
  }
  return correct / n;
}
