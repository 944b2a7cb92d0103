// Statistics of the experiment on hand-computed cases: Student-t quantiles
// against tables (scipy.stats.t.ppf), intervals on known data, equal-step
// ratios, the speed-up curve (interpolation, not reached, noisy baseline) and
// the aggregation over seeds.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { aggregateSeeds, equalStepRatios, holmAdjust, logGamma, logInterval, pairedLogRatioTest, speedupCurve, tCdf, tInterval, tQuantile } from '../src/experiment/stats.js';
import { flatness, speedupFactor } from '../src/experiment/speedup.js';

const curve = (pairs: [number, number][]) => pairs.map(([step, value]) => ({ step, value }));
const close = (a: number | null, b: number, tol: number, what = '') => assert.ok(a !== null && Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

test('Student-t quantiles and CDF match the tables', () => {
  // scipy.stats.t.ppf(0.975, df)
  const table: [number, number][] = [[1, 12.706204736432095], [2, 4.302652729911275], [3, 3.182446305284263], [4, 2.7764451051977987], [9, 2.2621571627409915], [30, 2.0422724563012373]];
  for (const [df, q] of table) close(tQuantile(0.975, df), q, 1e-9 * q, `df ${df}`);
  close(tQuantile(0.025, 4), -2.7764451051977987, 1e-9, 'lower tail');
  close(tCdf(1.5, 3), 0.8847080673775886, 1e-12, 'cdf');
  close(tCdf(0, 7), 0.5, 1e-15, 'cdf at 0');
  close(tQuantile(0.975, 1e6), 1.959966, 1e-5, 'normal limit');
  close(logGamma(5), Math.log(24), 1e-13, 'lgamma(5)');
  close(logGamma(0.5), 0.5 * Math.log(Math.PI), 1e-13, 'lgamma(1/2)');
  assert.throws(() => tQuantile(1, 3), /0 < p < 1/);
  assert.throws(() => tQuantile(0.9, 0), /df > 0/);
});

test('t-interval on known data; log-interval for ratios', () => {
  // [1, 2, 3]: mean 2, sd 1, half-width t(0.975, 2) / sqrt(3)
  const r = tInterval([1, 2, 3]);
  assert.equal(r.mean, 2);
  assert.equal(r.sd, 1);
  const h = 4.302652729911275 / Math.sqrt(3);
  close(r.lo, 2 - h, 1e-9, 'lo');
  close(r.hi, 2 + h, 1e-9, 'hi');
  assert.equal(r.n, 3);
  // 90%: t(0.95, 2) = 2.919985580355516
  close(tInterval([1, 2, 3], 0.9).hi, 2 + 2.919985580355516 / Math.sqrt(3), 1e-9, '90%');
  // one value: a mean but no interval
  assert.deepEqual(tInterval([5]), { mean: 5, lo: null, hi: null, sd: null, n: 1, level: 0.95 });
  // geometric mean of [2, 3, 2.5] and the interval of the logs (computed with scipy)
  const g = logInterval([2, 3, 2.5]);
  close(g.mean, 2.46621207433047, 1e-12, 'geo mean');
  close(g.lo, 1.4891682329569031, 1e-9, 'geo lo');
  close(g.hi, 4.084294749893057, 1e-9, 'geo hi');
  assert.throws(() => tInterval([]), /no values/);
  assert.throws(() => tInterval([1, NaN]), /finite/);
  assert.throws(() => logInterval([1, 0]), /> 0/);
});

test('equal-step ratios: method / baseline at the steps both have', () => {
  const base = curve([[100, 40], [200, 20], [300, 10]]);
  const m = curve([[100, 30], [200, 15], [400, 1]]);
  assert.deepEqual(equalStepRatios(base, m), [{ step: 100, ratio: 0.75 }, { step: 200, ratio: 0.75 }]);
  // non-finite and zero baseline values are skipped
  assert.deepEqual(equalStepRatios(curve([[1, 0], [2, NaN], [3, 4]]), curve([[1, 1], [2, 1], [3, 2]])), [{ step: 3, ratio: 0.5 }]);
});

test('speed-up curve: for every baseline evaluation, interpolated; not reached; last point = the single factor', () => {
  const base = curve([[250, 40], [500, 30], [750, 25], [1000, 20]]);
  const fast = curve([[250, 35], [500, 20], [750, 15], [1000, 12]]);
  const c = speedupCurve(base, fast, true);
  assert.deepEqual(c.map((p) => p.step), [250, 500, 750, 1000]);
  // target 40: fast is already below at its first evaluation -> 250 steps, factor 1
  assert.equal(c[0].methodSteps, 250);
  assert.equal(c[0].factor, 1);
  // ... and that factor is only a lower bound (nothing before step 250 was measured)
  assert.deepEqual(c.map((p) => p.lowerBound), [true, false, false, false]);
  assert.deepEqual(speedupCurve(base, base, true).map((p) => p.lowerBound), [true, false, false, false]);
  // target 30: between 250 (35) and 500 (20): 250 + 5/15 * 250
  close(c[1].methodSteps, 250 + (5 / 15) * 250, 1e-9, 'S=500');
  close(c[1].factor, 500 / (250 + (5 / 15) * 250), 1e-12, 'factor 500');
  // target 25: 250 + 10/15 * 250
  close(c[2].methodSteps, 250 + (10 / 15) * 250, 1e-9, 'S=750');
  // target 20: reached exactly at 500 -> factor 2, the old single factor
  assert.equal(c[3].methodSteps, 500);
  assert.equal(c[3].factor, 2);
  assert.equal(c[3].factor, speedupFactor(base, fast, true).factor);
  // a slower method reaches the early targets, not the late ones
  const slow = curve([[250, 45], [500, 38], [750, 32], [1000, 28]]);
  const s = speedupCurve(base, slow, true);
  // target 40 lies between 45 (step 250) and 38 (step 500)
  close(s[0].methodSteps, 250 + (5 / 7) * 250, 1e-9, 'slow S=250');
  close(s[0].factor, 250 / (250 + (5 / 7) * 250), 1e-12, 'slow factor');
  close(s[1].methodSteps, 750 + (2 / 4) * 250, 1e-9, 'slow S=500');
  assert.equal(s[2].methodSteps, null);
  assert.equal(s[2].factor, null);
  assert.equal(s[3].factor, null);
  // a noisy baseline: its score at 1000 was first touched before 1000
  const noisy = curve([[250, 40], [500, 19], [750, 22], [1000, 20]]);
  const n = speedupCurve(noisy, noisy, true);
  close(n[3].baselineSteps, 250 + (20 / 21) * 250, 1e-9, 'noisy');
  assert.equal(n[3].factor, 1);
  // higher is better
  const h = speedupCurve(curve([[10, 0.2], [20, 0.6]]), curve([[10, 0.4], [20, 0.8]]), false);
  assert.equal(h[0].factor, 1);
  close(h[1].methodSteps, 15, 1e-9, 'higher');
  assert.throws(() => speedupCurve(curve([[2, 1], [1, 0]]), base, true), /must increase/);
});

test('aggregation over seeds: per-seed values, interval only when every seed has one', () => {
  const a = aggregateSeeds([
    [{ step: 1, value: 1 }, { step: 2, value: 2 }],
    [{ step: 1, value: 2 }, { step: 2, value: null }],
    [{ step: 1, value: 3 }, { step: 2, value: 4 }],
  ], 'linear');
  assert.equal(a.length, 2);
  assert.deepEqual(a[0].per_seed, [1, 2, 3]);
  assert.equal(a[0].n, 3);
  assert.equal(a[0].ci!.mean, 2);
  close(a[0].ci!.hi, 2 + 4.302652729911275 / Math.sqrt(3), 1e-9, 'agg hi');
  assert.deepEqual(a[1].per_seed, [2, null, 4]);
  assert.equal(a[1].n, 2);
  assert.equal(a[1].ci, null);
  // log scale: the geometric mean
  const g = aggregateSeeds([[{ step: 5, value: 2 }], [{ step: 5, value: 8 }]], 'log');
  close(g[0].ci!.mean, 4, 1e-12, 'geo');
});

test('curve report: per-seed ratios and speed-ups of hand-made runs, table cells', async () => {
  const { curveReport, cell, aggregateTable } = await import('../src/experiment/report.js');
  const run = (seed: number, method: string, fids: number[]) => ({
    method, seed, sampling: 'x', weighting: 'y', experiment_dir: '/nonexistent', train_seconds: 1,
    evals: fids.map((v, i) => ({ step: 100 * (i + 1), metrics: { 'ddpm250/featnet_fid': v }, n_samples: 1000, seconds: { ddpm250: 1 } })),
  });
  const runs = [
    run(0, 'uniform', [40, 30, 20]), run(0, 'speed', [30, 20, 15]),
    run(1, 'uniform', [50, 40, 30]), run(1, 'speed', [45, 42, 35]),
  ];
  const c = curveReport(runs, { methods: ['uniform', 'speed'], baseline: 'uniform', seeds: [0, 1], ci_level: 0.95 }, 'ddpm250', 'featnet_fid');
  const sp = c.methods.speed;
  assert.deepEqual(sp.values.map((a) => a.per_seed), [[30, 45], [20, 42], [15, 35]]);
  assert.deepEqual(sp.equal_step_ratio.map((a) => a.per_seed), [[0.75, 0.9], [20 / 30, 42 / 40], [0.75, 35 / 30]]);
  close(sp.equal_step_ratio[0].ci!.mean, Math.sqrt(0.75 * 0.9), 1e-12, 'geo mean ratio');
  // seed 0: uniform's targets 40, 30, 20 are reached by speed at 100 (30 <= 40), 100 (30 <= 30), 200 (20 <= 20);
  // seed 1: targets 50 -> 100 (45), 40 -> between 200 (42) and 300 (35): 200 + 2/7 * 100, 30 -> never
  assert.deepEqual(sp.method_steps.map((a) => a.per_seed), [[100, 100], [100, 200 + (2 / 7) * 100], [200, null]]);
  assert.deepEqual(sp.speedup.map((a) => a.per_seed), [[1, 1], [2, 200 / (200 + (2 / 7) * 100)], [1.5, null]]);
  close(sp.speedup[1].ci!.mean, Math.sqrt(2 * 200 / (200 + (2 / 7) * 100)), 1e-12, 'geo mean speed-up');
  assert.equal(cell(sp.speedup[2], 'x'), 'n.r. (1/2)');
  assert.match(cell(sp.values[0]), /^37\.50 \[-?\d+\.\d+, \d+\.\d+\]$/);
  assert.equal(cell(c.methods.uniform.speedup[1], 'x'), '1.000x [1.000, 1.000]');
  // seed 0 and seed 1 reach the step-100 score at their first evaluation: lower bounds
  assert.deepEqual(sp.speedup_lower_bound.map((b) => b.per_seed), [[true, true], [true, false], [false, false]]);
  const table = aggregateTable(c, 'speedup', ['uniform', 'speed'], 'S', 'x');
  assert.match(table, /^\| 100 \| 1\.000x \[1\.000, 1\.000\] \| >= 1\.000x \[1\.000, 1\.000\] \|$/m);
  assert.match(table, /factor is a lower bound/);
  assert.match(table, /^\| S \| uniform \| speed \|$/m);
  assert.match(table, /^\| 300 \| 1\.000x \[1\.000, 1\.000\] \| n\.r\. \(1\/2\) \|$/m);
});

test('Holm adjustment on a hand-computed case: step-down, monotone, capped at 1, nulls kept', () => {
  // sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> max so far 0.06
  const adj = holmAdjust([0.01, 0.04, 0.03, 0.005]);
  [0.03, 0.06, 0.06, 0.02].forEach((v, i) => close(adj[i], v, 1e-15, `holm ${i}`));
  assert.deepEqual(holmAdjust([0.4, 0.6]), [0.8, 0.8]);
  assert.deepEqual(holmAdjust([0.7, 0.9]), [1, 1]);
  // a method without a value does not count in m
  assert.deepEqual(holmAdjust([null, 0.02, 0.5]), [null, 0.04, 0.5]);
  assert.deepEqual(holmAdjust([]), []);
});

test('paired log-ratio t-test: per-seed logs, the t statistic and the two-sided p (df 2 in closed form)', () => {
  const r = pairedLogRatioTest([Math.exp(-0.1), Math.exp(-0.2), Math.exp(-0.3)]);
  r.log_ratios.forEach((v, i) => close(v, [-0.1, -0.2, -0.3][i], 1e-12, 'log'));
  // mean -0.2, sd 0.1: t = -0.2 / (0.1 / sqrt 3); for df 2, F(t) = 1/2 + t / (2 sqrt(2 + t^2))
  const t = -0.2 / (0.1 / Math.sqrt(3));
  close(r.t, t, 1e-9, 't');
  assert.equal(r.df, 2);
  close(r.p, 2 * (0.5 + t / (2 * Math.sqrt(2 + t * t))), 1e-9, 'p');
  close(r.ratio.mean, Math.exp(-0.2), 1e-12, 'geo mean');
  // one seed: no test; identical ratios: no spread
  assert.equal(pairedLogRatioTest([0.9]).p, null);
  assert.equal(pairedLogRatioTest([1, 1, 1]).p, 1);
});

test('plateau criterion: relative change over the last third of the run', () => {
  const flat = flatness(curve([[100, 10], [200, 8], [300, 7.9]]), 1 / 3, 0.05)!;
  assert.equal(flat.from, 200);
  assert.equal(flat.to, 300);
  close(flat.change, 0.1 / 8, 1e-12, 'change');
  assert.equal(flat.flat, true);
  const steep = flatness(curve([[100, 10], [200, 8], [300, 6]]), 1 / 3, 0.05)!;
  assert.equal(steep.flat, false);
  close(steep.change, 0.25, 1e-12, 'steep');
  // six checkpoints of 500: the window starts at the evaluation nearest 2000
  assert.equal(flatness(curve([[500, 9], [1000, 8], [1500, 7], [2000, 6], [2500, 5.9], [3000, 5.8]]), 1 / 3, 0.05)!.from, 2000);
  assert.equal(flatness(curve([[100, 1]]), 1 / 3, 0.05), null);
});
