import { test } from 'node:test';
import assert from 'node:assert/strict';
import { betasFor } from '../src/diffusion/schedule.js';
import { makeCoefs, type DiffusionCoefs } from '../src/diffusion/coefs.js';
import { respace, spacedTimesteps } from '../src/diffusion/respace.js';
import { sample, stepCoefs, ddimSigma, type SamplerModel, type SampleOptions } from '../src/diffusion/sampler.js';
import { sampleStepKernel, addonPath, type SampleStepCoefs } from '../src/native.js';
import { Rng } from '../src/rng.js';

const base = makeCoefs(betasFor('linear', 1000));

// ---- pure TypeScript: the per-step coefficients ---------------------------------------------

test('stepCoefs: DDIM sigma/epsCoef and DDPM tables by the formulas', () => {
  const { coefs: rc } = respace(base, spacedTimesteps(1000, 'ddim50'));
  for (const i of [0, 1, 25, 49]) {
    const a = rc.abar[i];
    const ap = i === 0 ? 1 : rc.abar[i - 1];
    for (const eta of [0, 0.5, 1]) {
      const k = stepCoefs(rc, i, { sampler: 'ddim', eta, clipX0: false, cfg: false, guidance: 1, learnSigma: true });
      const sigma = eta * Math.sqrt((1 - ap) / (1 - a)) * Math.sqrt(1 - a / ap);
      assert.equal(k.mode, 'ddim');
      assert.ok(Math.abs(k.sigma - sigma) < 1e-15);
      assert.ok(Math.abs(k.sqrtAbarPrev - Math.sqrt(ap)) < 1e-15);
      assert.ok(Math.abs(k.epsCoef - Math.sqrt(1 - ap - sigma * sigma)) < 1e-15);
      assert.ok(Math.abs(k.sqrtRecipAbar - 1 / Math.sqrt(a)) < 1e-12 * k.sqrtRecipAbar);
      assert.ok(Math.abs(k.sqrtRecipm1Abar - Math.sqrt(1 / a - 1)) < 1e-12 * (1 + k.sqrtRecipm1Abar));
      assert.equal(k.addNoise, i > 0);
    }
    // eta = 1 is DDPM's posterior standard deviation
    if (i > 0) assert.ok(Math.abs(ddimSigma(a, ap, 1) ** 2 - rc.posteriorVariance[i]) < 1e-12);
    const d = stepCoefs(rc, i, { sampler: 'ddpm', eta: 0, clipX0: true, cfg: true, guidance: 4, learnSigma: true });
    assert.equal(d.mode, 'ddpm');
    assert.equal(d.coef1, rc.coef1[i]);
    assert.equal(d.coef2, rc.coef2[i]);
    assert.equal(d.logBeta, Math.log(rc.betas[i]));
    assert.equal(d.postLogVar, rc.postLogVar[i]);
    assert.equal(d.sigma, 0);
    assert.ok(d.clipX0 && d.cfg && d.guidance === 4);
    // fixed variances without learned sigma: large = beta (posterior at t = 0), small = posterior
    const fl = stepCoefs(rc, i, { sampler: 'ddpm', eta: 0, clipX0: false, cfg: false, guidance: 1, learnSigma: false });
    assert.equal(fl.postLogVar, i === 0 ? Math.log(rc.posteriorVariance[1]) : Math.log(rc.betas[i]));
    const fs = stepCoefs(rc, i, { sampler: 'ddpm', eta: 0, clipX0: false, cfg: false, guidance: 1, learnSigma: false, fixedVariance: 'small' });
    assert.equal(fs.postLogVar, rc.postLogVar[i]);
  }
});

// ---- the loop, with a recording model (no native code) --------------------------------------

function recordingModel(numClasses: number): SamplerModel & { calls: { t: number; y: number[]; coefs: SampleStepCoefs; useEma?: boolean }[] } {
  const calls: { t: number; y: number[]; coefs: SampleStepCoefs; useEma?: boolean }[] = [];
  return {
    calls,
    config: { inChannels: 2, inputSize: 4, numClasses, learnSigma: true },
    drawNoise: (n) => new Float32Array(n).fill(0.5),
    async sampleStep(x, t, y, coefs, opts) {
      calls.push({ t, y: [...y], coefs, useEma: opts?.useEma });
      return x.map((v) => v + 1);
    },
  };
}

const baseOpts = (o: Partial<SampleOptions>): SampleOptions => ({
  N: 3,
  y: new Int32Array([0, 1, 2]),
  sampler: 'ddim',
  steps: 'ddim10',
  eta: 0,
  guidanceScale: 1,
  clipDenoised: false,
  ...o,
});

test('sample(): visits the kept original steps from last to first, with progress, cfg and EMA flags', async () => {
  const m = recordingModel(10);
  const progress: [number, number][] = [];
  const x = await sample(m, base, baseOpts({ guidanceScale: 4, onProgress: (i, n) => progress.push([i, n]) }));
  assert.equal(x.length, 3 * 2 * 16);
  assert.ok(x.every((v) => v === 10.5)); // x_T = 0.5, then +1 per step
  assert.deepEqual(m.calls.map((c) => c.t), [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
  assert.deepEqual(progress, Array.from({ length: 10 }, (_, i) => [i + 1, 10]));
  assert.ok(m.calls.every((c) => c.coefs.cfg && c.coefs.guidance === 4 && c.useEma === true));
  assert.deepEqual(m.calls[0].y, [0, 1, 2]);
  assert.deepEqual(m.calls.map((c) => c.coefs.addNoise), [...new Array(9).fill(true), false]);
  // guidance 1 or an unconditional model: no cfg
  const m1 = recordingModel(10);
  await sample(m1, base, baseOpts({ guidanceScale: 1, useEma: false }));
  assert.ok(m1.calls.every((c) => !c.coefs.cfg && c.useEma === false));
  const mu = recordingModel(0);
  await sample(mu, base, baseOpts({ guidanceScale: 4, y: new Int32Array(0) }));
  assert.ok(mu.calls.every((c) => !c.coefs.cfg && c.y.length === 3));
});

test('sample(): argument errors', async () => {
  const m = recordingModel(10);
  await assert.rejects(sample(m, base, baseOpts({ y: new Int32Array([0, 1]) })), /y must hold N = 3 labels, got 2/);
  await assert.rejects(sample(m, base, baseOpts({ y: new Int32Array([0, 1, 10]) })), /y\[2\] = 10 is outside \[0, 10\)/);
  await assert.rejects(sample(m, base, baseOpts({ steps: 'ddim7x' })), /ddimN/);
  await assert.rejects(sample(m, base, baseOpts({ eta: -1 })), /eta/);
  await assert.rejects(sample(m, base, baseOpts({ xT: new Float32Array(5) })), /xT must hold N\*C\*H\*W = 96/);
});

// ---- with the real native kernel and a true-noise oracle ------------------------------------

function nativeAvailable(): string | undefined {
  try {
    sampleStepKernel(new Float32Array(1), new Float32Array(1), new Float32Array(1), { N: 1, C: 1, HW: 1, learnSigma: false }, stepCoefs(base, 5, { sampler: 'ddim', eta: 0, clipX0: false, cfg: false, guidance: 1, learnSigma: false }));
    return undefined;
  } catch (e) {
    return `native addon not loadable (${addonPath()}): ${(e as Error).message}`;
  }
}
const skipNative = nativeAvailable();

/**
 * A model whose eps output is the TRUE noise of x w.r.t. a known x0:
 * eps = (x - sqrt(abar_t) x0) / sqrt(1 - abar_t) at the ORIGINAL t; the update is
 * done by the real fused native kernel. With cfg, the conditional and null halves
 * are built so that only eps_null + s (eps_cond - eps_null) gives the true noise.
 */
function oracle(
  x0: Float32Array,
  C: number,
  H: number,
  tables: DiffusionCoefs,
  numClasses: number,
  noiseSeed: number,
  seen?: Float64Array[],
): SamplerModel {
  const rng = new Rng(noiseSeed);
  const HW = H * H;
  return {
    config: { inChannels: C, inputSize: H, numClasses, learnSigma: true },
    drawNoise: (n) => Float32Array.from({ length: n }, () => rng.normal()),
    async sampleStep(x, t, y, coefs) {
      const N = x.length / (C * HW);
      const per = C * HW;
      const rows = coefs.cfg ? 2 * N : N;
      const out = new Float32Array(rows * 2 * per);
      const a = Math.sqrt(tables.abar[t]);
      const s = Math.sqrt(1 - tables.abar[t]);
      seen?.push(Float64Array.from(x, (v, i) => (v - a * x0[i]) / s));
      for (let n = 0; n < N; n++) {
        for (let j = 0; j < per; j++) {
          const e = (x[n * per + j] - a * x0[n * per + j]) / s;
          if (coefs.cfg) {
            const D = 0.3 + 0.1 * (j % 3);
            out[n * 2 * per + j] = e + D * (1 / coefs.guidance - 1); // conditional
            out[(n + N) * 2 * per + j] = e - D; // null label
          } else out[n * 2 * per + j] = e;
          out[n * 2 * per + per + j] = 0.2; // variance channel: frac = 0.6
        }
      }
      const z = Float32Array.from({ length: N * per }, () => rng.normal());
      return sampleStepKernel(out, x, z, { N, C, HW, learnSigma: true }, coefs);
    },
  };
}

function target(N: number, C: number, H: number): Float32Array {
  const r = new Rng(2024);
  return Float32Array.from({ length: N * C * H * H }, () => 2 * r.uniform() - 1);
}
const maxAbsDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

test('DDIM eta = 0 with the true-noise oracle reconstructs x0 within float32 rounding, deterministically', { skip: skipNative }, async () => {
  const N = 3;
  const C = 2;
  const H = 4;
  const x0 = target(N, C, H);
  const o = baseOpts({ N, y: new Int32Array([1, 0, 1]), steps: 'ddim50', eta: 0 });
  const xT = Float32Array.from({ length: N * C * H * H }, (_, i) => Math.sin(i) * 1.5);
  const seen: Float64Array[] = [];
  const a = await sample(oracle(x0, C, H, base, 2, 1, seen), base, { ...o, xT });
  // on the deterministic DDIM path with the true noise, every x_t is sqrt(abar_t) x0 +
  // sqrt(1 - abar_t) eps for ONE eps: the noise each step sees stays the same
  assert.equal(seen.length, 50);
  for (const e of seen) assert.ok(maxAbsDiff(Float32Array.from(e), Float32Array.from(seen[0])) < 1e-4);
  const b = await sample(oracle(x0, C, H, base, 2, 777), base, { ...o, xT }); // other noise: unused at eta 0
  assert.deepEqual(a, b);
  assert.ok(maxAbsDiff(a, x0) < 2e-6, `max |x - x0| = ${maxAbsDiff(a, x0)}`);
  // from fresh noise, all 1000 steps, and with guidance on all channels
  const c = await sample(oracle(x0, C, H, base, 2, 3), base, { ...o, steps: '', guidanceScale: 4 });
  assert.ok(maxAbsDiff(c, x0) < 2e-6, `cfg: max |x - x0| = ${maxAbsDiff(c, x0)}`);
  // sanity: a wrong schedule in the oracle does not reconstruct (the test can fail)
  const wrong = await sample(oracle(x0, C, H, makeCoefs(betasFor('cosine', 1000)), 2, 3), base, { ...o, xT });
  assert.ok(maxAbsDiff(wrong, x0) > 1e-3, `wrong schedule: ${maxAbsDiff(wrong, x0)}`);
});

test('DDPM (learned range) and DDIM eta = 1 with the true-noise oracle land near x0', { skip: skipNative }, async () => {
  const N = 2;
  const C = 3;
  const H = 4;
  const x0 = target(N, C, H);
  for (const [sampler, steps, eta] of [['ddpm', '100', 0], ['ddpm', '10,15,20', 0], ['ddim', 'ddim25', 1]] as const) {
    const x = await sample(oracle(x0, C, H, base, 5, 42), base, baseOpts({ N, y: new Int32Array([4, 2]), sampler, steps, eta, clipDenoised: true }));
    assert.ok(maxAbsDiff(x, x0) < 1e-4, `${sampler} ${steps}: max |x - x0| = ${maxAbsDiff(x, x0)}`);
  }
});

test('a real (tiny, untrained) DiT: DDIM eta = 0 is deterministic; DDPM with cfg runs and stays finite', { skip: skipNative }, async () => {
  const { DiTModel, presetConfig } = await import('../src/native.js');
  const config = { ...presetConfig('DiT-Ti/4', { inputSize: 8, inChannels: 2, numClasses: 3, learnSigma: true }), depth: 2 };
  const model = DiTModel.create({ config, seed: 1, threads: 1 });
  try {
    model.setTables(
      (await import('../src/diffusion/coefs.js')).toNativeTables(base),
    );
    const o = baseOpts({ N: 2, y: new Int32Array([0, 2]), steps: 'ddim5', eta: 0, useEma: false });
    const st = model.getNoiseState();
    const a = await sample(model, base, o);
    model.setNoiseState(st);
    const xT = model.drawNoise(a.length);
    model.setNoiseState(st);
    const b = await sample(model, base, o); // draws the same x_T again
    assert.deepEqual(a, b);
    const c = await sample(model, base, { ...o, xT });
    assert.deepEqual(a, c);
    const d = await sample(model, base, baseOpts({ N: 2, y: new Int32Array([1, 1]), sampler: 'ddpm', steps: '4', guidanceScale: 3, useEma: false }));
    assert.equal(d.length, 2 * 2 * 64);
    assert.ok(d.every(Number.isFinite));
  } finally {
    model.dispose();
  }
});

// ---- DiT's guidance rule: forward_with_cfg guides eps channels 0..2 only ---------------------

test('sample(): guidanceChannels defaults to DiT\'s 3, \'all\' passes 0, bad values are refused', async () => {
  const m = recordingModel(10);
  await sample(m, base, baseOpts({ guidanceScale: 4 }));
  assert.ok(m.calls.every((c) => c.coefs.guidanceChannels === 3));
  const a = recordingModel(10);
  await sample(a, base, baseOpts({ guidanceScale: 4, guidanceChannels: 'all' }));
  assert.ok(a.calls.every((c) => c.coefs.guidanceChannels === 0));
  for (const bad of [0, -1, 2.5]) {
    await assert.rejects(sample(m, base, baseOpts({ guidanceScale: 4, guidanceChannels: bad })), /guidanceChannels must be an integer >= 1 or 'all'/);
  }
});

/**
 * DiT's forward_with_cfg then its p_sample, in float64 from the raw model output
 * [2N, 2C, HW] (N conditional rows, then N null rows, learned sigma): eps[:, :g] =
 * null + s (cond - null), the other eps channels and the variance from the
 * conditional half (the half sample.py keeps). g = C: guidance on every channel.
 */
function ditStep(out: Float32Array, x: Float32Array, noise: Float32Array, N: number, C: number, HW: number, k: SampleStepCoefs, g: number): Float64Array {
  const per = C * HW;
  const r = new Float64Array(N * per);
  for (let n = 0; n < N; n++) {
    const cond = n * 2 * per;
    const nul = (N + n) * 2 * per;
    for (let j = 0; j < per; j++) {
      const c = Math.floor(j / HW);
      const eps = c < g ? out[nul + j] + k.guidance * (out[cond + j] - out[nul + j]) : out[cond + j];
      const xi = x[n * per + j];
      const x0 = k.sqrtRecipAbar * xi - k.sqrtRecipm1Abar * eps;
      if (k.mode === 'ddim') {
        r[n * per + j] = k.sqrtAbarPrev * x0 + k.epsCoef * eps + (k.addNoise ? k.sigma * noise[n * per + j] : 0);
      } else {
        const frac = (out[cond + per + j] + 1) / 2;
        const lv = frac * k.logBeta + (1 - frac) * k.postLogVar;
        r[n * per + j] = k.coef1 * x0 + k.coef2 * xi + (k.addNoise ? Math.exp(0.5 * lv) * noise[n * per + j] : 0);
      }
    }
  }
  return r;
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>, from = 0, to = a.length) => {
  let m = 0;
  for (let i = from; i < to; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

test('the native sampling step guides as DiT: channels 0..2 for guidance_channels 3, every channel for all', { skip: skipNative }, () => {
  const r = new Rng(77);
  const N = 3;
  const HW = 5;
  const { coefs: rc } = respace(base, spacedTimesteps(1000, '50'));
  for (const C of [4, 3]) {
    const per = C * HW;
    const out = Float32Array.from({ length: 2 * N * 2 * per }, () => r.normal() * 0.8);
    const x = Float32Array.from({ length: N * per }, () => r.normal());
    const noise = Float32Array.from({ length: N * per }, () => r.normal());
    for (const sampler of ['ddpm', 'ddim'] as const) {
      const res: Record<string, Float32Array> = {};
      for (const [name, gc] of [['3', 3], ['all', 0]] as const) {
        const k = stepCoefs(rc, 20, { sampler, eta: 0.5, clipX0: false, cfg: true, guidance: 4, learnSigma: true, guidanceChannels: gc });
        res[name] = sampleStepKernel(out, x, noise, { N, C, HW, learnSigma: true }, k);
        const want = ditStep(out, x, noise, N, C, HW, k, gc === 0 ? C : Math.min(gc, C));
        assert.ok(maxDiff(res[name], want) < 2e-5, `C ${C} ${sampler} guidance_channels ${name}: max diff ${maxDiff(res[name], want)}`);
      }
      for (let n = 0; n < N; n++) {
        // channels 0..2 agree; the 4th differs (a 4-channel latent), or nothing does (3 channels)
        assert.ok(maxDiff(res['3'], res.all, n * per, n * per + 3 * HW) === 0);
        if (C === 4) assert.ok(maxDiff(res['3'], res.all, n * per + 3 * HW, (n + 1) * per) > 1e-2, `${sampler}: channel 3 should differ`);
      }
      if (C === 3) assert.deepEqual(res['3'], res.all);
    }
  }
});

test('a real DiT (4 latent channels): sampleStep equals DiT\'s rule applied to two plain forward passes', { skip: skipNative }, async () => {
  const { DiTModel, presetConfig } = await import('../src/native.js');
  const { toNativeTables } = await import('../src/diffusion/coefs.js');
  const numClasses = 3;
  const config = { ...presetConfig('DiT-Ti/4', { inputSize: 8, inChannels: 4, numClasses, learnSigma: true }), depth: 2 };
  const model = DiTModel.create({ config, seed: 3, threads: 1 });
  try {
    model.setTables(toNativeTables(base));
    // DiT zero-initialises the final layer and the adaLN modulation: perturb them so eps depends on x and the label
    for (const p of model.params()) {
      if (p.name.startsWith('final_layer') || p.name.includes('adaLN')) {
        const w = model.readParam(p.name, 'model');
        const r = new Rng(p.name.length);
        model.writeParam(p.name, 'model', Float32Array.from(w, (v) => v + 0.05 * r.normal()));
      }
    }
    const N = 2;
    const C = 4;
    const HW = 64;
    const per = C * HW;
    const r = new Rng(5);
    const x = Float32Array.from({ length: N * per }, () => r.normal());
    const y = new Int32Array([0, 2]);
    const { coefs: rc, timestepMap } = respace(base, spacedTimesteps(1000, 'ddim50'));
    const i = 30; // original t = timestepMap[30] = 600
    const tt = new Int32Array(N).fill(timestepMap[i]);
    // two plain forward passes at the same x: conditional, and the null label; stacked [cond rows; null rows], each [2C, HW]
    const out = new Float32Array(2 * N * 2 * per);
    out.set(await model.forward(x, tt, y, { useEma: false }), 0);
    out.set(await model.forward(x, tt, new Int32Array(N).fill(numClasses), { useEma: false }), N * 2 * per);
    const res: Record<string, Float32Array> = {};
    for (const [name, gc] of [['3', 3], ['all', 0]] as const) {
      // DDIM eta = 0: no noise, so the step is a function of the two forward passes alone
      const k = stepCoefs(rc, i, { sampler: 'ddim', eta: 0, clipX0: false, cfg: true, guidance: 4, learnSigma: true, guidanceChannels: gc });
      res[name] = await model.sampleStep(x, timestepMap[i], y, k, { useEma: false });
      const want = ditStep(out, x, new Float32Array(N * per), N, C, HW, k, gc === 0 ? C : 3);
      assert.ok(maxDiff(res[name], want) < 1e-4, `guidance_channels ${name}: max diff ${maxDiff(res[name], want)}`);
    }
    for (let n = 0; n < N; n++) {
      assert.ok(maxDiff(res['3'], res.all, n * per + 3 * HW, (n + 1) * per) > 1e-3, 'the 4th channel must differ between the two rules');
      assert.ok(maxDiff(res['3'], res.all, n * per, n * per + 3 * HW) < 1e-6);
    }
  } finally {
    model.dispose();
  }
});
