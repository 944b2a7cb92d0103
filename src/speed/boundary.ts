// The meaningful-step boundary (SpeeD, arXiv 2405.17403: where sqrt(1 - abar)
// stops moving) and the gradients it is built on.
import type { DiffusionCoefs } from '../diffusion/coefs.js';

/** numpy.gradient with unit spacing: central differences inside, one-sided at the ends. */
export function gradient(f: ArrayLike<number>): Float64Array {
  const n = f.length;
  const g = new Float64Array(n);
  if (n < 2) return g; // a single point has no slope; numpy raises, we say 0
  g[0] = f[1] - f[0];
  g[n - 1] = f[n - 1] - f[n - 2];
  for (let i = 1; i < n - 1; i++) g[i] = (f[i + 1] - f[i - 1]) / 2;
  return g;
}

/** The threshold on the increment of sqrt(1 - abar) below which a step is "converged". */
export const BOUNDARY_EPS = 1e-4;

/** g_t = gradient(sqrt(1 - abar))_t */
export function sqrt1mAbarIncrement(coefs: DiffusionCoefs): Float64Array {
  return gradient(coefs.sqrt1mAbar);
}

/** h_t = gradient(1 - abar)_t, the increment of the variance of x_t. */
export function varianceIncrement(coefs: DiffusionCoefs): Float64Array {
  const v = new Float64Array(coefs.T);
  for (let t = 0; t < coefs.T; t++) v[t] = 1 - coefs.abar[t];
  return gradient(v);
}

/**
 * m = (first t with g_t < 1e-4) + 1, i.e. 642 for linear T = 1000. When the
 * process never converges (short schedules), every step is meaningful: m = T.
 * (SpeeD's numpy argmax would give m = 1 there, which makes no sense.)
 */
export function meaningfulBoundary(coefs: DiffusionCoefs): number {
  const g = sqrt1mAbarIncrement(coefs);
  for (let t = 0; t < g.length; t++) if (g[t] < BOUNDARY_EPS) return t + 1;
  return coefs.T;
}
