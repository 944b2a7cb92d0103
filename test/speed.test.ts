import { test } from 'node:test';
import assert from 'node:assert/strict';
import { betasFor } from '../src/diffusion/schedule.js';
import { makeCoefs } from '../src/diffusion/coefs.js';
import { Rng } from '../src/rng.js';
import { ConfigError } from '../src/errors.js';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../src/config/index.js';
import { scratchDir } from './helpers-e2e.js';
import {
  SPEED_PAPER_OPTIONS,
  meaningfulBoundary,
  makeTimestepSampler,
  lossWeights,
  speedOptions,
  SPEED_OPTION_KEYS,
  dualOf,
  type SpeedOptions,
  SAMPLING_NAMES,
} from '../src/speed/index.js';

const lin = makeCoefs(betasFor('linear', 1000));
const opts = (o: Partial<SpeedOptions> = {}): SpeedOptions => ({ ...SPEED_PAPER_OPTIONS, ...o });

test('meaningful boundary m = 642 for linear T = 1000; from numpy.gradient of sqrt(1 - abar)', () => {
  assert.equal(meaningfulBoundary(lin), 642);
  // independent restatement on another schedule
  for (const [name, T] of [['cosine', 1000], ['quad', 500], ['linear', 100]] as const) {
    const c = makeCoefs(betasFor(name, T));
    const s = Array.from(c.abar, (a) => Math.sqrt(1 - a));
    const g = s.map((_, i) => (i === 0 ? s[1] - s[0] : i === T - 1 ? s[T - 1] - s[T - 2] : (s[i + 1] - s[i - 1]) / 2));
    const first = g.findIndex((v) => v < 1e-4);
    assert.equal(meaningfulBoundary(c), first < 0 ? T : first + 1, `${name} T=${T}`);
  }
  // a process that never converges: every step is meaningful
  assert.equal(meaningfulBoundary(makeCoefs(betasFor('const', 20))), 20);
});

// chi-square of binned counts against the expected distribution q
function chiSquare(counts: number[], q: Float64Array, total: number, bins: number): { chi2: number; df: number } {
  const T = q.length;
  const exp = new Array(bins).fill(0);
  const obs = new Array(bins).fill(0);
  for (let t = 0; t < T; t++) {
    const b = Math.floor((t * bins) / T);
    exp[b] += q[t] * total;
    obs[b] += counts[t];
  }
  let chi2 = 0;
  let df = -1;
  for (let b = 0; b < bins; b++) {
    if (exp[b] === 0) {
      assert.equal(obs[b], 0, `bin ${b} has draws but probability 0`);
      continue;
    }
    chi2 += (obs[b] - exp[b]) ** 2 / exp[b];
    df++;
  }
  return { chi2, df };
}
// chi-square 0.999 quantiles (df -> bound)
const CHI2_999: Record<number, number> = { 19: 43.82, 18: 42.31, 17: 40.79, 9: 27.88 };

for (const name of SAMPLING_NAMES) {
  for (const n of [1, 2, 7, 64]) {
    test(`sampler ${name}: empirical distribution matches its marginal (batch ${n})`, () => {
      const o = opts({ sampling: name, clts_target_steps: 1000 });
      const s = makeTimestepSampler(o, lin);
      assert.equal(s.name, name);
      const rng = new Rng(1234 + n);
      const counts = new Array(1000).fill(0);
      const step = 500; // clts halfway through its curriculum
      const batches = Math.ceil(30000 / n);
      for (let b = 0; b < batches; b++) {
        const ts = s.sample(n, step, rng);
        assert.equal(ts.length, n);
        for (const t of ts) {
          assert.ok(t >= 0 && t < 1000 && Number.isInteger(t), `t = ${t}`);
          counts[t]++;
        }
      }
      const q = s.marginal(n, step);
      assert.ok(Math.abs(q.reduce((a, b) => a + b, 0) - 1) < 1e-12);
      const { chi2, df } = chiSquare(counts, q, batches * n, 20);
      assert.ok(chi2 < CHI2_999[df], `chi2 ${chi2.toFixed(1)} with df ${df}`);
    });
  }
}

test('probabilities(): speed is k times higher below tau; boundary 2.5 vs 0.5 around m; lognorm and clts densities', () => {
  const p = makeTimestepSampler(opts({ sampling: 'speed', k: 5, tau: 700 }), lin).probabilities(0);
  const z = 700 * 5 + 300;
  assert.ok(Math.abs(p[0] - 5 / z) < 1e-15 && Math.abs(p[699] - 5 / z) < 1e-15 && Math.abs(p[700] - 1 / z) < 1e-15);
  const pb = makeTimestepSampler(opts({ sampling: 'speed_boundary' }), lin).probabilities(0);
  assert.ok(Math.abs(pb[100] / pb[900] - 5) < 1e-9, `ratio ${pb[100] / pb[900]}`);
  assert.ok(Math.abs(pb[600] / pb[700] - 5) < 1e-9); // the step sits at the boundary
  const pl = makeTimestepSampler(opts({ sampling: 'lognorm' }), lin).probabilities(0);
  const dens = (t: number) => {
    const u = Math.sqrt(1 - lin.abar[t]);
    const l = Math.log(u) - Math.log(1 - u);
    return Math.exp(-l * l / 2) / (u * (1 - u));
  };
  assert.ok(Math.abs(pl[100] / pl[400] - dens(100) / dens(400)) < 1e-9);
  const sc = makeTimestepSampler(opts({ sampling: 'clts', clts_target_steps: 1000, clts_mu: 0.5, clts_sigma: 0.1 }), lin);
  const p0 = sc.probabilities(0);
  assert.ok(p0.every((v) => Math.abs(v - 1e-3) < 1e-15), 'uniform at step 0');
  const p1 = sc.probabilities(5000);
  // fully Gaussian, centred at mu (T - 1) = 499.5 with sigma T = 100 steps
  const gauss = (t: number) => Math.exp(-0.5 * ((t - 499.5) / 100) ** 2);
  assert.ok(Math.abs(p1[600] / p1[500] - gauss(600) / gauss(500)) < 1e-12, String(p1[600] / p1[500]));
  const ph = sc.probabilities(500);
  for (const t of [0, 500, 999]) assert.ok(Math.abs(ph[t] - (0.5 * p1[t] + 0.5e-3)) < 1e-15);
});

test('duals at the edges and batch structure', () => {
  const m = 642;
  assert.equal(dualOf(0, m, 1000), 642);
  assert.equal(dualOf(641, m, 1000), 1);
  assert.equal(dualOf(642, m, 1000), 0);
  assert.equal(dualOf(999, m, 1000), 357);
  // m = T (never converges): duals stay in range
  assert.equal(dualOf(0, 20, 20), 19);
  // p concentrated on t = 0: draws are 0, their duals m
  const s = makeTimestepSampler(opts({ sampling: 'speed', k: 1e15, tau: 1 }), lin);
  const rng = new Rng(5);
  assert.deepEqual([...s.sample(1, 0, rng)], [0]);
  assert.deepEqual([...s.sample(2, 0, rng)], [0, 0]); // 2//2+1 = 2 draws, no dual kept
  assert.deepEqual([...s.sample(5, 0, rng)], [0, 0, 0, m, m]);
  // general structure: n = 9 -> 5 draws then the duals of the first 4
  const sp = makeTimestepSampler(opts({ sampling: 'speed' }), lin);
  const ts = sp.sample(9, 0, new Rng(8));
  for (let i = 0; i < 4; i++) assert.equal(ts[5 + i], dualOf(ts[i], m, 1000));
  // no_dual and uniform have no duals: the same rng gives n independent draws
  assert.throws(() => sp.sample(0, 0, rng), /batch size n/);
});

test('sampling is reproducible from the rng state', () => {
  const s = makeTimestepSampler(opts(), lin);
  const a = new Rng(77);
  s.sample(13, 0, a);
  const st = a.state();
  const x = s.sample(31, 1, a);
  const y = s.sample(31, 1, Rng.fromState(st));
  assert.deepEqual(x, y);
});

test('speed weights: in [1 - lam, lam] below tau, exactly 1 from tau on, by definition', () => {
  const o = opts({ weighting: 'speed', lam: 0.6, tau: 700 });
  const w = lossWeights(o, lin);
  const v = Array.from(lin.abar, (a) => 1 - a);
  const h = v.map((_, i) => (i === 0 ? v[1] - v[0] : i === 999 ? v[999] - v[998] : (v[i + 1] - v[i - 1]) / 2));
  const lo = Math.min(...h);
  const hi = Math.max(...h);
  for (let t = 0; t < 1000; t++) {
    if (t < 700) {
      assert.ok(w[t] >= 0.4 - 1e-12 && w[t] <= 0.6 + 1e-12, `w[${t}] = ${w[t]}`);
      assert.ok(Math.abs(w[t] - (0.4 + 0.2 * (h[t] - lo) / (hi - lo))) < 1e-12);
    } else assert.equal(w[t], 1);
  }
  // the peak of h (t ~ 219 for linear) gets lam
  assert.ok(Math.abs(Math.max(...w.slice(0, 700)) - 0.6) < 1e-12);
  const th = lossWeights(opts({ weighting: 'theory' }), lin);
  assert.ok(Math.abs(Math.max(...th) - 0.8) < 1e-12 && Math.abs(Math.min(...th) - 0.2) < 1e-12);
  assert.ok(th[999] < 0.25, 'theory has no cut at tau');
});

test('p2, min_snr and none weights by definition', () => {
  const snr = (t: number) => lin.abar[t] / (1 - lin.abar[t]);
  const p2 = lossWeights(opts({ weighting: 'p2', p2_k: 1, p2_gamma: 1 }), lin);
  const p2b = lossWeights(opts({ weighting: 'p2', p2_k: 0.5, p2_gamma: 2 }), lin);
  const ms = lossWeights(opts({ weighting: 'min_snr', min_snr_gamma: 5 }), lin);
  for (const t of [0, 10, 300, 999]) {
    assert.ok(Math.abs(p2[t] - 1 / (1 + snr(t))) < 1e-12 * (1 + p2[t]));
    assert.ok(Math.abs(p2b[t] - 1 / (0.5 + snr(t)) ** 2) < 1e-12 * (1 + p2b[t]));
    assert.ok(Math.abs(ms[t] - Math.min(snr(t), 5) / snr(t)) < 1e-12);
  }
  assert.ok(ms[999] === 1 && ms[0] < 0.001);
  assert.ok(lossWeights(opts({ weighting: 'none' }), lin).every((x) => x === 1));
});

test('SpeeD keys: the config schema owns them (defaults, ranges, errors); speedOptions takes the validated values', () => {
  const dir = scratchDir('st-speed-');
  const load = (diffusion: string) => {
    const file = path.join(dir, 'x.yaml');
    writeFileSync(file, `diffusion: {${diffusion}}\n`);
    return loadConfig(file).config;
  };
  // the config's defaults: a plain DiT run (uniform sampling, no weighting); tau follows T
  const plain = speedOptions(load('').diffusion, 1000);
  assert.deepEqual(plain, { ...SPEED_PAPER_OPTIONS, sampling: 'uniform', weighting: 'none' });
  assert.deepEqual(Object.keys(plain).sort(), [...SPEED_OPTION_KEYS].sort(), 'only the SpeeD keys (not schedule, diffusion_steps, ...)');
  const small = load('diffusion_steps: 100');
  assert.equal(speedOptions(small.diffusion, 100).tau, 70);
  const o = speedOptions(load('sampling: lognorm, weighting: p2, k: 2, tau: 1000, lam: 1').diffusion, 1000);
  assert.equal(o.sampling, 'lognorm');
  assert.equal(o.tau, 1000);
  const cases: [string, RegExp][] = [
    ['sampling: unifrom', /diffusion\.sampling: expected one of uniform, speed, speed_boundary, no_dual, lognorm, clts, found string "unifrom" \(did you mean uniform\?\)/],
    ['weighting: snr', /diffusion\.weighting: .*snr/],
    ['tau: 0', /diffusion\.tau: .*0/],
    ['tau: 1001', /diffusion\.tau: 1001 is out of range: expected 1 <= tau <= diffusion\.diffusion_steps \(1000\)/],
    ['k: 0', /diffusion\.k: .*0/],
    ['lam: 0.4', /diffusion\.lam: .*0\.4/],
    ['lam: 1.2', /diffusion\.lam: .*1\.2/],
    ['k: "5"', /diffusion\.k: .*"5"/],
    ['clts_mu: 1.5', /diffusion\.clts_mu: .*1\.5/],
  ];
  for (const [yaml, re] of cases) {
    assert.throws(() => load(yaml), (e: unknown) => e instanceof ConfigError && re.test(e.message) && e.message.includes('x.yaml'), yaml);
  }
});
