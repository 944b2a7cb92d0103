// `speed-train -p evaluate`: sample set vs reference set in one feature space:
// Fréchet distance, KID, precision/recall (+ density/coverage), a printable
// table and eval.json.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { DataError } from '../errors.js';
import { writeFileAtomic } from '../io/npy.js';
import { type FeatureSpace, extractFeatures, resolveFeatureSpace } from './features.js';
import { featureStats, frechetDistanceParts } from './fid.js';
import { type KidOptions, kernelInceptionDistance } from './kid.js';
import { precisionRecall } from './prdc.js';
import { type ReferenceStats, isReferenceStatsFile, loadReferenceStats, referenceFromFeatures, saveReferenceStats } from './reference.js';
import { type EvalImages, type ImageSet, openImageSet } from './samples.js';

export interface EvaluateOptions {
  /** samples.npz, an .npy of uint8 images, a PNG folder, or images in memory */
  samples: string | ImageSet;
  /** the same kinds as samples, or cached statistics (a .npz with mu/sigma, or in memory) */
  reference: string | ImageSet | ReferenceStats;
  /** feature space name ('pixels-8x8', …) or object; default: the cached statistics' space, else pixels-8x8 */
  featureSpace?: string | FeatureSpace;
  /** where to write eval.json: a folder, or a path ending in .json */
  out?: string;
  /** write the reference statistics (with features) here, to reuse them next time */
  cacheReference?: string;
  kid?: KidOptions;
  /** k of the k-NN manifolds (default 3) */
  k?: number;
  /** progress lines (default: none) */
  log?: (line: string) => void;
}

/** What `evaluate` reports. Metrics that the reference cannot support (statistics without features) are null. */
export interface EvalResult {
  feature_space: string;
  feature_space_description: string | null;
  fid: number;
  fid_mean_term: number;
  fid_cov_term: number;
  kid_mean: number | null;
  kid_std: number | null;
  kid_subsets: number | null;
  kid_subset_size: number | null;
  precision: number | null;
  recall: number | null;
  density: number | null;
  coverage: number | null;
  prdc_k: number | null;
  n_samples: number;
  n_reference: number;
  samples: string;
  reference: string;
  seconds: number;
}

function isStats(r: EvaluateOptions['reference']): r is ReferenceStats {
  return typeof r === 'object' && 'mu' in r && 'sigma' in r;
}

/** Metrics of sample features against reference statistics (pure apart from time; for the experiment runner). */
export function evaluateFeatures(
  sampleFeatures: Float64Array,
  nSamples: number,
  ref: ReferenceStats,
  opts: { kid?: KidOptions; k?: number } = {},
): Omit<EvalResult, 'feature_space_description' | 'samples' | 'reference' | 'seconds'> {
  const dim = ref.dim;
  const s = featureStats(sampleFeatures, nSamples, dim);
  const f = frechetDistanceParts(s.mu, s.sigma, ref.mu, ref.sigma);
  let kid = null;
  let pr = null;
  if (ref.features) {
    const m = opts.kid?.subsetSize ?? Math.min(1000, nSamples, ref.n);
    kid = kernelInceptionDistance(sampleFeatures, nSamples, ref.features, ref.n, dim, { ...opts.kid, subsetSize: m });
    pr = precisionRecall(sampleFeatures, nSamples, ref.features, ref.n, dim, { k: opts.k ?? 3 });
  }
  return {
    feature_space: ref.featureSpace,
    fid: f.distance,
    fid_mean_term: f.meanTerm,
    fid_cov_term: f.covTerm,
    kid_mean: kid?.mean ?? null,
    kid_std: kid?.std ?? null,
    kid_subsets: kid?.subsets ?? null,
    kid_subset_size: kid?.subsetSize ?? null,
    precision: pr?.precision ?? null,
    recall: pr?.recall ?? null,
    density: pr?.density ?? null,
    coverage: pr?.coverage ?? null,
    prdc_k: pr?.k ?? null,
    n_samples: nSamples,
    n_reference: ref.n,
  };
}

/** Loads both sets, featurises them, computes every metric; writes eval.json when `out` is given. */
export async function runEvaluate(opts: EvaluateOptions): Promise<EvalResult> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  let cached: ReferenceStats | null = null;
  if (isStats(opts.reference)) cached = opts.reference;
  else if (typeof opts.reference === 'string' && opts.reference.endsWith('.npz') && fs.existsSync(opts.reference) && isReferenceStatsFile(opts.reference)) {
    cached = loadReferenceStats(opts.reference);
  }
  const space = await resolveFeatureSpace(opts.featureSpace ?? cached?.featureSpace);
  if (cached && cached.featureSpace !== space.name) {
    throw new DataError(cached.source, `reference statistics are in feature space '${cached.featureSpace}', but evaluation uses '${space.name}'`);
  }
  if (cached && cached.dim !== space.dim) {
    throw new DataError(cached.source, `reference statistics have dimension ${cached.dim}, feature space '${space.name}' has ${space.dim}`);
  }

  const samples: EvalImages = typeof opts.samples === 'string' ? await openImageSet(opts.samples) : opts.samples;
  let sf: Float64Array;
  try {
    if (samples.N < 2) throw new DataError(samples.source, `need at least 2 sample images, found ${samples.N}`);
    log(`samples: ${samples.N} images ${samples.H}x${samples.W}x${samples.C} from ${samples.source}${'rows' in samples ? ' (streamed from the file)' : ''}`);
    sf = await extractFeatures(space, samples);
  } finally {
    if ('close' in samples) samples.close();
  }

  let ref: ReferenceStats;
  if (cached) {
    ref = cached;
    log(`reference: cached statistics of ${ref.n} images from ${ref.source}${ref.features ? '' : ' (no features: FID only)'}`);
  } else {
    const imgs: EvalImages = typeof opts.reference === 'string' ? await openImageSet(opts.reference) : (opts.reference as ImageSet);
    try {
      if (imgs.N < 2) throw new DataError(imgs.source, `need at least 2 reference images, found ${imgs.N}`);
      log(`reference: ${imgs.N} images ${imgs.H}x${imgs.W}x${imgs.C} from ${imgs.source}`);
      ref = referenceFromFeatures(await extractFeatures(space, imgs), imgs.N, space.dim, space.name, imgs.source);
    } finally {
      if ('close' in imgs) imgs.close();
    }
  }
  if (opts.cacheReference) {
    saveReferenceStats(opts.cacheReference, ref);
    log(`reference statistics cached in ${opts.cacheReference}`);
  }

  const m = evaluateFeatures(sf, samples.N, ref, { kid: opts.kid, k: opts.k });
  const result: EvalResult = {
    ...m,
    feature_space: space.name,
    feature_space_description: space.description ?? null,
    samples: samples.source,
    reference: ref.source,
    seconds: (performance.now() - t0) / 1000,
  };
  if (opts.out) {
    const file = writeEvalJson(opts.out, result);
    log(`wrote ${file}`);
  }
  return result;
}

/** Writes eval.json (atomically) into a folder, or to a path ending in .json; returns the file written. */
export function writeEvalJson(out: string, result: EvalResult): string {
  const file = out.endsWith('.json') ? out : path.join(out, 'eval.json');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeFileAtomic(file, [Buffer.from(JSON.stringify(result, null, 2) + '\n', 'utf8')]);
  return file;
}

function fmt(v: number | null, digits = 4): string {
  if (v === null) return 'n/a';
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toExponential(digits - 1);
  return v.toFixed(digits);
}

/** A plain-text table of the result, naming the feature space. */
export function formatEvalTable(r: EvalResult): string {
  const rows: [string, string][] = [
    ['feature space', r.feature_space + (r.feature_space_description ? ` (${r.feature_space_description})` : '')],
    ['samples', `${r.n_samples}  ${r.samples}`],
    ['reference', `${r.n_reference}  ${r.reference}`],
    ['FID', `${fmt(r.fid)}  (mean term ${fmt(r.fid_mean_term)}, covariance term ${fmt(r.fid_cov_term)})`],
    ['KID', r.kid_mean === null ? 'n/a (reference has statistics only)' : `${fmt(r.kid_mean)} ± ${fmt(r.kid_std)}  (${r.kid_subsets} subsets of ${r.kid_subset_size})`],
    ['precision', fmt(r.precision)],
    ['recall', fmt(r.recall)],
    ['density', fmt(r.density)],
    ['coverage', fmt(r.coverage) + (r.prdc_k === null ? '' : `  (k = ${r.prdc_k})`)],
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  const lines = rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`);
  lines.push(`(metrics in ${r.feature_space} features are comparable only with each other, not with Inception FID)`);
  return lines.join('\n');
}
