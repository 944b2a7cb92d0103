// Per-time-step weights of the mse term (SpeeD's change-aware weighting and the
// P2 / Min-SNR baselines). Pure: a table of length T.
import type { DiffusionCoefs } from '../diffusion/coefs.js';
import { varianceIncrement } from './boundary.js';
import type { SpeedOptions } from './options.js';

/** snr_t = abar_t / (1 - abar_t) */
export function snr(coefs: DiffusionCoefs): Float64Array {
  const s = new Float64Array(coefs.T);
  for (let t = 0; t < coefs.T; t++) s[t] = coefs.abar[t] / (1 - coefs.abar[t]);
  return s;
}

/**
 * Change-aware weights: c + (1 - 2c) (h - min h)/(max h - min h) with
 * h = gradient(1 - abar) (min/max over all t), for t < cut; 1 from cut on.
 */
export function changeAwareWeights(coefs: DiffusionCoefs, c: number, cut: number): Float64Array {
  const h = varianceIncrement(coefs);
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of h) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const span = hi - lo;
  const w = new Float64Array(coefs.T);
  for (let t = 0; t < coefs.T; t++) {
    // A flat h (T = 1, say) carries no information: the middle of the range.
    const r = span > 0 ? (h[t] - lo) / span : 0.5;
    w[t] = t < cut ? c + (1 - 2 * c) * r : 1;
  }
  return w;
}

/** The per-time-step loss weights w_t that `opts.weighting` names. */
export function lossWeights(opts: SpeedOptions, coefs: DiffusionCoefs): Float64Array {
  const T = coefs.T;
  switch (opts.weighting) {
    case 'none':
      return new Float64Array(T).fill(1);
    case 'speed':
      return changeAwareWeights(coefs, 1 - opts.lam, opts.tau);
    case 'theory':
      return changeAwareWeights(coefs, 0.2, T);
    case 'p2': {
      const s = snr(coefs);
      return s.map((v) => 1 / Math.pow(opts.p2_k + v, opts.p2_gamma));
    }
    case 'min_snr': {
      const s = snr(coefs);
      return s.map((v) => Math.min(v, opts.min_snr_gamma) / v);
    }
    default:
      throw new RangeError(`lossWeights: unknown weighting ${JSON.stringify((opts as { weighting: unknown }).weighting)}`);
  }
}
