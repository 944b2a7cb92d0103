// Reference statistics: what the metrics need of the reference set in one
// feature space, cached as an .npz so a dataset is featurised once.
//
// File layout (all little-endian .npy entries):
//   format         uint8  UTF-8 "speed-train-reference/1"
//   feature_space  uint8  UTF-8 name of the feature space (e.g. "pixels-8x8")
//   mu             float64 [d]
//   sigma          float64 [d, d]
//   n              int64  [1]     number of reference images
//   features       float64 [n, d] (optional; needed for KID and precision/recall)
//   mu_s, sigma_s  float64 [ds], [ds, ds] (optional; spatial-feature statistics, for sFID)
//
// ADM's reference batches (openai/guided-diffusion, e.g. VIRTUAL_imagenet256_labeled.npz)
// are read too: mu, sigma, mu_s, sigma_s of Inception-v3 pool_3 / mixed_6 features and
// usually the images themselves (arr_0). They carry no feature_space entry; their
// statistics are Inception-v3's, so they serve the 'inception-v3' space only.

import { DataError } from '../errors.js';
import { type NdArray, type NdArrayInput } from '../io/npy.js';
import { listNpz, readNpz, writeNpz } from '../io/npz.js';
import { featureStats } from './fid.js';
import { INCEPTION_DIMS, INCEPTION_SPACE } from './inception-space.js';

export const REFERENCE_FORMAT = 'speed-train-reference/1';

export interface ReferenceStats {
  featureSpace: string;
  dim: number;
  n: number;
  mu: Float64Array;
  sigma: Float64Array;
  /** features [n, dim], or null when only the Gaussian statistics are known (FID only) */
  features: Float64Array | null;
  source: string;
  /** statistics of the spatial features (sFID), when the space has them */
  spatial?: { dim: number; mu: Float64Array; sigma: Float64Array } | null;
  /** the spatial features themselves [n, spatial.dim] while in memory (the real-vs-real sFID floor); never saved */
  spatialFeatures?: Float64Array | null;
  /** an ADM reference batch: the images (arr_0) are in the file too when `admImages` is set */
  adm?: { images: boolean } | null;
}

/** Statistics (and the features themselves) of a reference feature set. */
export function referenceFromFeatures(features: Float64Array, n: number, dim: number, featureSpace: string, source: string): ReferenceStats {
  const s = featureStats(features, n, dim);
  return { featureSpace, dim, n, mu: s.mu, sigma: s.sigma, features, source };
}

const utf8 = (s: string): NdArrayInput => {
  const b = Buffer.from(s, 'utf8');
  return { dtype: 'uint8', shape: [b.length], data: new Uint8Array(b.buffer, b.byteOffset, b.length) };
};

/** Writes reference statistics as an .npz (features included unless `withFeatures` is false). */
export function saveReferenceStats(file: string, ref: ReferenceStats, withFeatures = true): void {
  const arrays: Record<string, NdArrayInput> = {
    format: utf8(REFERENCE_FORMAT),
    feature_space: utf8(ref.featureSpace),
    mu: { dtype: 'float64', shape: [ref.dim], data: ref.mu },
    sigma: { dtype: 'float64', shape: [ref.dim, ref.dim], data: ref.sigma },
    n: { dtype: 'int64', shape: [1], data: new BigInt64Array([BigInt(ref.n)]) },
  };
  if (withFeatures && ref.features) arrays.features = { dtype: 'float64', shape: [ref.n, ref.dim], data: ref.features };
  if (ref.spatial) {
    arrays.mu_s = { dtype: 'float64', shape: [ref.spatial.dim], data: ref.spatial.mu };
    arrays.sigma_s = { dtype: 'float64', shape: [ref.spatial.dim, ref.spatial.dim], data: ref.spatial.sigma };
  }
  writeNpz(file, arrays);
}

/** True when an .npz holds cached statistics (mu and sigma) rather than images. */
export function isReferenceStatsFile(file: string): boolean {
  const keys = listNpz(file);
  return keys.includes('mu') && keys.includes('sigma');
}

/** Reads cached reference statistics, checking every array's dtype and shape. */
export function loadReferenceStats(file: string): ReferenceStats {
  const keys = listNpz(file);
  if (!keys.includes('mu') || !keys.includes('sigma')) {
    throw new DataError(file, `not a reference-statistics file: expected arrays mu and sigma, found ${keys.join(', ')}`);
  }
  if (!keys.includes('feature_space')) {
    if (keys.includes('mu_s') && keys.includes('sigma_s')) return loadAdmReferenceBatch(file, keys);
    throw new DataError(
      file,
      'holds mu and sigma but no feature_space entry (nor the mu_s / sigma_s of an ADM reference batch), so the space ' +
        'they were computed in is unknown; recompute them with -p evaluate and evaluate.cache_reference',
    );
  }
  const want = ['format', 'feature_space', 'mu', 'sigma', 'n', ...['features', 'mu_s', 'sigma_s'].filter((k) => keys.includes(k))];
  const z = readNpz(file, { keys: want.filter((k) => keys.includes(k)) });
  const text = (k: string): string => {
    const a = z[k];
    if (!a || a.dtype !== 'uint8' || a.shape.length !== 1) throw new DataError(file, `${k} must be a UTF-8 uint8 vector`);
    return Buffer.from(a.data as Uint8Array).toString('utf8');
  };
  if (z.format && text('format') !== REFERENCE_FORMAT) {
    throw new DataError(file, `format '${text('format')}' is not supported; expected '${REFERENCE_FORMAT}'`);
  }
  const featureSpace = text('feature_space');
  const mu = z.mu;
  if (mu.dtype !== 'float64' || mu.shape.length !== 1) throw new DataError(file, `mu must be float64 [d], found ${mu.dtype} [${mu.shape.join(', ')}]`);
  const dim = mu.shape[0];
  const sigma = z.sigma;
  if (sigma.dtype !== 'float64' || sigma.shape.length !== 2 || sigma.shape[0] !== dim || sigma.shape[1] !== dim) {
    throw new DataError(file, `sigma must be float64 [${dim}, ${dim}], found ${sigma.dtype} [${sigma.shape.join(', ')}]`);
  }
  let n = 0;
  if (z.n) {
    if (z.n.dtype !== 'int64' || z.n.data.length !== 1) throw new DataError(file, 'n must be int64 [1]');
    n = Number((z.n.data as BigInt64Array)[0]);
  }
  let features: Float64Array | null = null;
  if (z.features) {
    const f = z.features;
    if (f.dtype !== 'float64' || f.shape.length !== 2 || f.shape[1] !== dim || (z.n && f.shape[0] !== n)) {
      throw new DataError(file, `features must be float64 [${z.n ? n : 'n'}, ${dim}], found ${f.dtype} [${f.shape.join(', ')}]`);
    }
    features = f.data as Float64Array;
    n = f.shape[0];
  }
  const spatial = z.mu_s && z.sigma_s ? gaussian(file, z.mu_s, z.sigma_s, 'mu_s', 'sigma_s', null) : null;
  return { featureSpace, dim, n, mu: mu.data as Float64Array, sigma: sigma.data as Float64Array, features, source: file, spatial };
}

/** mean [d] and covariance [d, d] arrays (float64, or float32 widened) checked against each other and `want` (d). */
function gaussian(file: string, mu: NdArray, sigma: NdArray, mk: string, sk: string, want: number | null): { dim: number; mu: Float64Array; sigma: Float64Array } {
  const float = (a: NdArray) => a.dtype === 'float64' || a.dtype === 'float32';
  if (!float(mu) || mu.shape.length !== 1 || (want !== null && mu.shape[0] !== want)) {
    throw new DataError(file, `${mk} must be float64 [${want ?? 'd'}], found ${mu.dtype} [${mu.shape.join(', ')}]`);
  }
  const d = mu.shape[0];
  if (!float(sigma) || sigma.shape.length !== 2 || sigma.shape[0] !== d || sigma.shape[1] !== d) {
    throw new DataError(file, `${sk} must be float64 [${d}, ${d}], found ${sigma.dtype} [${sigma.shape.join(', ')}]`);
  }
  const f64 = (a: NdArray) => (a.data instanceof Float64Array ? a.data : Float64Array.from(a.data as Float32Array));
  const m = f64(mu);
  const s = f64(sigma);
  for (const [k, a] of [[mk, m], [sk, s]] as const) {
    if (!a.every(Number.isFinite)) throw new DataError(file, `${k} holds non-finite values`);
  }
  return { dim: d, mu: m, sigma: s };
}

/** An ADM reference batch: Inception-v3 statistics (mu, sigma; mu_s, sigma_s) and maybe its images (arr_0). */
function loadAdmReferenceBatch(file: string, keys: string[]): ReferenceStats {
  const z = readNpz(file, { keys: ['mu', 'sigma', 'mu_s', 'sigma_s'] });
  const what = `an ADM reference batch (Inception-v3 statistics: mu/sigma of the ${INCEPTION_DIMS.features} pool_3 features, mu_s/sigma_s of the ${INCEPTION_DIMS.spatial} spatial features)`;
  let pool;
  let spatial;
  try {
    // the lengths are checked against the Inception network's when it is loaded
    pool = gaussian(file, z.mu, z.sigma, 'mu', 'sigma', null);
    spatial = gaussian(file, z.mu_s, z.sigma_s, 'mu_s', 'sigma_s', null);
  } catch (e) {
    throw new DataError(file, `read as ${what}: ${(e as DataError).message.slice(file.length + 2)}`);
  }
  const images = keys.includes('arr_0');
  return {
    featureSpace: INCEPTION_SPACE, dim: pool.dim, n: 0, mu: pool.mu, sigma: pool.sigma, features: null, source: file,
    spatial, adm: { images },
  };
}
