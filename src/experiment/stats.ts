// Statistics of the experiment over seeds: Student-t confidence intervals
// (arithmetic for metric values, on the log scale for ratios and speed-up
// factors, which are multiplicative), the equal-step ratio curve (what the
// paper's tables compare: method / baseline at the same iteration) and the
// speed-up curve (for every baseline evaluation S, the steps the method needs
// to reach the baseline's score at S).
//
// Why t and not the bootstrap: with the 3-5 seeds a CPU budget allows, a
// bootstrap over seeds has only n^n resamples and its percentile interval is
// too narrow (it never leaves [min, max]); the t-interval is the standard
// small-sample interval and states its assumption (normal errors) openly.
import { stepsToReach, type CurvePoint } from './speedup.js';

// ---- special functions (double precision; only small arguments are needed) ----

/** log Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; ~1e-15 relative). */
export function logGamma(x: number): number {
  if (!(x > 0)) throw new RangeError(`logGamma: expected x > 0, found ${x}`);
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  const z = x - 1;
  let a = c[0];
  const t = z + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (z + i);
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Continued fraction of the incomplete beta function (modified Lentz). */
function betaCf(a: number, b: number, x: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 300; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) return h;
  }
  return h;
}

/** Regularized incomplete beta I_x(a, b). */
export function incompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const lbt = logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x);
  const bt = Math.exp(lbt);
  return x < (a + 1) / (a + b + 2) ? (bt * betaCf(a, b, x)) / a : 1 - (bt * betaCf(b, a, 1 - x)) / b;
}

/** P(T <= t) for Student's t with df degrees of freedom. */
export function tCdf(t: number, df: number): number {
  const tail = 0.5 * incompleteBeta(df / (df + t * t), df / 2, 0.5);
  return t >= 0 ? 1 - tail : tail;
}

/** The p-quantile of Student's t with df degrees of freedom (bisection on the CDF). */
export function tQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`tQuantile: expected 0 < p < 1, found ${p}`);
  if (!(df > 0)) throw new RangeError(`tQuantile: expected df > 0, found ${df}`);
  if (p < 0.5) return -tQuantile(1 - p, df);
  let lo = 0;
  let hi = 1;
  while (tCdf(hi, df) < p) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-13 * hi; i++) {
    const mid = 0.5 * (lo + hi);
    if (tCdf(mid, df) < p) lo = mid;
    else hi = mid;
  }
  return 0.5 * (lo + hi);
}

// ---- intervals over seeds ----

export interface Interval {
  /** arithmetic mean (geometric for logInterval) */
  mean: number;
  /** bounds of the two-sided interval; null with fewer than 2 values */
  lo: number | null;
  hi: number | null;
  /** sample standard deviation (of the logs for logInterval); null with fewer than 2 values */
  sd: number | null;
  n: number;
  level: number;
}

/** Mean and two-sided Student-t interval of finite values xs (n >= 1; bounds need n >= 2). */
export function tInterval(xs: readonly number[], level = 0.95): Interval {
  if (xs.length === 0) throw new RangeError('tInterval: no values');
  if (!xs.every(Number.isFinite)) throw new RangeError(`tInterval: values must be finite, found ${xs.join(', ')}`);
  if (!(level > 0 && level < 1)) throw new RangeError(`tInterval: expected 0 < level < 1, found ${level}`);
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return { mean, lo: null, hi: null, sd: null, n, level };
  const sd = Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1));
  const h = (tQuantile(0.5 + level / 2, n - 1) * sd) / Math.sqrt(n);
  return { mean, lo: mean - h, hi: mean + h, sd, n, level };
}

/** Geometric mean and the t-interval of log(xs), mapped back (xs > 0): for ratios and speed-ups. */
export function logInterval(xs: readonly number[], level = 0.95): Interval {
  if (!xs.every((x) => x > 0 && Number.isFinite(x))) throw new RangeError(`logInterval: values must be finite and > 0, found ${xs.join(', ')}`);
  const r = tInterval(xs.map(Math.log), level);
  return { mean: Math.exp(r.mean), lo: r.lo === null ? null : Math.exp(r.lo), hi: r.hi === null ? null : Math.exp(r.hi), sd: r.sd, n: r.n, level };
}

// ---- curves of one seed ----

export interface RatioPoint {
  step: number;
  /** method / baseline at this step */
  ratio: number;
}

/**
 * method / baseline at every step both evaluated (finite values, baseline != 0):
 * the comparison of the paper's tables (FID of SpeeD / FID of the baseline at
 * the same iteration). Below 1 is better for lower-is-better metrics.
 */
export function equalStepRatios(baseline: readonly CurvePoint[], method: readonly CurvePoint[]): RatioPoint[] {
  const byStep = new Map(method.map((p) => [p.step, p.value]));
  const out: RatioPoint[] = [];
  for (const b of baseline) {
    const m = byStep.get(b.step);
    if (m === undefined || !Number.isFinite(m) || !Number.isFinite(b.value) || b.value === 0) continue;
    out.push({ step: b.step, ratio: m / b.value });
  }
  return out;
}

export interface SpeedupPoint {
  /** the baseline evaluation S */
  step: number;
  /** the baseline's score at S */
  target: number;
  /** the baseline's own first crossing of target (<= S; S for a monotone curve) */
  baselineSteps: number;
  /** steps the method needs to reach target (interpolated), null if it never does */
  methodSteps: number | null;
  /** baselineSteps / methodSteps, null when not reached */
  factor: number | null;
  /**
   * the method was already at the target at its first evaluation: nothing
   * earlier was measured, so methodSteps is an upper bound and factor a lower bound
   */
  lowerBound: boolean;
}

/**
 * The speed-up curve: for every baseline evaluation S, the steps the method
 * needs to reach the baseline's score at S, and the factor baseline steps /
 * method steps. Both are first crossings (stepsToReach), so a noisy baseline is
 * measured by the same rule as the method. The last point is the old single
 * speed-up factor (speedupFactor).
 */
export function speedupCurve(baseline: readonly CurvePoint[], method: readonly CurvePoint[], lowerIsBetter: boolean): SpeedupPoint[] {
  for (const c of [baseline, method]) {
    for (let i = 1; i < c.length; i++) {
      if (!(c[i].step > c[i - 1].step)) throw new RangeError(`speed-up curve: evaluation steps must increase, found ${c[i - 1].step} then ${c[i].step}`);
    }
  }
  const out: SpeedupPoint[] = [];
  const first = method.find((p) => Number.isFinite(p.value));
  for (const b of baseline) {
    if (!Number.isFinite(b.value)) continue;
    const baselineSteps = stepsToReach(baseline, b.value, lowerIsBetter)!;
    const methodSteps = stepsToReach(method, b.value, lowerIsBetter);
    const lowerBound = first !== undefined && methodSteps === first.step && (lowerIsBetter ? first.value <= b.value : first.value >= b.value);
    out.push({ step: b.step, target: b.value, baselineSteps, methodSteps, factor: methodSteps === null || methodSteps <= 0 ? null : baselineSteps / methodSteps, lowerBound });
  }
  return out;
}

// ---- over seeds ----

export interface SeedAggregate {
  step: number;
  /** one entry per seed, in seed order; null where that seed has no value (not reached, not evaluated) */
  per_seed: (number | null)[];
  /** seeds with a value */
  n: number;
  /** the interval over the seeds; null unless every seed has a value */
  ci: Interval | null;
}

/**
 * Per step, the values of every seed and their interval. `scale` 'log' for
 * ratios and factors (geometric mean, interval of the logs), 'linear' for
 * metric values. A step where some seed has no value (a speed-up not reached)
 * gets no interval: averaging only the seeds that reached it would hide the
 * others; `n` says how many did.
 */
export function aggregateSeeds(perSeed: readonly { step: number; value: number | null }[][], scale: 'linear' | 'log', level = 0.95): SeedAggregate[] {
  const steps = [...new Set(perSeed.flatMap((c) => c.map((p) => p.step)))].sort((a, b) => a - b);
  return steps.map((step) => {
    const vals = perSeed.map((c) => {
      const v = c.find((p) => p.step === step)?.value;
      return v === undefined || v === null || !Number.isFinite(v) || (scale === 'log' && v <= 0) ? null : v;
    });
    const have = vals.filter((v): v is number => v !== null);
    const ci = have.length === perSeed.length && have.length > 0 ? (scale === 'log' ? logInterval(have, level) : tInterval(have, level)) : null;
    return { step, per_seed: vals, n: have.length, ci };
  });
}

// ---- paired tests across the ablation ----

export interface PairedTest {
  /** the per-seed log ratios log(method / baseline) */
  log_ratios: number[];
  /** geometric mean ratio and its t-interval */
  ratio: Interval;
  /** t statistic of mean(log ratio) = 0 (null with fewer than 2 seeds or zero spread) */
  t: number | null;
  df: number;
  /** two-sided p-value of the one-sample t-test on the log ratios */
  p: number | null;
}

/**
 * The exact paired comparison of one method with the baseline at one endpoint:
 * seed s of the method and seed s of the baseline share the initialisation, the
 * data order and the evaluation noise, so the per-seed log ratios are the
 * paired differences, tested with a one-sample t-test (normal errors assumed).
 */
export function pairedLogRatioTest(ratios: readonly number[], level = 0.95): PairedTest {
  const ci = logInterval(ratios, level);
  const logs = ratios.map(Math.log);
  const n = logs.length;
  if (n < 2 || ci.sd === null) return { log_ratios: logs, ratio: ci, t: null, df: n - 1, p: null };
  const mean = logs.reduce((a, b) => a + b, 0) / n;
  if (ci.sd === 0) return { log_ratios: logs, ratio: ci, t: null, df: n - 1, p: mean === 0 ? 1 : 0 };
  const t = mean / (ci.sd / Math.sqrt(n));
  const p = Math.min(1, 2 * tCdf(-Math.abs(t), n - 1));
  return { log_ratios: logs, ratio: ci, t, df: n - 1, p };
}

/**
 * Holm's step-down adjustment of m p-values (family-wise error control across
 * the ablation's comparisons with the baseline): sort ascending, multiply the
 * i-th smallest (0-based) by m - i, make the sequence non-decreasing, cap at 1.
 * null p-values stay null and do not count in m.
 */
export function holmAdjust(ps: readonly (number | null)[]): (number | null)[] {
  const idx = ps.map((p, i) => ({ p, i })).filter((x): x is { p: number; i: number } => x.p !== null).sort((a, b) => a.p - b.p);
  const m = idx.length;
  const out: (number | null)[] = ps.map(() => null);
  let run = 0;
  idx.forEach(({ p, i }, k) => {
    run = Math.max(run, Math.min(1, (m - k) * p));
    out[i] = run;
  });
  return out;
}
