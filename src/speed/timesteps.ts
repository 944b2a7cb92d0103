// Time-step samplers (SpeeD's asymmetric sampling with duals, and the
// baselines): which t each training sample gets.
import type { DiffusionCoefs } from '../diffusion/coefs.js';
import type { Rng } from '../rng.js';
import { meaningfulBoundary, sqrt1mAbarIncrement, BOUNDARY_EPS } from './boundary.js';
import type { SamplingName, SpeedOptions } from './options.js';

export interface TimestepSampler {
  readonly name: SamplingName;
  /** n time steps in [0, T) for training step `step` (clts depends on it). */
  sample(n: number, step: number, rng: Rng): Int32Array;
  /** The distribution each independent draw comes from at `step` (sums to 1). */
  probabilities(step: number): Float64Array;
  /**
   * The distribution of a time step of a batch of n, averaged over the batch's
   * positions: for the dual samplers, n//2+1 draws from p plus the duals of the
   * first n - (n//2+1) of them.
   */
  marginal(n: number, step: number): Float64Array;
}

/** SpeeD's dual of t around the boundary m (clamped so it stays inside [0, T)). */
export function dualOf(t: number, m: number, T: number): number {
  const mm = Math.min(m, T - 1);
  return t < mm ? mm - t : t - mm;
}

function normalise(w: Float64Array, what: string): Float64Array {
  let s = 0;
  for (let i = 0; i < w.length; i++) {
    if (!(w[i] >= 0) || !Number.isFinite(w[i])) throw new RangeError(`${what}: weight ${w[i]} at t = ${i} is not a finite non-negative number`);
    s += w[i];
  }
  if (!(s > 0)) throw new RangeError(`${what}: all time steps have probability 0`);
  const p = new Float64Array(w.length);
  for (let i = 0; i < w.length; i++) p[i] = w[i] / s;
  return p;
}

function cumulative(p: Float64Array): Float64Array {
  const c = new Float64Array(p.length);
  let s = 0;
  for (let i = 0; i < p.length; i++) {
    s += p[i];
    c[i] = s;
  }
  return c;
}

/** First index i with cdf[i] > u (so zero-probability steps are never drawn). */
function drawFrom(cdf: Float64Array, rng: Rng): number {
  const u = rng.uniform() * cdf[cdf.length - 1];
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cdf[mid] > u) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

function checkN(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`timestep sampler: batch size n must be an integer >= 1, got ${String(n)}`);
}

/** p_t ∝ k below tau, 1 from tau on. */
export function asymmetricWeights(T: number, k: number, tau: number): Float64Array {
  const w = new Float64Array(T);
  for (let t = 0; t < T; t++) w[t] = t < tau ? k : 1;
  return w;
}

/** The first-release form tanh(1e6 (g_t - 1e-4)) + 1.5: 2.5 below m, 0.5 above. */
export function boundaryWeights(coefs: DiffusionCoefs): Float64Array {
  const g = sqrt1mAbarIncrement(coefs);
  const w = new Float64Array(coefs.T);
  for (let t = 0; t < coefs.T; t++) w[t] = Math.tanh(1e6 * (g[t] - BOUNDARY_EPS)) + 1.5;
  return w;
}

/** Logit-normal(mean, std) density at u_t = sqrt(1 - abar_t) (SD3's time-step density). */
export function lognormWeights(coefs: DiffusionCoefs, mean: number, std: number): Float64Array {
  const w = new Float64Array(coefs.T);
  for (let t = 0; t < coefs.T; t++) {
    const u = coefs.sqrt1mAbar[t];
    if (!(u > 0 && u < 1)) continue; // density 0 at the ends
    const z = (Math.log(u / (1 - u)) - mean) / std;
    w[t] = Math.exp(-0.5 * z * z) / (std * Math.sqrt(2 * Math.PI) * u * (1 - u));
  }
  return w;
}

/** clts at `step`: lambda_s N(mu T, sigma T) + (1 - lambda_s) U, lambda_s = min(1, step/target). */
export function cltsProbabilities(T: number, step: number, mu: number, sigma: number, targetSteps: number): Float64Array {
  const lam = targetSteps <= 0 ? 1 : Math.min(1, Math.max(0, step) / targetSteps);
  const g = new Float64Array(T);
  const c = mu * (T - 1);
  const s = sigma * T;
  for (let t = 0; t < T; t++) g[t] = Math.exp(-0.5 * ((t - c) / s) ** 2);
  const gn = normalise(g, 'clts');
  const p = new Float64Array(T);
  for (let t = 0; t < T; t++) p[t] = lam * gn[t] + (1 - lam) / T;
  return p;
}

class TableSampler implements TimestepSampler {
  private readonly cdfCache = new Map<number, Float64Array>();
  constructor(
    readonly name: SamplingName,
    private readonly T: number,
    private readonly probsAt: (step: number) => Float64Array,
    /** boundary for duals, or -1 for no duals */
    private readonly m: number,
    private readonly stepDependent: boolean,
  ) {}

  probabilities(step: number): Float64Array {
    return this.probsAt(step).slice();
  }

  private cdf(step: number): Float64Array {
    const key = this.stepDependent ? step : 0;
    let c = this.cdfCache.get(key);
    if (!c) {
      c = cumulative(this.probsAt(step));
      if (this.cdfCache.size > 4) this.cdfCache.clear();
      this.cdfCache.set(key, c);
    }
    return c;
  }

  sample(n: number, step: number, rng: Rng): Int32Array {
    checkN(n);
    const cdf = this.cdf(step);
    const out = new Int32Array(n);
    if (this.m < 0) {
      for (let i = 0; i < n; i++) out[i] = drawFrom(cdf, rng);
      return out;
    }
    // SpeeD: draw n//2 + 1, append each one's dual, keep the first n.
    const draws = Math.min(n, Math.floor(n / 2) + 1);
    for (let i = 0; i < draws; i++) out[i] = drawFrom(cdf, rng);
    for (let i = draws; i < n; i++) out[i] = dualOf(out[i - draws], this.m, this.T);
    return out;
  }

  marginal(n: number, step: number): Float64Array {
    checkN(n);
    const p = this.probsAt(step);
    if (this.m < 0) return p.slice();
    const draws = Math.min(n, Math.floor(n / 2) + 1);
    const duals = n - draws;
    const q = new Float64Array(this.T);
    for (let t = 0; t < this.T; t++) {
      q[t] += (draws / n) * p[t];
      q[dualOf(t, this.m, this.T)] += (duals / n) * p[t];
    }
    return q;
  }
}

/** The time-step sampler that `opts.sampling` names, over the schedule `coefs`. */
export function makeTimestepSampler(opts: SpeedOptions, coefs: DiffusionCoefs): TimestepSampler {
  const T = coefs.T;
  const m = meaningfulBoundary(coefs);
  const fixed = (p: Float64Array) => () => p;
  switch (opts.sampling) {
    case 'uniform':
      return new TableSampler('uniform', T, fixed(normalise(new Float64Array(T).fill(1), 'uniform')), -1, false);
    case 'speed':
      return new TableSampler('speed', T, fixed(normalise(asymmetricWeights(T, opts.k, opts.tau), 'speed')), m, false);
    case 'no_dual':
      return new TableSampler('no_dual', T, fixed(normalise(asymmetricWeights(T, opts.k, opts.tau), 'no_dual')), -1, false);
    case 'speed_boundary':
      return new TableSampler('speed_boundary', T, fixed(normalise(boundaryWeights(coefs), 'speed_boundary')), m, false);
    case 'lognorm':
      return new TableSampler(
        'lognorm',
        T,
        fixed(normalise(lognormWeights(coefs, opts.lognorm_mean, opts.lognorm_std), 'lognorm')),
        -1,
        false,
      );
    case 'clts': {
      const at = (step: number) => cltsProbabilities(T, step, opts.clts_mu, opts.clts_sigma, opts.clts_target_steps);
      return new TableSampler('clts', T, at, -1, true);
    }
    default:
      throw new RangeError(`makeTimestepSampler: unknown sampling ${JSON.stringify((opts as { sampling: unknown }).sampling)}`);
  }
}
