// Fréchet distance between Gaussians fitted to two feature sets (FID when the
// features are Inception's; here it is reported with its feature space's name).
//
//   d² = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½
//
// tr((Σ₁^½ Σ₂ Σ₁^½)^½) is the sum of square roots of the eigenvalues of a
// symmetric PSD matrix, so two symmetric eigendecompositions do it, with none
// of the complex parts and "imaginary component" failures of sqrtm(Σ₁Σ₂).

import { matmul, symEig, spectralApply, trace } from './linalg.js';

/** Mean and covariance of a feature set. */
export interface GaussianStats {
  dim: number;
  /** number of feature vectors the statistics came from */
  n: number;
  mu: Float64Array;
  /** covariance, dim×dim row-major, unbiased (divides by n − 1, as numpy.cov) */
  sigma: Float64Array;
}

/** Checks that `features` is [n, dim]. */
export function checkFeatures(features: ArrayLike<number>, n: number, dim: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || !Number.isInteger(dim) || dim <= 0 || features.length !== n * dim) {
    throw new RangeError(`${what}: expected features [${n}, ${dim}] (${n * dim} values), got ${features.length}`);
  }
}

/**
 * Mean and covariance of features [n, dim] (row-major) in float64, in two
 * passes (mean first, then centred products) so large means do not cancel.
 */
export function featureStats(features: ArrayLike<number>, n: number, dim: number): GaussianStats {
  checkFeatures(features, n, dim, 'featureStats');
  if (n < 2) throw new RangeError(`featureStats: a covariance needs at least 2 feature vectors, got ${n}`);
  const mu = new Float64Array(dim);
  for (let i = 0; i < n; i++) {
    const r = i * dim;
    for (let a = 0; a < dim; a++) mu[a] += features[r + a];
  }
  for (let a = 0; a < dim; a++) mu[a] /= n;
  // Centred rows are gathered in blocks, transposed, so each covariance entry is a contiguous dot product.
  const B = 64;
  const block = new Float64Array(dim * B);
  const sigma = new Float64Array(dim * dim);
  for (let i0 = 0; i0 < n; i0 += B) {
    const rows = Math.min(B, n - i0);
    for (let r = 0; r < rows; r++) {
      const src = (i0 + r) * dim;
      for (let a = 0; a < dim; a++) block[a * B + r] = features[src + a] - mu[a];
    }
    for (let a = 0; a < dim; a++) {
      const pa = a * B;
      for (let b = a; b < dim; b++) {
        const pb = b * B;
        let s = 0;
        for (let r = 0; r < rows; r++) s += block[pa + r] * block[pb + r];
        sigma[a * dim + b] += s;
      }
    }
  }
  for (let a = 0; a < dim; a++) {
    for (let b = a; b < dim; b++) {
      const v = sigma[a * dim + b] / (n - 1);
      sigma[a * dim + b] = v;
      sigma[b * dim + a] = v;
    }
  }
  return { dim, n, mu, sigma };
}

/** The parts of a Fréchet distance, for reports and checks. */
export interface FrechetParts {
  /** the distance d² (clamped at 0: it is a squared distance, rounding can dip below) */
  distance: number;
  /** |μ₁ − μ₂|² */
  meanTerm: number;
  /** tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½ */
  covTerm: number;
}

/** Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2). */
export function frechetDistanceParts(
  mu1: Float64Array,
  sigma1: Float64Array,
  mu2: Float64Array,
  sigma2: Float64Array,
): FrechetParts {
  const d = mu1.length;
  if (mu2.length !== d || sigma1.length !== d * d || sigma2.length !== d * d) {
    throw new RangeError(
      `frechetDistance: dimensions disagree (mu1 ${mu1.length}, mu2 ${mu2.length}, sigma1 ${sigma1.length}, sigma2 ${sigma2.length} values; expected ${d}, ${d}, ${d * d}, ${d * d})`,
    );
  }
  let meanTerm = 0;
  for (let i = 0; i < d; i++) {
    const diff = mu1[i] - mu2[i];
    meanTerm += diff * diff;
  }
  // Σ₁^½ with negative rounding eigenvalues clamped to 0 (covariances are PSD by construction).
  const root1 = spectralApply(symEig(sigma1, d, true), d, (l) => Math.sqrt(Math.max(l, 0)));
  // M = Σ₁^½ Σ₂ Σ₁^½ (symmetric PSD); only its eigenvalues are needed.
  const tmp = matmul(root1, sigma2, d);
  const M = matmul(tmp, root1, d);
  const lambdas = symEig(M, d, false).values;
  let trSqrt = 0;
  for (const l of lambdas) if (l > 0) trSqrt += Math.sqrt(l);
  const covTerm = trace(sigma1, d) + trace(sigma2, d) - 2 * trSqrt;
  const distance = Math.max(0, meanTerm + covTerm);
  if (!Number.isFinite(distance)) throw new RangeError('frechetDistance: statistics hold non-finite values');
  return { distance, meanTerm, covTerm };
}

/** Fréchet distance between two Gaussians given as statistics. */
export function frechetDistance(a: Pick<GaussianStats, 'mu' | 'sigma'>, b: Pick<GaussianStats, 'mu' | 'sigma'>): number {
  return frechetDistanceParts(a.mu, a.sigma, b.mu, b.sigma).distance;
}
