import { test } from 'node:test';
import assert from 'node:assert/strict';
import { symEig, sqrtmPsd, matmul, transpose, maxAbsDiff, identity } from '../src/eval/linalg.js';
import { featureStats, frechetDistance, frechetDistanceParts } from '../src/eval/fid.js';
import { kernelInceptionDistance, mmd2Unbiased } from '../src/eval/kid.js';
import { precisionRecall, knnRadii2 } from '../src/eval/prdc.js';
import { seededNormal, seededUniform } from '../src/eval/rng.js';

function randomMatrix(n: number, seed: number): Float64Array {
  const g = seededNormal(seed);
  return new Float64Array(n * n).map(() => g());
}
/** A random orthogonal matrix (Gram–Schmidt on a Gaussian matrix), rows orthonormal. */
function randomRotation(n: number, seed: number): Float64Array {
  const q = randomMatrix(n, seed);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < i; j++) {
      let dp = 0;
      for (let k = 0; k < n; k++) dp += q[i * n + k] * q[j * n + k];
      for (let k = 0; k < n; k++) q[i * n + k] -= dp * q[j * n + k];
    }
    let nn = 0;
    for (let k = 0; k < n; k++) nn += q[i * n + k] ** 2;
    for (let k = 0; k < n; k++) q[i * n + k] /= Math.sqrt(nn);
  }
  return q;
}
function diag(v: number[]): Float64Array {
  const n = v.length;
  const m = new Float64Array(n * n);
  v.forEach((x, i) => (m[i * n + i] = x));
  return m;
}
/** Q D Qᵀ */
function conj(q: Float64Array, d: Float64Array, n: number): Float64Array {
  return matmul(matmul(q, d, n), transpose(q, n), n);
}
function randomSpd(n: number, seed: number): Float64Array {
  const b = randomMatrix(n, seed);
  const a = matmul(b, transpose(b, n), n);
  for (let i = 0; i < n; i++) a[i * n + i] += 0.1;
  return a;
}
function close(a: number, b: number, tol: number, what = ''): void {
  assert.ok(Math.abs(a - b) <= tol, `${what} ${a} vs ${b} (tol ${tol})`);
}

test('symEig: A v = λ v, orthonormal vectors, ascending values, degenerate cases', () => {
  for (const n of [1, 2, 7, 40]) {
    const a = randomSpd(n, n);
    for (let i = 0; i < n * n; i++) a[i] -= 3 * ((i % (n + 1)) === 0 ? 1 : 0); // indefinite too
    const { values, vectors } = symEig(a, n);
    for (let j = 1; j < n; j++) assert.ok(values[j - 1] <= values[j]);
    for (let j = 0; j < n; j++) {
      const v = vectors!.subarray(j * n, j * n + n);
      for (let r = 0; r < n; r++) {
        let av = 0;
        for (let c = 0; c < n; c++) av += a[r * n + c] * v[c];
        close(av, values[j] * v[r], 1e-9 * (1 + Math.abs(values[j])), `n=${n} A v`);
      }
      for (let i = 0; i <= j; i++) {
        let dp = 0;
        for (let c = 0; c < n; c++) dp += vectors![i * n + c] * v[c];
        close(dp, i === j ? 1 : 0, 1e-10, 'orthonormality');
      }
    }
    const vonly = symEig(a, n, false);
    assert.equal(vonly.vectors, null);
    assert.ok(maxAbsDiff(vonly.values, values) < 1e-10);
  }
  assert.deepEqual(Array.from(symEig(identity(5), 5).values), [1, 1, 1, 1, 1]);
  assert.deepEqual(Array.from(symEig(new Float64Array(9), 3).values), [0, 0, 0]);
  assert.deepEqual(Array.from(symEig(diag([3, -1, 2]), 3).values), [-1, 2, 3]);
  assert.throws(() => symEig(new Float64Array(5), 2), /expected an 2x2 matrix/);
});

test('sqrtmPsd of known SPD matrices', () => {
  assert.ok(maxAbsDiff(sqrtmPsd(diag([4, 9, 0]), 3), diag([2, 3, 0])) < 1e-15);
  // [[2,1],[1,2]] has eigenpairs (3, [1,1]/√2), (1, [1,-1]/√2)
  const s3 = Math.sqrt(3);
  const want = new Float64Array([(s3 + 1) / 2, (s3 - 1) / 2, (s3 - 1) / 2, (s3 + 1) / 2]);
  assert.ok(maxAbsDiff(sqrtmPsd(new Float64Array([2, 1, 1, 2]), 2), want) < 1e-14);
  // R = Q diag(r) Qᵀ squared is Q diag(r²) Qᵀ
  const n = 30;
  const q = randomRotation(n, 5);
  const r = Array.from({ length: n }, (_, i) => 0.5 + i / 7);
  const root = sqrtmPsd(conj(q, diag(r.map((x) => x * x)), n), n);
  assert.ok(maxAbsDiff(root, conj(q, diag(r), n)) < 1e-12);
  // tiny negative rounding eigenvalues are clamped; clearly negative ones are an error
  assert.ok(maxAbsDiff(sqrtmPsd(diag([1, -1e-14]), 2), diag([1, 0])) < 1e-15);
  assert.throws(() => sqrtmPsd(diag([1, -0.5]), 2), /not positive semi-definite/);
});

test('symEig handles d = 256 quickly and accurately', () => {
  const n = 256;
  const a = randomSpd(n, 11);
  const t = performance.now();
  const root = sqrtmPsd(a, n);
  const ms = performance.now() - t;
  assert.ok(maxAbsDiff(matmul(root, root, n), a) < 1e-8 * n);
  assert.ok(ms < 5000, `sqrtm of 256x256 took ${ms} ms`);
});

test('Fréchet distance: diagonal closed form Σ(√a − √b)² + |Δμ|²', () => {
  const a = [1, 4, 0.25, 2];
  const b = [9, 1, 0.25, 0.5];
  const mu1 = new Float64Array([0, 1, 2, 3]);
  const mu2 = new Float64Array([1, 1, 0, 3]);
  const want = a.reduce((s, x, i) => s + (Math.sqrt(x) - Math.sqrt(b[i])) ** 2, 0) + 1 + 4;
  close(frechetDistance({ mu: mu1, sigma: diag(a) }, { mu: mu2, sigma: diag(b) }), want, 1e-12, 'diag');
  // N(0, I) vs N(0, c² I) in d dims: d (1 − c)²
  close(frechetDistance({ mu: new Float64Array(5), sigma: identity(5) }, { mu: new Float64Array(5), sigma: diag([4, 4, 4, 4, 4]) }), 5, 1e-12);
  // singular covariances are fine
  close(frechetDistance({ mu: mu1, sigma: diag([1, 0, 0, 0]) }, { mu: mu1, sigma: diag([0, 0, 0, 4]) }), 5, 1e-12, 'singular');
});

test('Fréchet distance: commuting (co-rotated) covariances equal the diagonal case', () => {
  const n = 8;
  const q = randomRotation(n, 3);
  const a = Array.from({ length: n }, (_, i) => 0.3 + i);
  const b = Array.from({ length: n }, (_, i) => 2 + Math.sin(i));
  const want = a.reduce((s, x, i) => s + (Math.sqrt(x) - Math.sqrt(b[i])) ** 2, 0);
  const mu = new Float64Array(n);
  const got = frechetDistance({ mu, sigma: conj(q, diag(a), n) }, { mu, sigma: conj(q, diag(b), n) });
  close(got, want, 1e-10, 'commuting');
});

test('Fréchet distance: non-commuting 2x2 against tr√M = √(tr M + 2√det M)', () => {
  const q = (t: number) => new Float64Array([Math.cos(t), -Math.sin(t), Math.sin(t), Math.cos(t)]);
  const s1 = conj(q(0.3), diag([3, 0.5]), 2);
  const s2 = conj(q(1.1), diag([0.2, 2]), 2);
  const trM = matmul(s1, s2, 2);
  const tr12 = trM[0] + trM[3];
  const det = (m: Float64Array) => m[0] * m[3] - m[1] * m[2];
  const trS = (m: Float64Array) => m[0] + m[3];
  const mu1 = new Float64Array([1, -2]);
  const mu2 = new Float64Array([0.5, 1]);
  const want = 0.25 + 9 + trS(s1) + trS(s2) - 2 * Math.sqrt(tr12 + 2 * Math.sqrt(det(s1) * det(s2)));
  const parts = frechetDistanceParts(mu1, s1, mu2, s2);
  close(parts.distance, want, 1e-12, '2x2');
  close(parts.meanTerm, 9.25, 1e-15);
  // symmetric in its arguments, and invariant under a common rotation (random 12-d case)
  const n = 12;
  const A = randomSpd(n, 21);
  const B = randomSpd(n, 22);
  const m1 = new Float64Array(n).map((_, i) => i / 3);
  const m2 = new Float64Array(n).map((_, i) => Math.cos(i));
  const d12 = frechetDistance({ mu: m1, sigma: A }, { mu: m2, sigma: B });
  close(frechetDistance({ mu: m2, sigma: B }, { mu: m1, sigma: A }), d12, 1e-9 * d12, 'symmetry');
  const R = randomRotation(n, 23);
  const rot = (v: Float64Array) => new Float64Array(n).map((_, i) => v.reduce((s, x, k) => s + R[i * n + k] * x, 0));
  close(frechetDistance({ mu: rot(m1), sigma: conj(R, A, n) }, { mu: rot(m2), sigma: conj(R, B, n) }), d12, 1e-9 * d12, 'rotation');
  assert.throws(() => frechetDistanceParts(m1, A, new Float64Array(3), B), /dimensions disagree/);
});

function gaussianSet(n: number, d: number, seed: number, shift = 0, scale = 1): Float64Array {
  const g = seededNormal(seed);
  return new Float64Array(n * d).map(() => g() * scale + shift);
}

test('featureStats: mean and unbiased covariance, stable under a large offset', () => {
  const x = new Float64Array([1, 2, 3, 5, 5, 9, 7, 1]); // 4 points in 2-d
  const s = featureStats(x, 4, 2);
  assert.deepEqual(Array.from(s.mu), [4, 4.25]);
  // numpy.cov([[1,3,5,7],[2,5,9,1]]) = [[6.6667, 0.3333],[0.3333, 12.9167]]
  close(s.sigma[0], 20 / 3, 1e-12);
  close(s.sigma[1], 1 / 3, 1e-12);
  close(s.sigma[2], 1 / 3, 1e-12);
  close(s.sigma[3], 155 / 12, 1e-12);
  const off = x.map((v) => v + 1e9);
  const so = featureStats(off, 4, 2);
  assert.ok(maxAbsDiff(so.sigma, s.sigma) < 1e-6);
  assert.throws(() => featureStats(x, 3, 2), /expected features \[3, 2\]/);
  assert.throws(() => featureStats(x.subarray(0, 2), 1, 2), /at least 2/);
});

test('identical sets: FID ≈ 0, precision = recall = 1; shifted sets score worse', () => {
  const n = 300;
  const d = 6;
  const x = gaussianSet(n, d, 1);
  const sx = featureStats(x, n, d);
  assert.ok(frechetDistance(sx, sx) < 1e-9);
  const pr = precisionRecall(x, n, x, n, d);
  assert.equal(pr.precision, 1);
  assert.equal(pr.recall, 1);
  assert.equal(pr.coverage, 1);
  let prev = -1;
  const prs: number[] = [];
  for (const shift of [0, 0.25, 0.5, 1, 2, 4]) {
    const y = gaussianSet(n, d, 2, shift);
    const fid = frechetDistance(sx, featureStats(y, n, d));
    assert.ok(fid > prev, `FID should grow with the shift: ${fid} after ${prev}`);
    prev = fid;
    if (shift >= 1) close(fid, d * shift * shift, 0.35 * d * shift * shift, 'mean term dominates');
    prs.push(precisionRecall(y, n, x, n, d).precision);
  }
  assert.ok(prs[prs.length - 1] < 0.05 && prs[0] > 0.7, `precision should collapse for far shifts: ${prs}`);
  // a collapsed (low-diversity) sample set keeps precision but loses recall
  const collapsed = gaussianSet(n, d, 3, 0, 0.2);
  const pc = precisionRecall(collapsed, n, x, n, d);
  assert.ok(pc.precision > 0.9 && pc.recall < 0.3, JSON.stringify(pc));
});

test('precision/recall/density/coverage on a hand-computed 1-d case', () => {
  // reference 0, 1, 2, 10 with k = 1: radii 1, 1, 1, 8
  const ref = new Float64Array([0, 1, 2, 10]);
  assert.deepEqual(Array.from(knnRadii2(ref, 4, 1, 1)), [1, 1, 1, 64]);
  // samples 0.5 (in balls 0,1), 5 (in ball of 10: |5-10| = 5 ≤ 8), 30 (none); sample radii 4.5, 4.5, 25
  const smp = new Float64Array([0.5, 5, 30]);
  const r = precisionRecall(smp, 3, ref, 4, 1, { k: 1 });
  close(r.precision, 2 / 3, 1e-15, 'precision');
  // reference 0,1,2 are within 4.5 of 0.5 → recall 3/4 ... 10 is within 25 of 30 → recall 1
  close(r.recall, 1, 1e-15, 'recall');
  close(r.density, 3 / 3, 1e-15, 'density'); // balls holding samples: 0.5→{0,1}, 5→{10}: 3 hits / (k·3)
  close(r.coverage, 3 / 4, 1e-15, 'coverage'); // balls of 0, 1, 10
  assert.throws(() => precisionRecall(smp, 3, ref, 4, 1, { k: 4 }), /need more than 4 points/);
});

test('KID: unbiased (same distribution averages to 0), positive for different ones', () => {
  // Independent draws of the unbiased MMD² estimator average to 0 within its standard error.
  const d = 4;
  const m = 16;
  const trials = 300;
  let sum = 0;
  let sum2 = 0;
  let biasedSum = 0;
  const g = seededNormal(99);
  for (let t = 0; t < trials; t++) {
    const x = new Float64Array(m * d).map(() => g());
    const y = new Float64Array(m * d).map(() => g());
    const v = mmd2Unbiased(x, m, y, m, d);
    sum += v;
    sum2 += v * v;
    // The biased (V-statistic) estimate adds the diagonal terms: the check below must be able to tell.
    let diagTerm = 0;
    for (const z of [x, y]) {
      for (let i = 0; i < m; i++) {
        let dp = 0;
        for (let k = 0; k < d; k++) dp += z[i * d + k] ** 2;
        diagTerm += (dp / d + 1) ** 3 / (m * m);
      }
    }
    biasedSum += v * ((m - 1) / m) + diagTerm; // approximately the V-statistic
  }
  const mean = sum / trials;
  const se = Math.sqrt((sum2 / trials - mean * mean) / trials);
  assert.ok(Math.abs(mean) < 4 * se, `unbiased mean ${mean} should be within 4 SE (${se}) of 0`);
  assert.ok(biasedSum / trials > 4 * se, `the biased estimate ${biasedSum / trials} should fail the same bound`);

  const n = 200;
  const x = gaussianSet(n, d, 5);
  const same = kernelInceptionDistance(x, n, gaussianSet(n, d, 6), n, d, { subsets: 50, subsetSize: 100 });
  const diff = kernelInceptionDistance(x, n, gaussianSet(n, d, 7, 0.7), n, d, { subsets: 50, subsetSize: 100 });
  assert.ok(Math.abs(same.mean) < 3 * same.std + 0.01, JSON.stringify(same));
  assert.ok(diff.mean > 5 * diff.std && diff.mean > 10 * Math.abs(same.mean), JSON.stringify({ same, diff }));
  assert.equal(same.subsets, 50);
  assert.equal(same.subsetSize, 100);
});

test('KID: precomputed and direct kernel paths agree; full-set subset equals MMD²', () => {
  const d = 3;
  const x = gaussianSet(60, d, 8);
  const y = gaussianSet(50, d, 9, 0.3);
  const a = kernelInceptionDistance(x, 60, y, 50, d, { subsets: 7, subsetSize: 20, seed: 4, precompute: true });
  const b = kernelInceptionDistance(x, 60, y, 50, d, { subsets: 7, subsetSize: 20, seed: 4, precompute: false });
  close(a.mean, b.mean, 1e-12, 'mean');
  close(a.std, b.std, 1e-12, 'std');
  const full = kernelInceptionDistance(x.subarray(0, 150), 50, y, 50, d, { subsets: 3, subsetSize: 50 });
  assert.equal(kernelInceptionDistance(x.subarray(0, 150), 50, y, 50, d, { subsets: 3 }).subsetSize, 25); // default: half a set
  close(full.mean, mmd2Unbiased(x.subarray(0, 150), 50, y, 50, d), 1e-12, 'full set');
  close(full.std, 0, 1e-12, 'same subset each time');
  const c = kernelInceptionDistance(x, 60, y, 50, d, { subsets: 7, subsetSize: 20, seed: 5 });
  assert.notEqual(c.mean, a.mean);
  assert.throws(() => kernelInceptionDistance(x, 60, y, 50, d, { subsetSize: 55 }), /subset size 55 exceeds/);
});

test('seeded generators are reproducible', () => {
  const a = seededUniform(42);
  const b = seededUniform(42);
  for (let i = 0; i < 10; i++) assert.equal(a(), b());
  const u = seededUniform(1);
  let s = 0;
  for (let i = 0; i < 10000; i++) s += u();
  close(s / 10000, 0.5, 0.02);
});
