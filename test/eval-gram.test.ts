// Precision/recall from the addon's GEMM distances (src/eval/gram.ts, the path
// large feature sets take) against the exact scalar loops on the same sets.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { useAddon } from './helpers-e2e.js';

useAddon();
const { GramDistances, NATIVE_MIN_WORK, nativeGram } = await import('../src/eval/gram.js');
const { knnRadii2, precisionRecall } = await import('../src/eval/prdc.js');
const { kernelInceptionDistance } = await import('../src/eval/kid.js');
const { seededNormal } = await import('../src/eval/rng.js');

function gaussianSet(n: number, d: number, seed: number, shift = 0, scale = 1): Float64Array {
  const g = seededNormal(seed);
  return new Float64Array(n * d).map(() => g() * scale + shift);
}

test('the addon has gramF32, and its blocks are |a|^2 + |b|^2 - 2ab', () => {
  const gram = nativeGram();
  assert.ok(gram, 'the addon must export gramF32');
  const a = gaussianSet(5, 7, 1);
  const b = gaussianSet(9, 7, 2);
  const dist = new GramDistances(a, 5, b, 9, 7, gram);
  const blk = dist.block(1, 3);
  for (let r = 0; r < 3; r++) {
    for (let j = 0; j < 9; j++) {
      let s = 0;
      for (let k = 0; k < 7; k++) s += (a[(1 + r) * 7 + k] - b[j * 7 + k]) ** 2;
      assert.ok(Math.abs(blk[r * 9 + j] - s) <= 1e-4 * (1 + s), `[${r}, ${j}] ${blk[r * 9 + j]} vs ${s}`);
    }
  }
  assert.throws(() => gram(new Float32Array(6), new Float32Array(6), { n: 3, m: 2, d: 2, threads: 0 }), /b has 6 elements, expected m\*d = 4/);
});

test('large sets take the GEMM path and agree with the exact loops', () => {
  const n = 1200;
  const d = 96;
  assert.ok(n * n * d >= NATIVE_MIN_WORK, 'the sizes must select the GEMM path');
  const ref = gaussianSet(n, d, 3);
  const smp = gaussianSet(n, d, 4, 0.15, 0.9);
  const exact = knnRadii2(ref, n, d, 3, 'exact');
  const fast = knnRadii2(ref, n, d, 3);
  let worst = 0;
  for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(fast[i] - exact[i]) / exact[i]);
  assert.ok(worst < 1e-4, `radii relative difference ${worst}`);
  const e = precisionRecall(smp, n, ref, n, d, { distances: 'exact' });
  const f = precisionRecall(smp, n, ref, n, d);
  // only points within float32 rounding of a ball's edge may change sides
  for (const k of ['precision', 'recall', 'coverage'] as const) assert.ok(Math.abs(e[k] - f[k]) <= 2 / n, `${k}: ${f[k]} vs exact ${e[k]}`);
  assert.ok(Math.abs(e.density - f.density) <= 2 / n, `density: ${f.density} vs exact ${e.density}`);
  assert.ok(e.precision > 0.05 && e.precision < 0.95 && e.recall > 0.05 && e.recall < 0.95, JSON.stringify(e));
  // identical sets stay at precision = recall = 1 on the GEMM path (self-distances are not counted)
  const same = precisionRecall(ref, n, ref, n, d);
  assert.equal(same.precision, 1);
  assert.equal(same.recall, 1);
});

test('KID of large subsets takes its dot products from the GEMM and agrees with the exact loops', () => {
  const n = 600;
  const d = 1600;
  const m = 300;
  assert.ok(m * m * d >= NATIVE_MIN_WORK, 'the sizes must select the GEMM path');
  const x = gaussianSet(n, d, 5, 0, 0.5);
  const y = gaussianSet(n, d, 6, 0.02, 0.5);
  const opts = { subsets: 4, subsetSize: m, seed: 3, precompute: false };
  const e = kernelInceptionDistance(x, n, y, n, d, { ...opts, dots: 'exact' });
  const f = kernelInceptionDistance(x, n, y, n, d, opts);
  assert.ok(Math.abs(e.mean) > 1e-4, `the sets must differ: ${e.mean}`);
  assert.ok(Math.abs(f.mean - e.mean) <= 1e-5 * Math.abs(e.mean) + 1e-9, `KID ${f.mean} vs exact ${e.mean}`);
  assert.ok(Math.abs(f.std - e.std) <= 1e-4 * e.std + 1e-9, `std ${f.std} vs exact ${e.std}`);
});
