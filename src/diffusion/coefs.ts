// Every per-timestep table derived from the betas, float64: alphas_cumprod and
// the q(x_t | x_0) and posterior q(x_{t-1} | x_t, x_0) coefficients of IDDPM's
// gaussian_diffusion.py (names follow it).
// The native side receives the subset in DiffusionTables (converted to float32 there).
import type { DiffusionTables } from '../native.js';

export interface DiffusionCoefs {
  /** number of steps */
  T: number;
  betas: Float64Array;
  alphas: Float64Array;
  /** abar_t = prod_{s<=t} alpha_s */
  abar: Float64Array;
  /** abar_{t-1}, 1 at t = 0 */
  abarPrev: Float64Array;
  sqrtAbar: Float64Array;
  sqrt1mAbar: Float64Array;
  sqrtRecipAbar: Float64Array;
  sqrtRecipm1Abar: Float64Array;
  posteriorVariance: Float64Array;
  /** log(posteriorVariance) with the t = 0 entry replaced by the t = 1 entry */
  postLogVar: Float64Array;
  /** posterior mean coefficient on x_0 */
  coef1: Float64Array;
  /** posterior mean coefficient on x_t */
  coef2: Float64Array;
  logBeta: Float64Array;
}

/** Derives all tables from `betas` (each in (0, 1]). */
export function makeCoefs(betas: ArrayLike<number>): DiffusionCoefs {
  const T = betas.length;
  if (T < 1) throw new RangeError('makeCoefs: betas must not be empty');
  const b = Float64Array.from(betas);
  for (let t = 0; t < T; t++) {
    if (!(b[t] > 0 && b[t] <= 1)) {
      throw new RangeError(`makeCoefs: betas[${t}] = ${b[t]} is outside (0, 1]`);
    }
  }
  const alphas = new Float64Array(T);
  const abar = new Float64Array(T);
  const abarPrev = new Float64Array(T);
  const sqrtAbar = new Float64Array(T);
  const sqrt1mAbar = new Float64Array(T);
  const sqrtRecipAbar = new Float64Array(T);
  const sqrtRecipm1Abar = new Float64Array(T);
  const posteriorVariance = new Float64Array(T);
  const postLogVar = new Float64Array(T);
  const coef1 = new Float64Array(T);
  const coef2 = new Float64Array(T);
  const logBeta = new Float64Array(T);
  let prod = 1;
  for (let t = 0; t < T; t++) {
    alphas[t] = 1 - b[t];
    abarPrev[t] = prod;
    prod *= alphas[t];
    abar[t] = prod;
    sqrtAbar[t] = Math.sqrt(abar[t]);
    sqrt1mAbar[t] = Math.sqrt(1 - abar[t]);
    sqrtRecipAbar[t] = Math.sqrt(1 / abar[t]);
    sqrtRecipm1Abar[t] = Math.sqrt(1 / abar[t] - 1);
    posteriorVariance[t] = (b[t] * (1 - abarPrev[t])) / (1 - abar[t]);
    coef1[t] = (b[t] * Math.sqrt(abarPrev[t])) / (1 - abar[t]);
    coef2[t] = ((1 - abarPrev[t]) * Math.sqrt(alphas[t])) / (1 - abar[t]);
    logBeta[t] = Math.log(b[t]);
  }
  for (let t = 1; t < T; t++) postLogVar[t] = Math.log(posteriorVariance[t]);
  // posteriorVariance[0] is 0; IDDPM clips by reusing t = 1. With a single step
  // there is no t = 1, so fall back to log(beta_0) (the only variance there is).
  postLogVar[0] = T > 1 ? postLogVar[1] : logBeta[0];
  return {
    T,
    betas: b,
    alphas,
    abar,
    abarPrev,
    sqrtAbar,
    sqrt1mAbar,
    sqrtRecipAbar,
    sqrtRecipm1Abar,
    posteriorVariance,
    postLogVar,
    coef1,
    coef2,
    logBeta,
  };
}

/** The tables the native train step and loss read (copies, so callers may not alias). */
export function toNativeTables(c: DiffusionCoefs): DiffusionTables {
  return {
    sqrtAbar: c.sqrtAbar.slice(),
    sqrt1mAbar: c.sqrt1mAbar.slice(),
    sqrtRecipAbar: c.sqrtRecipAbar.slice(),
    sqrtRecipm1Abar: c.sqrtRecipm1Abar.slice(),
    coef1: c.coef1.slice(),
    coef2: c.coef2.slice(),
    logBeta: c.logBeta.slice(),
    postLogVar: c.postLogVar.slice(),
  };
}
