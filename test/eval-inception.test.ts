// The paper-grade metrics of -p evaluate: FID against pytorch-fid's formula
// (scipy sqrtm), the Inception Score against its definition, sFID / IS / ADM
// reference batches through a stand-in 'inception-v3' space (the real network's
// weights are not part of the tests), the real-vs-real floors, KID's spread,
// and the refusal of weak classifier feature spaces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { writeNpy } from '../src/io/npy.js';
import { writeNpz } from '../src/io/npz.js';
import { featureStats, frechetDistanceParts } from '../src/eval/fid.js';
import { inceptionScore, labelAccuracy, softmaxRows } from '../src/eval/inception-score.js';
import { evaluateFeatures, formatEvalTable, runEvaluate, realFloor } from '../src/eval/evaluate.js';
import { pixelFeatureSpace, resolveFeatureSpace, type FeatureOutputs, type FeatureSpace, type ImageBatch } from '../src/eval/features.js';
import { referenceFromFeatures, loadReferenceStats } from '../src/eval/reference.js';
import { defaultKidSubsetSize, kernelInceptionDistance } from '../src/eval/kid.js';
import { seededNormal, seededUniform } from '../src/eval/rng.js';
import { ConfigError, DataError } from '../src/errors.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eval-inception-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

function scipyPython(): string | null {
  for (const py of ['python3', '/usr/bin/python3']) {
    if (spawnSync(py, ['-c', 'import numpy, scipy.linalg'], { encoding: 'utf8' }).status === 0) return py;
  }
  return null;
}
const PY = scipyPython();

/** A random covariance: A Aᵀ / d + small diagonal, for A with entries ~N(0,1) (non-commuting pairs). */
function randomCov(d: number, seed: number): Float64Array {
  const g = seededNormal(seed);
  const a = Float64Array.from({ length: d * d }, () => g());
  const s = new Float64Array(d * d);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) {
    let v = 0;
    for (let k = 0; k < d; k++) v += a[i * d + k] * a[j * d + k] * (1 + k / 4);
    s[i * d + j] = v / d + (i === j ? 0.05 : 0);
  }
  return s;
}

test('FID equals pytorch-fid\'s calculate_frechet_distance (scipy sqrtm) to 1e-6 relative', { skip: PY ? false : 'no python3 with numpy and scipy' }, () => {
  const d = 16;
  const cases = [[1, 0.3], [2, 0], [3, 2.5]] as const;
  const ours: number[] = [];
  for (const [seed, shift] of cases) {
    const g = seededNormal(seed + 100);
    const mu1 = Float64Array.from({ length: d }, () => g());
    const mu2 = Float64Array.from(mu1, (v) => v + shift * g());
    const s1 = randomCov(d, seed);
    const s2 = randomCov(d, seed + 50);
    const sub = path.join(dir, `fid-${seed}`);
    fs.mkdirSync(sub);
    writeNpy(path.join(sub, 'mu1.npy'), { dtype: 'float64', shape: [d], data: mu1 });
    writeNpy(path.join(sub, 'mu2.npy'), { dtype: 'float64', shape: [d], data: mu2 });
    writeNpy(path.join(sub, 's1.npy'), { dtype: 'float64', shape: [d, d], data: s1 });
    writeNpy(path.join(sub, 's2.npy'), { dtype: 'float64', shape: [d, d], data: s2 });
    ours.push(frechetDistanceParts(mu1, s1, mu2, s2).distance);
  }
  // pytorch-fid's formula: sqrtm of the (non-symmetric) product Σ₁Σ₂, real part, trace
  const script = `
import sys, numpy as np
from scipy import linalg
def sqrtm(a):
    try:
        return linalg.sqrtm(a, disp=False)[0]
    except TypeError:
        return linalg.sqrtm(a)
for d in sys.argv[1:]:
    mu1, mu2, s1, s2 = (np.load(d + '/' + k + '.npy') for k in ('mu1', 'mu2', 's1', 's2'))
    covmean = sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * 1e-6
        covmean = sqrtm((s1 + off).dot(s2 + off))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    print(repr(float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))))
`;
  const r = spawnSync(PY!, ['-W', 'ignore', '-c', script, ...cases.map(([seed]) => path.join(dir, `fid-${seed}`))], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const refs = r.stdout.trim().split('\n').map(Number);
  assert.equal(refs.length, cases.length, r.stdout);
  refs.forEach((ref, i) => {
    assert.ok(Number.isFinite(ref) && ref > 0, `scipy gave ${ref}`);
    assert.ok(Math.abs(ours[i] - ref) <= 1e-6 * Math.abs(ref), `case ${i}: ours ${ours[i]}, pytorch-fid ${ref}, rel ${Math.abs(ours[i] - ref) / ref}`);
  });
});

test('Inception Score on hand-computable predictions', () => {
  // p = (1/4, 3/4) and (3/4, 1/4): the marginal is uniform, KL = 1/4 ln(1/2) + 3/4 ln(3/2) for both
  const ln3 = Math.log(3);
  const logits = [0, ln3, ln3, 0];
  const p = softmaxRows(logits, 2, 2);
  assert.ok(Math.abs(p[0] - 0.25) < 1e-15 && Math.abs(p[1] - 0.75) < 1e-15);
  const kl = 0.25 * Math.log(0.5) + 0.75 * Math.log(1.5);
  const one = inceptionScore(logits, 2, 2);
  assert.ok(Math.abs(one.mean - Math.exp(kl)) < 1e-14, `IS ${one.mean} vs ${Math.exp(kl)}`);
  assert.deepEqual([one.splits, one.splitSize, one.std], [1, 5000, 0]);
  // confident and spread over k classes: IS = k; all the same prediction: IS = 1
  const k = 5;
  const sure = Array.from({ length: k * k }, (_, i) => (i % k === Math.floor(i / k) ? 0 : -1000));
  assert.ok(Math.abs(inceptionScore(sure, k, k).mean - k) < 1e-12);
  const same = Array.from({ length: 4 * k }, (_, i) => (i % k) * 0.7);
  assert.ok(Math.abs(inceptionScore(same, 4, k).mean - 1) < 1e-12);
  // splits (ADM: consecutive chunks of split_size, mean of exp(KL)): [sure 5 | same 4] with split 5
  const mixed = inceptionScore([...sure, ...same], 9, k, 5);
  assert.equal(mixed.splits, 2);
  assert.ok(Math.abs(mixed.mean - (k + 1) / 2) < 1e-12, `split mean ${mixed.mean}`);
  assert.ok(Math.abs(mixed.std - (k - 1) / 2) < 1e-12);
  assert.equal(labelAccuracy(sure, k, k, [0, 1, 2, 0, 4]), 0.8);
});

test('KID spread: subsets are at most half of each set, so small sets get a real ± (not 0)', () => {
  const d = 6;
  const n = 20;
  const g = seededNormal(9);
  const x = Float64Array.from({ length: n * d }, () => g());
  const y = Float64Array.from({ length: n * d }, () => g() + 0.2);
  assert.equal(defaultKidSubsetSize(n, n), 10);
  assert.equal(defaultKidSubsetSize(50000, 50000), 1000);
  const k = kernelInceptionDistance(x, n, y, n, d, { subsets: 30 });
  assert.equal(k.subsetSize, 10);
  assert.ok(k.std > 0, `std ${k.std}`);
  // what the old default (a subset = the whole set) gave: no spread at all
  assert.ok(kernelInceptionDistance(x, n, y, n, d, { subsets: 30, subsetSize: n }).std < 1e-12);
  const ref = referenceFromFeatures(y, n, d, 'toy', 'y');
  const m = evaluateFeatures(x, n, ref, { kid: { subsets: 30 } });
  assert.equal(m.kid_subset_size, 10);
  assert.ok(m.kid_std! > 0);
  // fewer than 4 images in a set: no KID rather than a meaningless one
  assert.equal(evaluateFeatures(x.subarray(0, 3 * d), 3, ref, { k: 2 }).kid_mean, null);
});

test('real-vs-real floor: disjoint parts of the reference, min(N, n/2) vs the rest', () => {
  const d = 4;
  const g = seededNormal(5);
  const nr = 30;
  const y = Float64Array.from({ length: nr * d }, () => g());
  const ref = referenceFromFeatures(y, nr, d, 'toy', 'y');
  const f = realFloor(ref, 8)!;
  assert.deepEqual([f.nA, f.nB], [8, 22]);
  assert.ok(f.fid > 0 && f.kid !== null);
  const big = realFloor(ref, 1000)!;
  assert.deepEqual([big.nA, big.nB], [15, 15]);
  // the parts are disjoint and cover the set: their pooled mean is the set's mean
  const m = evaluateFeatures(y.subarray(0, 8 * d), 8, ref);
  assert.deepEqual([m.floor_n_a, m.floor_n_b, m.fid_floor], [8, 22, f.fid]);
  assert.equal(realFloor({ ...ref, features: null }, 8), null);
  // samples from the reference distribution land near the floor; shifted ones far above it
  const fresh = Float64Array.from({ length: 15 * d }, () => g());
  const shifted = Float64Array.from({ length: 15 * d }, () => g() + 1.5);
  const near = evaluateFeatures(fresh, 15, ref);
  const far = evaluateFeatures(shifted, 15, ref);
  assert.ok(far.fid > 3 * far.fid_floor!, `shifted FID ${far.fid} vs floor ${far.fid_floor}`);
  assert.ok(near.fid < 3 * near.fid_floor!, `same-distribution FID ${near.fid} vs floor ${near.fid_floor}`);
});

// ---- a stand-in 'inception-v3' space: small dims, deterministic functions of the pixels ----

const H = 8;
const FEAT = 6;
const SPATIAL = 5;
const LOGITS = 4;

/** Features, spatial features and logits as fixed functions of each image's quadrant means. */
function fakeOutputs(b: ImageBatch): FeatureOutputs {
  const { N, H: h, W, C, data } = b;
  const features = new Float64Array(N * FEAT);
  const spatial = new Float64Array(N * SPATIAL);
  const logits = new Float64Array(N * LOGITS);
  for (let n = 0; n < N; n++) {
    const q = [0, 0, 0, 0];
    for (let y = 0; y < h; y++) for (let x = 0; x < W; x++) {
      const v = data[((n * h + y) * W + x) * C] / 255;
      q[(y < h / 2 ? 0 : 2) + (x < W / 2 ? 0 : 1)] += v / ((h * W) / 4);
    }
    const f = [q[0], q[1], q[2], q[3], q[0] * q[3], q[1] - q[2]];
    features.set(f, n * FEAT);
    spatial.set([q[0] + q[1], q[2] + q[3], q[0] * q[1], q[2] * q[3], q[0] - q[3]], n * SPATIAL);
    logits.set(q.map((v) => 6 * v), n * LOGITS);
  }
  return { features, logits, spatial };
}

function fakeInception(classifier?: FeatureSpace['classifier']): FeatureSpace {
  return {
    name: classifier ? 'fake-classifier' : 'inception-v3',
    dim: FEAT,
    extras: { logits: LOGITS, spatial: classifier ? undefined : SPATIAL },
    classifier,
    extract: (b) => fakeOutputs(b).features,
    extractAll: async (b) => {
      const o = fakeOutputs(b);
      return classifier ? { features: o.features, logits: o.logits } : o;
    },
  };
}

/** N grey 8x8 images, one bright quadrant each (label = the quadrant), plus noise. */
function quadrantImages(N: number, seed: number, bright = 200): { data: Uint8Array; labels: Int32Array } {
  const u = seededUniform(seed);
  const data = new Uint8Array(N * H * H * 3);
  const labels = new Int32Array(N);
  for (let n = 0; n < N; n++) {
    const k = Math.floor(u() * 4);
    labels[n] = k;
    for (let y = 0; y < H; y++) for (let x = 0; x < H; x++) {
      const inQ = (y < H / 2 ? 0 : 2) + (x < H / 2 ? 0 : 1) === k;
      const v = Math.round((inQ ? bright : 30) + 40 * u());
      for (let c = 0; c < 3; c++) data[((n * H + y) * H + x) * 3 + c] = Math.min(255, v);
    }
  }
  return { data, labels };
}

function statsOf(o: Float64Array, n: number, d: number) {
  return featureStats(o, n, d);
}

test('inception-v3 space: ADM reference batch (mu, sigma, mu_s, sigma_s, arr_0) gives FID, sFID, IS, KID, precision/recall and floors', async () => {
  const ns = 24;
  const s = quadrantImages(ns, 1);
  const samples = path.join(dir, 'samples.npz');
  writeNpz(samples, { arr_0: { dtype: 'uint8', shape: [ns, H, H, 3], data: s.data }, arr_1: { dtype: 'int64', shape: [ns], data: BigInt64Array.from(s.labels, (v) => BigInt(v)) } });
  // the batch's statistics come from a (larger) set than its images, as ADM's VIRTUAL_* batches
  const big = quadrantImages(200, 2, 180);
  const bo = fakeOutputs({ data: big.data, N: 200, H, W: H, C: 3 });
  const pool = statsOf(bo.features, 200, FEAT);
  const sp = statsOf(bo.spatial!, 200, SPATIAL);
  const nImg = 30;
  const imgs = quadrantImages(nImg, 3, 180);
  const adm = path.join(dir, 'VIRTUAL_toy.npz');
  writeNpz(adm, {
    mu: { dtype: 'float64', shape: [FEAT], data: pool.mu },
    sigma: { dtype: 'float64', shape: [FEAT, FEAT], data: pool.sigma },
    mu_s: { dtype: 'float64', shape: [SPATIAL], data: sp.mu },
    sigma_s: { dtype: 'float64', shape: [SPATIAL, SPATIAL], data: sp.sigma },
    arr_0: { dtype: 'uint8', shape: [nImg, H, H, 3], data: imgs.data },
  });
  const r = await runEvaluate({ samples, reference: adm, featureSpace: fakeInception(), kid: { subsets: 20 }, out: path.join(dir, 'adm-eval') });
  const so = fakeOutputs({ data: s.data, N: ns, H, W: H, C: 3 });
  const ss = statsOf(so.features, ns, FEAT);
  const sss = statsOf(so.spatial!, ns, SPATIAL);
  // FID and sFID against the batch's own statistics (not its 30 images), as ADM's evaluator
  assert.ok(Math.abs(r.fid - frechetDistanceParts(ss.mu, ss.sigma, pool.mu, pool.sigma).distance) < 1e-12 * r.fid);
  assert.ok(Math.abs(r.sfid! - frechetDistanceParts(sss.mu, sss.sigma, sp.mu, sp.sigma).distance) < 1e-12 * r.sfid!);
  assert.ok(Math.abs(r.inception_score! - inceptionScore(so.logits!, ns, LOGITS).mean) < 1e-12);
  assert.equal(r.reference_kind, 'adm-reference-batch');
  assert.equal(r.n_reference, nImg);
  assert.ok(r.precision !== null && r.recall !== null && r.kid_mean !== null);
  assert.deepEqual([r.floor_n_a, r.floor_n_b], [15, 15]);
  assert.ok(r.fid_floor !== null && r.sfid_floor !== null && r.kid_floor_mean !== null);
  assert.equal(r.class_accuracy, null); // Inception's classes are not the data's
  assert.equal(r.feature_space_accuracy, null);
  const table = formatEvalTable(r);
  assert.match(table, /sFID\s+\d/);
  assert.match(table, /IS\s+\d/);
  assert.match(table, /FID .*real-vs-real floor .*15 vs 15 reference images/);
  assert.doesNotMatch(table, /not with Inception FID/);
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'adm-eval', 'eval.json'), 'utf8'));
  for (const k of ['sfid', 'inception_score', 'fid_floor', 'kid_floor_mean', 'floor_n_a', 'feature_space_accuracy']) assert.ok(k in json, k);

  // the same batch without images: FID and sFID only
  const statsOnly = path.join(dir, 'VIRTUAL_stats_only.npz');
  writeNpz(statsOnly, {
    mu: { dtype: 'float64', shape: [FEAT], data: pool.mu }, sigma: { dtype: 'float64', shape: [FEAT, FEAT], data: pool.sigma },
    mu_s: { dtype: 'float64', shape: [SPATIAL], data: sp.mu }, sigma_s: { dtype: 'float64', shape: [SPATIAL, SPATIAL], data: sp.sigma },
  });
  const fo = await runEvaluate({ samples, reference: statsOnly, featureSpace: fakeInception() });
  assert.equal(fo.fid, r.fid);
  assert.equal(fo.sfid, r.sfid);
  assert.deepEqual([fo.kid_mean, fo.precision, fo.fid_floor], [null, null, null]);

  // refused in every other space, before any network loads, saying why
  await assert.rejects(runEvaluate({ samples, reference: adm, featureSpace: 'pixels-8x8' }),
    (e: Error) => e instanceof DataError && /VIRTUAL_toy\.npz: an ADM reference batch holds Inception-v3 statistics.*feature_space=inception-v3.*uses feature space 'pixels-8x8'/.test(e.message));
  await assert.rejects(runEvaluate({ samples, reference: adm, featureSpace: 'featnet:nothing.safetensors' }), /an ADM reference batch holds Inception-v3 statistics/);
  // spatial statistics of another length than the space's
  await assert.rejects(runEvaluate({ samples, reference: adm, featureSpace: { ...fakeInception(), extras: { logits: LOGITS, spatial: 7 } } }),
    /mu_s, sigma_s\) have dimension 5, feature space 'inception-v3' has 7/);
  // mu and sigma that disagree
  const bad = path.join(dir, 'bad-adm.npz');
  writeNpz(bad, {
    mu: { dtype: 'float64', shape: [FEAT], data: pool.mu }, sigma: { dtype: 'float64', shape: [FEAT - 1, FEAT - 1], data: new Float64Array((FEAT - 1) ** 2) },
    mu_s: { dtype: 'float64', shape: [SPATIAL], data: sp.mu }, sigma_s: { dtype: 'float64', shape: [SPATIAL, SPATIAL], data: sp.sigma },
  });
  assert.throws(() => loadReferenceStats(bad), /bad-adm\.npz: read as an ADM reference batch .*sigma must be float64 \[6, 6\]/);
});

test('inception-v3 space: fresh reference images cache sFID statistics; a cache of another space is refused', async () => {
  const s = quadrantImages(20, 4);
  const r = quadrantImages(26, 5);
  const cache = path.join(dir, 'inc-cache.npz');
  const a = await runEvaluate({
    samples: { data: s.data, N: 20, H, W: H, C: 3, source: 's' }, reference: { data: r.data, N: 26, H, W: H, C: 3, source: 'r' },
    featureSpace: fakeInception(), cacheReference: cache,
  });
  assert.equal(a.reference_kind, 'images');
  assert.deepEqual([a.floor_n_a, a.floor_n_b], [13, 13]);
  assert.ok(a.sfid !== null && a.sfid_floor !== null);
  const b = await runEvaluate({ samples: { data: s.data, N: 20, H, W: H, C: 3, source: 's' }, reference: cache, featureSpace: fakeInception() });
  assert.equal(b.reference_kind, 'statistics');
  assert.ok(Math.abs(b.sfid! - a.sfid!) < 1e-9 * a.sfid!);
  assert.equal(b.fid_floor, a.fid_floor);
  assert.equal(b.sfid_floor, null); // spatial features are not cached, only their statistics
  await assert.rejects(runEvaluate({ samples: { data: s.data, N: 20, H, W: H, C: 3, source: 's' }, reference: cache, featureSpace: pixelFeatureSpace(2) }),
    /inc-cache\.npz: reference statistics are in feature space 'inception-v3', but evaluation uses 'pixels-2x2'/);
});

test("'inception-v3' names the weights it needs; a missing file is a clear error", async () => {
  await assert.rejects(resolveFeatureSpace('inception-v3'), (e: Error) => e instanceof ConfigError && /evaluate\.inception\.path: feature space 'inception-v3' needs the Inception-v3 weights file.*--inception FILE/.test(e.message));
  await assert.rejects(resolveFeatureSpace('inception-v3', { inceptionPath: path.join(dir, 'pt_inception.pth') }), /pt_inception\.pth does not exist/);
  await assert.rejects(resolveFeatureSpace('inceptionv3'), /unknown feature space 'inceptionv3'; expected .*'inception-v3'/);
  // an existing file: loaded by the Inception network when the build has it, else a clear error (never a bare module error)
  const weights = path.join(dir, 'not-inception-weights.bin');
  fs.writeFileSync(weights, 'not weights');
  const hasNet = fs.existsSync(new URL('../src/eval/inception.ts', import.meta.url));
  await assert.rejects(resolveFeatureSpace('inception-v3', { inceptionPath: weights }), (e: Error) =>
    hasNet ? !/Cannot find module|ERR_MODULE_NOT_FOUND/.test(e.message) : /feature space 'inception-v3' is not available: this build has no Inception-v3 network/.test(e.message));
});

test('classifier spaces: held-out accuracy on every result line, refused below the threshold, class accuracy of conditional samples', async () => {
  const ns = 40;
  const s = quadrantImages(ns, 7);
  // a third of the labels wrong: the classifier (argmax of the quadrant means) agrees with 2/3 of them
  const labels = Int32Array.from(s.labels, (v, i) => (i % 3 === 0 ? (v + 1) % 4 : v));
  const samples = path.join(dir, 'cond.npz');
  writeNpz(samples, { arr_0: { dtype: 'uint8', shape: [ns, H, H, 3], data: s.data }, arr_1: { dtype: 'int64', shape: [ns], data: BigInt64Array.from(labels, (v) => BigInt(v)) } });
  const ref = quadrantImages(30, 8);
  const reference = { data: ref.data, N: 30, H, W: H, C: 3, source: 'ref' };
  const weak = fakeInception({ numClasses: 4, heldOutAccuracy: 0.31, heldOutSize: 500 });
  await assert.rejects(runEvaluate({ samples, reference, featureSpace: weak }),
    (e: Error) => e instanceof ConfigError && /evaluate\.min_feature_accuracy: feature space fake-classifier is a classifier with held-out accuracy 0\.3100 on 500 images .*below the required 0\.5.*evaluate\.allow_weak_features=true/.test(e.message));
  await assert.rejects(runEvaluate({ samples, reference, featureSpace: fakeInception({ numClasses: 4, heldOutAccuracy: 0.8, heldOutSize: 500 }), minFeatureAccuracy: 0.9 }), /held-out accuracy 0\.8000 .*below the required 0\.9/);
  const lines: string[] = [];
  const r = await runEvaluate({ samples, reference, featureSpace: weak, allowWeakFeatures: true, log: (l) => lines.push(l) });
  assert.equal(r.feature_space_weak, true);
  assert.equal(r.feature_space_accuracy, 0.31);
  assert.equal(r.feature_space_held_out_size, 500);
  assert.ok(lines.some((l) => /warning: feature space fake-classifier is a weak classifier/.test(l)));
  const expected = labels.reduce((c, y, i) => c + (y === s.labels[i] ? 1 : 0), 0) / ns;
  assert.equal(r.class_accuracy, expected);
  assert.ok(expected > 0.6 && expected < 0.7);
  const table = formatEvalTable(r);
  for (const row of ['FID', 'IS', 'KID', 'precision', 'recall', 'density', 'coverage', 'class accuracy']) {
    const line = table.split('\n').find((l) => l.startsWith(row + ' '));
    assert.ok(line && /\[held-out acc 0\.310, WEAK\]/.test(line), `${row}: ${line}`);
  }
  // labels outside the classifier's classes: no class accuracy
  const other = await runEvaluate({ samples, reference, featureSpace: fakeInception({ numClasses: 4, heldOutAccuracy: 0.9, heldOutSize: 10 }), labels: new Int32Array(ns).fill(7) });
  assert.equal(other.class_accuracy, null);
  assert.equal(other.feature_space_weak, false);
});
