import { test } from 'node:test';
import assert from 'node:assert/strict';
import { betasFor, type ScheduleName } from '../src/diffusion/schedule.js';
import { makeCoefs, toNativeTables } from '../src/diffusion/coefs.js';
import { spacedTimesteps, respace } from '../src/diffusion/respace.js';

// abar computed independently: a straightforward loop over the written formulas.
function refBeta(name: string, t: number, T: number): number {
  switch (name) {
    case 'linear': {
      const s = 1000 / T;
      return s * 1e-4 + ((s * 0.02 - s * 1e-4) * t) / (T - 1);
    }
    case 'quad': {
      const r = Math.sqrt(1e-4) + ((Math.sqrt(0.02) - Math.sqrt(1e-4)) * t) / (T - 1);
      return r * r;
    }
    case 'const':
      return 0.02;
    default: {
      const f = (u: number) => Math.cos(((u + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
      return Math.min(1 - f((t + 1) / T) / f(t / T), 0.999);
    }
  }
}
function refAbar(name: string, t: number, T: number): number {
  let a = 1;
  for (let s = 0; s <= t; s++) a *= 1 - refBeta(name, s, T);
  return a;
}

const close = (a: number, b: number, rel = 1e-10, what = '') =>
  assert.ok(Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b), 1e-300), `${what}: ${a} vs ${b}`);

test('abar at t = 0, 1, 499, 999 for every schedule (T = 1000) and linear at T = 250', () => {
  for (const name of ['linear', 'cosine', 'squaredcos_cap_v2', 'quad', 'const'] as ScheduleName[]) {
    const c = makeCoefs(betasFor(name, 1000));
    assert.equal(c.T, 1000);
    for (const t of [0, 1, 499, 999]) close(c.abar[t], refAbar(name, t, 1000), 1e-9, `${name} abar[${t}]`);
  }
  const c = makeCoefs(betasFor('linear', 250));
  for (const t of [0, 1, 124, 249]) close(c.abar[t], refAbar('linear', t, 250), 1e-9, `linear T=250 abar[${t}]`);
  // Known values: linear T=1000 ends with abar ~ 4.04e-5; betas span 1e-4..0.02 exactly.
  const lin = makeCoefs(betasFor('linear', 1000));
  assert.equal(lin.betas[0], 1e-4);
  assert.equal(lin.betas[999], 0.02);
  assert.ok(Math.abs(lin.abar[999] - 4.036e-5) < 1e-7, String(lin.abar[999]));
  // cosine caps betas at 0.999
  assert.equal(betasFor('cosine', 1000)[999], 0.999);
});

test('derived tables follow the formulas', () => {
  const c = makeCoefs(betasFor('cosine', 200));
  for (const t of [0, 1, 57, 199]) {
    const b = c.betas[t];
    const ap = t === 0 ? 1 : c.abar[t - 1];
    close(c.abarPrev[t], ap, 1e-15, 'abarPrev');
    close(c.alphas[t], 1 - b, 1e-15, 'alpha');
    close(c.sqrtAbar[t], Math.sqrt(c.abar[t]), 1e-14, 'sqrtAbar');
    close(c.sqrt1mAbar[t], Math.sqrt(1 - c.abar[t]), 1e-14, 'sqrt1mAbar');
    close(c.sqrtRecipAbar[t], 1 / Math.sqrt(c.abar[t]), 1e-14, 'sqrtRecipAbar');
    close(c.sqrtRecipm1Abar[t], Math.sqrt(1 / c.abar[t] - 1), 1e-14, 'sqrtRecipm1Abar');
    close(c.posteriorVariance[t], (b * (1 - ap)) / (1 - c.abar[t]), 1e-14, 'postVar');
    close(c.coef1[t], (b * Math.sqrt(ap)) / (1 - c.abar[t]), 1e-14, 'coef1');
    close(c.coef2[t], ((1 - ap) * Math.sqrt(1 - b)) / (1 - c.abar[t]), 1e-14, 'coef2');
    close(c.logBeta[t], Math.log(b), 1e-14, 'logBeta');
  }
  assert.equal(c.posteriorVariance[0], 0);
  assert.equal(c.postLogVar[0], Math.log(c.posteriorVariance[1]));
  assert.equal(c.postLogVar[5], Math.log(c.posteriorVariance[5]));
  const nt = toNativeTables(c);
  assert.deepEqual(Object.keys(nt).sort(), ['coef1', 'coef2', 'logBeta', 'postLogVar', 'sqrt1mAbar', 'sqrtAbar', 'sqrtRecipAbar', 'sqrtRecipm1Abar']);
  assert.deepEqual(nt.coef1, c.coef1);
  assert.notEqual(nt.coef1, c.coef1); // a copy
});

test('bad schedule inputs are errors naming what was expected', () => {
  assert.throws(() => betasFor('linear', 0), /T .* integer >= 1/);
  assert.throws(() => betasFor('sigmoid' as ScheduleName, 10), /unknown noise schedule "sigmoid".*linear, cosine/);
  assert.throws(() => makeCoefs([0.1, 0]), /betas\[1\]/);
});

// guided-diffusion's space_timesteps, restated: section i (of K) has size
// floor(T/K) + (i < T%K); it takes `count` indices start + round(j * (size-1)/(count-1)),
// with Python's round-half-to-even and the stride accumulated by repeated addition.
function expectedSections(T: number, counts: number[]): number[] {
  const out = new Set<number>();
  let start = 0;
  counts.forEach((count, i) => {
    const size = Math.floor(T / counts.length) + (i < T % counts.length ? 1 : 0);
    const stride = count <= 1 ? 1 : (size - 1) / (count - 1);
    let x = 0;
    for (let j = 0; j < count; j++) {
      const f = Math.floor(x);
      const r = x - f > 0.5 || (x - f === 0.5 && f % 2 === 1) ? f + 1 : f;
      out.add(start + r);
      x += stride;
    }
    start += size;
  });
  return [...out].sort((a, b) => a - b);
}

test('respaced step sets: "250", "10,15,20", "ddim50", ""', () => {
  const s250 = spacedTimesteps(1000, '250');
  assert.equal(s250.length, 250);
  assert.deepEqual(s250, expectedSections(1000, [250]));
  // stride 999/249 = 4.012...: starts 0, 4, 8, 12, ..., ends at 999
  assert.deepEqual(s250.slice(0, 4), [0, 4, 8, 12]);
  assert.equal(s250[249], 999);

  const s3 = spacedTimesteps(1000, '10,15,20');
  // sections of 334, 333, 333 steps
  assert.deepEqual(s3, expectedSections(1000, [10, 15, 20]));
  assert.equal(s3.length, 45);
  assert.deepEqual(s3.slice(0, 3), [0, 37, 74]);
  assert.equal(s3[9], 333); // end of the first section
  assert.equal(s3[10], 334); // start of the second
  assert.equal(s3[44], 999);

  const d50 = spacedTimesteps(1000, 'ddim50');
  assert.deepEqual(d50, Array.from({ length: 50 }, (_, i) => 20 * i));
  const d3 = spacedTimesteps(10, 'ddim3'); // stride 4: 0, 4, 8
  assert.deepEqual(d3, [0, 4, 8]);
  assert.deepEqual(spacedTimesteps(5, ''), [0, 1, 2, 3, 4]);
  assert.deepEqual(spacedTimesteps(1000, '1'), [0]);
  // half-to-even rounding: T = 6, 3 steps -> stride 2.5: 0, round(2.5)=2, 5
  assert.deepEqual(spacedTimesteps(6, '3'), [0, 2, 5]);
});

test('impossible respacing specs are errors', () => {
  assert.throws(() => spacedTimesteps(1000, '1001'), /cannot take 1001 steps from section 0 of 1000/);
  assert.throws(() => spacedTimesteps(10, '5,6'), /cannot take 6 steps from section 1 of 5/);
  assert.throws(() => spacedTimesteps(1000, 'ddim999'), /no integer stride gives exactly 999/);
  assert.throws(() => spacedTimesteps(10, 'ddim6'), /exactly 6/);
  assert.throws(() => spacedTimesteps(1000, 'ddimx'), /ddimN/);
  assert.throws(() => spacedTimesteps(1000, '25a'), /"25a"/);
  assert.throws(() => spacedTimesteps(1000, '0'), /keeps no step/);
});

test('respaced betas: 1 - abar_t/abar_prev_kept, same abar at kept steps, map to original t', () => {
  const base = makeCoefs(betasFor('linear', 1000));
  const kept = spacedTimesteps(1000, 'ddim50');
  const { coefs: rc, timestepMap } = respace(base, kept);
  assert.equal(rc.T, 50);
  assert.deepEqual([...timestepMap], kept);
  assert.equal(rc.betas[0], 1 - base.abar[0]);
  for (const i of [1, 10, 49]) {
    close(rc.betas[i], 1 - base.abar[kept[i]] / base.abar[kept[i - 1]], 1e-15, `beta'[${i}]`);
    close(rc.abar[i], base.abar[kept[i]], 1e-12, `abar'[${i}]`);
  }
  assert.throws(() => respace(base, [3, 3]), /strictly increasing/);
  assert.throws(() => respace(base, [1000]), /\[0, 1000\)/);
});
