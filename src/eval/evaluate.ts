// `speed-train -p evaluate`: sample set vs reference set in one feature space:
// Fréchet distance, KID, precision/recall (+ density/coverage); in spaces with
// more outputs sFID (spatial features), the Inception Score (logits) and the
// class accuracy of conditional samples (a classifier of the data's classes);
// beside each distance the real-vs-real floor (the same metric between two
// disjoint parts of the reference set); a printable table and eval.json.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, DataError } from '../errors.js';
import { writeFileAtomic } from '../io/npy.js';
import { type AllFeatures, type FeatureSpace, extractAllFeatures, resolveFeatureSpace } from './features.js';
import { featureStats, frechetDistanceParts } from './fid.js';
import { INCEPTION_SPACE } from './inception-space.js';
import { inceptionScore, labelAccuracy } from './inception-score.js';
import { type KidOptions, defaultKidSubsetSize, kernelInceptionDistance } from './kid.js';
import { precisionRecall } from './prdc.js';
import { type ReferenceStats, isReferenceStatsFile, loadReferenceStats, referenceFromFeatures, saveReferenceStats } from './reference.js';
import { sampleWithoutReplacement, seededUniform } from './rng.js';
import { type EvalImages, type ImageSet, openImageSet, readSampleLabels } from './samples.js';

export interface EvaluateOptions {
  /** samples.npz, an .npy of uint8 images, a PNG folder, or images in memory */
  samples: string | ImageSet;
  /** the same kinds as samples, cached statistics (a .npz with mu/sigma, or in memory), or an ADM reference batch */
  reference: string | ImageSet | ReferenceStats;
  /** feature space name ('pixels-8x8', 'inception-v3', …) or object; default: the cached statistics' space, else pixels-8x8 */
  featureSpace?: string | FeatureSpace;
  /** the Inception-v3 weights file, for featureSpace 'inception-v3' */
  inceptionPath?: string | null;
  device?: 'cpu' | 'cuda';
  threads?: number;
  /** where to write eval.json: a folder, or a path ending in .json */
  out?: string;
  /** write the reference statistics (with features) here, to reuse them next time */
  cacheReference?: string;
  kid?: KidOptions;
  /** k of the k-NN manifolds (default 3) */
  k?: number;
  /** a classifier feature space below this held-out accuracy is refused (default 0.5) */
  minFeatureAccuracy?: number;
  /** evaluate in a classifier space below minFeatureAccuracy anyway (the result says so) */
  allowWeakFeatures?: boolean;
  /** the samples' conditioning labels (default: arr_1 of a samples .npz, when present) */
  labels?: Int32Array | null;
  /** progress lines (default: none) */
  log?: (line: string) => void;
}

/** What `evaluate` reports. Metrics that the reference or the space cannot support are null. */
export interface EvalResult {
  feature_space: string;
  feature_space_description: string | null;
  /** held-out top-1 accuracy of the classifier that defines the space (null: not a trained classifier) */
  feature_space_accuracy: number | null;
  feature_space_held_out_size: number | null;
  /** true when the space's classifier is below the accuracy threshold and was allowed anyway */
  feature_space_weak: boolean;
  fid: number;
  fid_mean_term: number;
  fid_cov_term: number;
  /** FID of the spatial features (Inception-v3: mixed_6/conv, first 7 channels) */
  sfid: number | null;
  /** from the space's logits: mean (and std) over splits of `is_split_size` samples */
  inception_score: number | null;
  inception_score_std: number | null;
  is_splits: number | null;
  is_split_size: number | null;
  kid_mean: number | null;
  kid_std: number | null;
  kid_subsets: number | null;
  kid_subset_size: number | null;
  precision: number | null;
  recall: number | null;
  density: number | null;
  coverage: number | null;
  prdc_k: number | null;
  /** the space's classifier on the samples against their conditioning labels */
  class_accuracy: number | null;
  /** real-vs-real floors: the metric between floor_n_a and floor_n_b disjoint reference images */
  fid_floor: number | null;
  sfid_floor: number | null;
  kid_floor_mean: number | null;
  kid_floor_std: number | null;
  floor_n_a: number | null;
  floor_n_b: number | null;
  n_samples: number;
  n_reference: number;
  /** images: featurised here; statistics: a cache; adm-reference-batch: ADM's Inception statistics (+ its images) */
  reference_kind: 'images' | 'statistics' | 'adm-reference-batch';
  samples: string;
  reference: string;
  seconds: number;
}

function isStats(r: EvaluateOptions['reference']): r is ReferenceStats {
  return typeof r === 'object' && 'mu' in r && 'sigma' in r;
}

export const DEFAULT_MIN_FEATURE_ACCURACY = 0.5;

/**
 * What the feature-accuracy gate weighs: the accuracy of the classifier that
 * defines a feature space, where it was measured, and the threshold with the
 * keys (or experiment.json fields) that set it.
 */
export interface FeatureAccuracyCheck {
  /** the feature space (or network) the message names */
  space: string;
  /** top-1 accuracy of its classifier on `heldOutSize` images it was not trained on */
  accuracy: number;
  heldOutSize: number;
  /** what those images are, e.g. "images" or "real test images" */
  measuredOn: string;
  /** classes of the classifier (the message gives chance, 1 / numClasses) */
  numClasses?: number;
  /** the lowest accuracy accepted */
  min: number;
  /** go on below `min` (the caller marks its results weak) */
  allow: boolean;
  /** the key that sets `min` (default evaluate.min_feature_accuracy) */
  minKey?: string;
  /** the key that would allow a weak space (default evaluate.allow_weak_features; null: no override exists) */
  allowKey?: string | null;
  /** the file that sets them (an experiment.json); none for config keys, whose file the key names */
  file?: string;
  /** what to do instead, said when there is no override (default: train the feature network further) */
  remedy?: string;
}

/**
 * The one feature-accuracy gate (-p evaluate, FID during training, the
 * experiment): refuses a classifier feature space whose held-out accuracy is
 * below `min`, since distances in a classifier that cannot tell the classes
 * apart say little about the images, unless `allow`; returns whether the space
 * is weak (below `min` and allowed).
 */
export function checkFeatureSpaceAccuracy(g: FeatureAccuracyCheck): boolean {
  if (g.accuracy >= g.min) return false; // a NaN accuracy (a failed measurement) never passes
  if (g.allow) return true;
  const allowKey = g.allowKey === undefined ? 'evaluate.allow_weak_features' : g.allowKey;
  const chance = g.numClasses ? ` (chance ${(1 / g.numClasses).toFixed(3)})` : '';
  throw new ConfigError(
    g.minKey ?? 'evaluate.min_feature_accuracy',
    `feature space ${g.space} is a classifier with held-out accuracy ${g.accuracy.toFixed(4)} on ${g.heldOutSize} ${g.measuredOn}${chance}, ` +
      `below the required ${g.min}: metrics in it would not mean much (${g.remedy ?? 'train the feature network further'}` +
      `${allowKey ? `, or set ${allowKey}=true to evaluate in it anyway` : ''})`,
    g.file,
  );
}

/** The gate's inputs for a space defined by a classifier (null: not one, so there is nothing to gate). */
export function classifierAccuracy(space: FeatureSpace): Pick<FeatureAccuracyCheck, 'space' | 'accuracy' | 'heldOutSize' | 'measuredOn' | 'numClasses'> | null {
  const c = space.classifier;
  return c ? { space: space.name, accuracy: c.heldOutAccuracy, heldOutSize: c.heldOutSize, measuredOn: 'images', numClasses: c.numClasses } : null;
}

/** Optional inputs of evaluateFeatures beyond the pool features. */
export interface EvaluateFeaturesOptions {
  kid?: KidOptions;
  k?: number;
  /** the space (its classifier's held-out accuracy goes into the result) */
  space?: FeatureSpace;
  /** the samples' spatial features [n, ref.spatial.dim] (sFID against ref.spatial) */
  sampleSpatial?: Float64Array | null;
  /** the samples' logits [n, L] (Inception Score; class accuracy with labels and a classifier space) */
  sampleLogits?: Float64Array | null;
  labels?: Int32Array | null;
  /** compute the real-vs-real floors from ref.features (default true) */
  floor?: boolean;
  /** seed of the floor's split of the reference set (default 0) */
  floorSeed?: number;
}

type FeatureMetrics = Omit<EvalResult, 'feature_space_description' | 'samples' | 'reference' | 'seconds' | 'reference_kind' | 'feature_space_weak'>;

/** KID with subsets that leave room to vary: at most half of each set per subset (null when a set is under 4). */
function kidOf(x: Float64Array, nx: number, y: Float64Array, ny: number, dim: number, opts?: KidOptions) {
  const m = opts?.subsetSize ?? defaultKidSubsetSize(nx, ny);
  if (m < 2) return null;
  return kernelInceptionDistance(x, nx, y, ny, dim, { ...opts, subsetSize: m });
}

function rows(src: Float64Array, idx: Uint32Array, d: number): Float64Array {
  const out = new Float64Array(idx.length * d);
  for (let r = 0; r < idx.length; r++) out.set(src.subarray(idx[r] * d, idx[r] * d + d), r * d);
  return out;
}

/**
 * The real-vs-real floor: the reference set split (seeded) into a part of
 * min(nSamples, n/2) images, in the samples' role, and the rest; FID, KID and
 * (with spatial features) sFID between them. A model's metric near its floor is
 * as close to the data as this sample count can show.
 */
export function realFloor(ref: ReferenceStats, nSamples: number, opts: { kid?: KidOptions; seed?: number } = {}) {
  if (!ref.features) return null;
  const n = ref.n;
  const a = Math.min(nSamples, Math.floor(n / 2));
  if (a < 2) return null;
  const order = sampleWithoutReplacement(n, n, seededUniform(opts.seed ?? 0));
  const ia = order.subarray(0, a);
  const ib = order.subarray(a);
  const fa = rows(ref.features, ia, ref.dim);
  const fb = rows(ref.features, ib, ref.dim);
  const sa = featureStats(fa, a, ref.dim);
  const sb = featureStats(fb, ib.length, ref.dim);
  const fid = frechetDistanceParts(sa.mu, sa.sigma, sb.mu, sb.sigma).distance;
  const kid = kidOf(fa, a, fb, ib.length, ref.dim, opts.kid);
  let sfid: number | null = null;
  if (ref.spatial && ref.spatialFeatures) {
    const d = ref.spatial.dim;
    const pa = featureStats(rows(ref.spatialFeatures, ia, d), a, d);
    const pb = featureStats(rows(ref.spatialFeatures, ib, d), ib.length, d);
    sfid = frechetDistanceParts(pa.mu, pa.sigma, pb.mu, pb.sigma).distance;
  }
  return { fid, sfid, kid, nA: a, nB: ib.length };
}

/** Metrics of sample features against reference statistics (pure apart from time; for the experiment runner). */
export function evaluateFeatures(sampleFeatures: Float64Array, nSamples: number, ref: ReferenceStats, opts: EvaluateFeaturesOptions = {}): FeatureMetrics {
  const dim = ref.dim;
  const s = featureStats(sampleFeatures, nSamples, dim);
  const f = frechetDistanceParts(s.mu, s.sigma, ref.mu, ref.sigma);
  let kid = null;
  let pr = null;
  if (ref.features) {
    kid = kidOf(sampleFeatures, nSamples, ref.features, ref.n, dim, opts.kid);
    pr = precisionRecall(sampleFeatures, nSamples, ref.features, ref.n, dim, { k: opts.k ?? 3 });
  }
  let sfid: number | null = null;
  if (opts.sampleSpatial && ref.spatial) {
    const ss = featureStats(opts.sampleSpatial, nSamples, ref.spatial.dim);
    sfid = frechetDistanceParts(ss.mu, ss.sigma, ref.spatial.mu, ref.spatial.sigma).distance;
  }
  let is = null;
  let classAcc: number | null = null;
  if (opts.sampleLogits) {
    const L = opts.sampleLogits.length / nSamples;
    is = inceptionScore(opts.sampleLogits, nSamples, L);
    const c = opts.space?.classifier;
    const y = opts.labels;
    if (c && y && c.numClasses === L && y.length === nSamples && y.every((v) => v >= 0 && v < L)) {
      classAcc = labelAccuracy(opts.sampleLogits, nSamples, L, y);
    }
  }
  const floor = opts.floor === false ? null : realFloor(ref, nSamples, { kid: opts.kid, seed: opts.floorSeed });
  const c = opts.space?.classifier;
  return {
    feature_space: ref.featureSpace,
    feature_space_accuracy: c?.heldOutAccuracy ?? null,
    feature_space_held_out_size: c?.heldOutSize ?? null,
    fid: f.distance,
    fid_mean_term: f.meanTerm,
    fid_cov_term: f.covTerm,
    sfid,
    inception_score: is?.mean ?? null,
    inception_score_std: is?.std ?? null,
    is_splits: is?.splits ?? null,
    is_split_size: is?.splitSize ?? null,
    kid_mean: kid?.mean ?? null,
    kid_std: kid?.std ?? null,
    kid_subsets: kid?.subsets ?? null,
    kid_subset_size: kid?.subsetSize ?? null,
    precision: pr?.precision ?? null,
    recall: pr?.recall ?? null,
    density: pr?.density ?? null,
    coverage: pr?.coverage ?? null,
    prdc_k: pr?.k ?? null,
    class_accuracy: classAcc,
    fid_floor: floor?.fid ?? null,
    sfid_floor: floor?.sfid ?? null,
    kid_floor_mean: floor?.kid?.mean ?? null,
    kid_floor_std: floor?.kid?.std ?? null,
    floor_n_a: floor?.nA ?? null,
    floor_n_b: floor?.nB ?? null,
    n_samples: nSamples,
    n_reference: ref.n,
  };
}

/** Statistics of a freshly featurised reference set (spatial statistics too when the space has them). */
function referenceOf(all: AllFeatures, n: number, space: FeatureSpace, source: string): ReferenceStats {
  const ref = referenceFromFeatures(all.features, n, space.dim, space.name, source);
  if (all.spatial) {
    const d = all.spatial.length / n;
    const st = featureStats(all.spatial, n, d);
    ref.spatial = { dim: d, mu: st.mu, sigma: st.sigma };
    ref.spatialFeatures = all.spatial;
  }
  return ref;
}

async function featurise(space: FeatureSpace, p: string | ImageSet, what: string, log: (l: string) => void): Promise<{ all: AllFeatures; N: number; source: string }> {
  const imgs: EvalImages = typeof p === 'string' ? await openImageSet(p) : p;
  try {
    if (imgs.N < 2) throw new DataError(imgs.source, `need at least 2 ${what} images, found ${imgs.N}`);
    log(`${what}: ${imgs.N} images ${imgs.H}x${imgs.W}x${imgs.C} from ${imgs.source}${'rows' in imgs ? ' (streamed from the file)' : ''}`);
    return { all: await extractAllFeatures(space, imgs), N: imgs.N, source: imgs.source };
  } finally {
    if ('close' in imgs) imgs.close();
  }
}

const ADM_ONLY = `an ADM reference batch holds Inception-v3 statistics (pool_3 and mixed_6/conv features of FID's Inception network), ` +
  `which compare only with samples in that same space: set evaluate.feature_space=${INCEPTION_SPACE} (and evaluate.inception.path), or give real images as the reference`;

/** Loads both sets, featurises them, computes every metric; writes eval.json when `out` is given. */
export async function runEvaluate(opts: EvaluateOptions): Promise<EvalResult> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  let cached: ReferenceStats | null = null;
  if (isStats(opts.reference)) cached = opts.reference;
  else if (typeof opts.reference === 'string' && opts.reference.endsWith('.npz') && fs.existsSync(opts.reference) && isReferenceStatsFile(opts.reference)) {
    cached = loadReferenceStats(opts.reference);
  }
  const spec = opts.featureSpace ?? cached?.featureSpace;
  // Before any network loads: an ADM batch is only ever Inception-v3's.
  if (cached?.adm && (typeof spec === 'string' ? spec : spec?.name) !== INCEPTION_SPACE) {
    throw new DataError(cached.source, `${ADM_ONLY}; the evaluation uses feature space '${typeof spec === 'string' ? spec : spec?.name}'`);
  }
  const space = await resolveFeatureSpace(spec, { inceptionPath: opts.inceptionPath, device: opts.device, threads: opts.threads });
  if (cached && cached.featureSpace !== space.name) {
    throw new DataError(cached.source, `reference statistics are in feature space '${cached.featureSpace}', but evaluation uses '${space.name}'`);
  }
  if (cached && cached.dim !== space.dim) {
    throw new DataError(cached.source, `reference statistics have dimension ${cached.dim}, feature space '${space.name}' has ${space.dim}`);
  }
  const spatialDim = space.extractAll ? space.extras?.spatial : undefined;
  if (cached?.spatial && spatialDim !== undefined && cached.spatial.dim !== spatialDim) {
    throw new DataError(cached.source, `spatial statistics (mu_s, sigma_s) have dimension ${cached.spatial.dim}, feature space '${space.name}' has ${spatialDim} spatial features`);
  }
  const measured = classifierAccuracy(space);
  const weak = measured !== null && checkFeatureSpaceAccuracy({ ...measured, min: opts.minFeatureAccuracy ?? DEFAULT_MIN_FEATURE_ACCURACY, allow: opts.allowWeakFeatures ?? false });
  if (weak) log(`warning: feature space ${space.name} is a weak classifier (held-out accuracy ${measured.accuracy.toFixed(4)}); evaluating in it because weak features are allowed`);

  const sm = await featurise(space, opts.samples, 'samples', log);
  let labels = opts.labels ?? null;
  if (labels === undefined || labels === null) {
    if (typeof opts.samples === 'string' && opts.samples.endsWith('.npz')) labels = readSampleLabels(opts.samples, sm.N);
  } else if (labels.length !== sm.N) {
    throw new RangeError(`evaluate: ${labels.length} labels for ${sm.N} samples`);
  }

  let ref: ReferenceStats;
  let kind: EvalResult['reference_kind'] = 'images';
  if (cached?.adm) {
    kind = 'adm-reference-batch';
    ref = cached;
    if (cached.adm.images) {
      // FID and sFID use the batch's own statistics (as ADM's evaluator); its images give KID, precision/recall and the floors.
      const r = await featurise(space, cached.source, 'reference images of the ADM batch', log);
      ref = { ...cached, n: r.N, features: r.all.features, spatialFeatures: r.all.spatial };
    } else {
      log(`reference: ADM statistics from ${cached.source} without images (FID and sFID only)`);
    }
  } else if (cached) {
    kind = 'statistics';
    ref = cached;
    log(`reference: cached statistics of ${ref.n} images from ${ref.source}${ref.features ? '' : ' (no features: FID only)'}`);
  } else {
    const r = await featurise(space, opts.reference as string | ImageSet, 'reference', log);
    ref = referenceOf(r.all, r.N, space, r.source);
  }
  if (opts.cacheReference) {
    if (kind === 'adm-reference-batch') throw new ConfigError('evaluate.cache_reference', `the reference is an ADM batch (${ref.source}), already statistics: nothing to cache`);
    saveReferenceStats(opts.cacheReference, ref);
    log(`reference statistics cached in ${opts.cacheReference}`);
  }

  const m = evaluateFeatures(sm.all.features, sm.N, ref, {
    kid: opts.kid, k: opts.k, space, sampleSpatial: sm.all.spatial, sampleLogits: sm.all.logits, labels,
  });
  const result: EvalResult = {
    ...m,
    feature_space: space.name,
    feature_space_description: space.description ?? null,
    feature_space_weak: weak,
    reference_kind: kind,
    samples: sm.source,
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

/** A plain-text table of the result, naming the feature space (and its classifier's accuracy on every metric line). */
export function formatEvalTable(r: EvalResult): string {
  const acc = r.feature_space_accuracy === null ? '' : `  [held-out acc ${r.feature_space_accuracy.toFixed(3)}${r.feature_space_weak ? ', WEAK' : ''}]`;
  const floorSizes = r.floor_n_a === null ? '' : `, ${r.floor_n_a} vs ${r.floor_n_b} reference images`;
  const floor = (v: number | null) => (v === null ? '' : `  real-vs-real floor ${fmt(v)}${floorSizes}`);
  const rows: [string, string][] = [
    ['feature space', r.feature_space + (r.feature_space_description ? ` (${r.feature_space_description})` : '')],
    ['samples', `${r.n_samples}  ${r.samples}`],
    ['reference', `${r.n_reference}  ${r.reference}${r.reference_kind === 'adm-reference-batch' ? '  (ADM reference batch: FID/sFID from its statistics)' : ''}`],
    ['FID', `${fmt(r.fid)}  (mean term ${fmt(r.fid_mean_term)}, covariance term ${fmt(r.fid_cov_term)})${floor(r.fid_floor)}${acc}`],
  ];
  if (r.sfid !== null) rows.push(['sFID', `${fmt(r.sfid)}${floor(r.sfid_floor)}${acc}`]);
  if (r.inception_score !== null) rows.push(['IS', `${fmt(r.inception_score, 2)} ± ${fmt(r.inception_score_std, 2)}  (${r.is_splits} split${r.is_splits === 1 ? '' : 's'} of ${r.is_split_size})${acc}`]);
  rows.push(['KID', r.kid_mean === null
    ? `n/a (${r.precision === null ? 'reference has statistics only' : 'fewer than 4 images in a set'})`
    : `${fmt(r.kid_mean)} ± ${fmt(r.kid_std)}  (${r.kid_subsets} subsets of ${r.kid_subset_size})` +
      (r.kid_floor_mean === null ? '' : `  real-vs-real floor ${fmt(r.kid_floor_mean)} ± ${fmt(r.kid_floor_std)}${floorSizes}`) + acc]);
  rows.push(['precision', fmt(r.precision) + acc], ['recall', fmt(r.recall) + acc], ['density', fmt(r.density) + acc],
    ['coverage', fmt(r.coverage) + (r.prdc_k === null ? '' : `  (k = ${r.prdc_k})`) + acc]);
  if (r.class_accuracy !== null) rows.push(['class accuracy', `${fmt(r.class_accuracy)}  (the space's classifier on the samples vs their conditioning labels)${acc}`]);
  if (r.fid_floor === null) rows.push(['floor', r.precision === null ? 'n/a (the reference has statistics only)' : 'n/a (needs at least 4 reference images)']);
  const w = Math.max(...rows.map(([k]) => k.length));
  const lines = rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`);
  if (r.feature_space !== INCEPTION_SPACE) lines.push(`(metrics in ${r.feature_space} features are comparable only with each other, not with Inception FID)`);
  return lines.join('\n');
}
