// The native addon through src/native.ts: parameters, the train step, the noise
// stream, skipped steps, threads, the event loop, and the sampling-step kernel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { DiTModel, liveModelCount, nativeInfo, presetConfig, runBench, sampleStepKernel, type ModelConfig, type SampleStepCoefs, type TrainBatch } from '../src/native.js';
import { HYPER, SMALL, linearTables, relErr, uniformF32 } from './helpers/native-fixtures.js';

const T = 1000;
const TABLES = linearTables(T);

function batch(cfg: ModelConfig, N: number, seed: number): TrainBatch {
  const { inChannels: C, inputSize: H } = cfg;
  return {
    x0: uniformF32(N * C * H * H, 1, seed),
    t: Int32Array.from({ length: N }, (_, i) => (i * 397 + seed * 31) % T),
    y: Int32Array.from({ length: N }, (_, i) => (cfg.numClasses === 0 ? 0 : (i + seed) % (cfg.numClasses + 1))),
    weight: Float32Array.from({ length: N }, (_, i) => 1 + 0.25 * (i % 3)),
  };
}

function newModel(cfg: ModelConfig = SMALL, seed = 1, threads = 2): DiTModel {
  const m = DiTModel.create({ config: cfg, seed, threads });
  m.setTables(TABLES);
  return m;
}

test('nativeInfo and presets', () => {
  const info = nativeInfo();
  assert.match(info.gemm, /^(blas \(.+\)|builtin \((avx512|avx2|portable)\))$/);
  assert.equal(typeof info.cuda.available, 'boolean');
  if (!info.cuda.available) assert.ok(info.cuda.reason.length > 0, 'an unavailable CUDA says why');
  assert.ok(info.hardwareThreads >= 1);
  const s2 = presetConfig('DiT-S/2');
  assert.deepEqual([s2.depth, s2.hiddenSize, s2.numHeads, s2.patchSize], [12, 384, 6, 2]);
  const ti4 = presetConfig('DiT-Ti/4', { inputSize: 32, inChannels: 3, numClasses: 10 });
  assert.deepEqual([ti4.depth, ti4.hiddenSize, ti4.numHeads, ti4.patchSize, ti4.inputSize, ti4.inChannels, ti4.numClasses], [12, 192, 3, 4, 32, 3, 10]);
  const xl8 = presetConfig('DiT-XL/8');
  assert.deepEqual([xl8.depth, xl8.hiddenSize, xl8.numHeads, xl8.patchSize], [28, 1152, 16, 8]);
});

test('params: DiT state_dict names and shapes, in order', () => {
  const m = newModel();
  const D = 32;
  const block = (i: number): [string, number[]][] => [
    [`blocks.${i}.attn.qkv.weight`, [3 * D, D]],
    [`blocks.${i}.attn.qkv.bias`, [3 * D]],
    [`blocks.${i}.attn.proj.weight`, [D, D]],
    [`blocks.${i}.attn.proj.bias`, [D]],
    [`blocks.${i}.mlp.fc1.weight`, [4 * D, D]],
    [`blocks.${i}.mlp.fc1.bias`, [4 * D]],
    [`blocks.${i}.mlp.fc2.weight`, [D, 4 * D]],
    [`blocks.${i}.mlp.fc2.bias`, [D]],
    [`blocks.${i}.adaLN_modulation.1.weight`, [6 * D, D]],
    [`blocks.${i}.adaLN_modulation.1.bias`, [6 * D]],
  ];
  const want: [string, number[]][] = [
    ['pos_embed', [1, 16, D]],
    ['x_embedder.proj.weight', [D, 3, 2, 2]],
    ['x_embedder.proj.bias', [D]],
    ['t_embedder.mlp.0.weight', [D, 256]],
    ['t_embedder.mlp.0.bias', [D]],
    ['t_embedder.mlp.2.weight', [D, D]],
    ['t_embedder.mlp.2.bias', [D]],
    ['y_embedder.embedding_table.weight', [6, D]],
    ...block(0),
    ...block(1),
    ['final_layer.linear.weight', [2 * 2 * 6, D]],
    ['final_layer.linear.bias', [24]],
    ['final_layer.adaLN_modulation.1.weight', [2 * D, D]],
    ['final_layer.adaLN_modulation.1.bias', [2 * D]],
  ];
  const got = m.params();
  assert.deepEqual(got.map((p) => [p.name, p.shape]), want);
  for (const p of got) {
    assert.equal(p.numel, p.shape.reduce((a, b) => a * b, 1), p.name);
    assert.equal(p.trainable, p.name !== 'pos_embed', p.name);
  }
  const trainable = got.filter((p) => p.trainable).reduce((a, p) => a + p.numel, 0);
  assert.equal(m.numTrainable(), trainable);
  m.dispose();
});

test('readParam / writeParam round trip in every writable slot', () => {
  const m = newModel();
  const name = 'blocks.1.mlp.fc1.weight';
  const n = 128 * 32;
  for (const [i, slot] of (['model', 'ema', 'adam_m', 'adam_v'] as const).entries()) {
    const data = uniformF32(n, 1, 100 + i);
    m.writeParam(name, slot, data);
    assert.deepEqual(m.readParam(name, slot), data, slot);
  }
  // slots are distinct copies
  assert.deepEqual(m.readParam(name, 'model'), uniformF32(n, 1, 100));
  m.dispose();
});

test('a new model outputs exactly zeros and starts with EMA = weights', async () => {
  const m = newModel();
  const b = batch(SMALL, 3, 4);
  const out = await m.forward(b.x0, b.t, b.y);
  assert.equal(out.length, 3 * 6 * 64);
  assert.ok(out.every((v) => v === 0));
  for (const p of m.params()) assert.deepEqual(m.readParam(p.name, 'ema'), m.readParam(p.name, 'model'), p.name);
  assert.equal(m.getStep(), 0);
  m.dispose();
});

test('trainStep: finite per-sample losses, and the loss on a fixed batch and noise goes down', async () => {
  const m = newModel();
  const b = batch(SMALL, 4, 5);
  const noise = m.getNoiseState();
  const losses: number[] = [];
  const steps = 15;
  for (let i = 0; i < steps; i++) {
    m.setNoiseState(noise); // the same noise every step: a fixed objective
    const r = await m.trainStep(b, { ...HYPER, lr: 3e-3 });
    for (const k of ['loss', 'mse', 'vb'] as const) {
      assert.ok(r[k] instanceof Float32Array && r[k].length === 4, k);
      assert.ok(r[k].every(Number.isFinite), `${k} finite`);
    }
    r.loss.forEach((l, j) => assert.ok(Math.abs(l - (r.mse[j] + HYPER.vbScale * r.vb[j])) < 1e-4 * Math.max(1, l), 'loss = mse + vb'));
    assert.equal(r.skipped, false);
    assert.ok(r.gradNorm > 0 && Number.isFinite(r.gradNorm));
    assert.equal(r.step, i + 1);
    losses.push(r.loss.reduce((a, v) => a + v, 0) / 4);
  }
  assert.equal(m.getStep(), steps);
  const last = losses[steps - 1];
  assert.ok(last < 0.7 * losses[0], `loss went from ${losses[0]} to ${last}`);
  const downs = losses.slice(1).filter((l, i) => l < losses[i]).length;
  assert.ok(downs >= steps - 3, `the loss fell in only ${downs} of ${steps - 1} steps: ${losses.join(', ')}`);
  m.dispose();
});

test('recompute: the same training, bitwise, in less activation memory', async () => {
  const cfg: ModelConfig = { ...SMALL, depth: 4 };
  const plain = DiTModel.create({ config: cfg, seed: 4, threads: 2 });
  const rec = DiTModel.create({ config: cfg, seed: 4, threads: 2, recompute: true });
  for (const m of [plain, rec]) m.setTables(TABLES);
  for (let s = 0; s < 2; s++) {
    const data = batch(cfg, 3, 20 + s);
    const a = await plain.trainStep(data, HYPER);
    const b = await rec.trainStep(data, HYPER);
    assert.deepEqual(b.loss, a.loss, `step ${s}: losses`);
    assert.equal(b.gradNorm, a.gradNorm, `step ${s}: gradient norm`);
  }
  assert.deepEqual(rec.readParam('blocks.1.mlp.fc1.weight'), plain.readParam('blocks.1.mlp.fc1.weight'));
  const [p, r] = [plain.activationBytes(3, true), rec.activationBytes(3, true)];
  assert.ok(r > 0 && r < 0.6 * p, `recompute keeps less: ${r} vs ${p} bytes`);
  assert.equal(rec.activationBytes(3, false), plain.activationBytes(3, false), 'inference is unaffected');
  assert.ok(plain.activationBytes(6, true) > p, 'memory grows with the batch');
  assert.throws(() => rec.activationBytes(0, true), /activationBytes: n must be/);
  assert.throws(() => DiTModel.create({ config: cfg, seed: 1, recompute: 'yes' as unknown as boolean }), /recompute must be a boolean/);
  plain.dispose();
  rec.dispose();
});

test('the noise stream advances, and restoring it reproduces a step exactly', async () => {
  const a = newModel(SMALL, 9);
  const b = newModel(SMALL, 9);
  const data = batch(SMALL, 2, 6);
  const s0 = a.getNoiseState();
  assert.deepEqual(s0, { seed: 9, offset: 0 });
  const r1 = await a.trainStep(data, HYPER);
  const s1 = a.getNoiseState();
  assert.equal(s1.seed, 9);
  assert.ok(s1.offset > s0.offset, 'a train step draws noise');
  const r2 = await a.trainStep(data, HYPER);
  // model b: first step as a, then jump its stream and step counter to a's state after step 1
  const r1b = await b.trainStep(data, HYPER);
  assert.deepEqual(r1b.loss, r1.loss);
  b.setNoiseState(s1);
  const r2b = await b.trainStep(data, HYPER);
  assert.deepEqual(r2b.loss, r2.loss);
  assert.deepEqual(r2b.mse, r2.mse);
  // and the noise matters: a different offset gives different losses
  b.setNoiseState({ seed: 9, offset: 12345 });
  const r3 = await b.trainStep(data, HYPER);
  assert.notDeepEqual(r3.mse, r2.mse);
  for (const name of ['blocks.0.attn.qkv.weight', 'final_layer.linear.bias']) {
    assert.deepEqual(b.readParam(name, 'adam_m').length, a.readParam(name, 'adam_m').length);
  }
  a.dispose();
  b.dispose();
});

test('drawNoise: a standard normal stream, consumed in blocks of 4', () => {
  const m = newModel(SMALL, 21);
  const s = m.getNoiseState();
  const x = m.drawNoise(40000);
  assert.equal(m.getNoiseState().offset, s.offset + 10000);
  const mean = x.reduce((a, v) => a + v, 0) / x.length;
  const variance = x.reduce((a, v) => a + (v - mean) ** 2, 0) / x.length;
  assert.ok(Math.abs(mean) < 0.03 && Math.abs(variance - 1) < 0.05, `mean ${mean}, variance ${variance}`);
  m.setNoiseState(s);
  const first = m.drawNoise(6); // 2 blocks: elements 6, 7 of block 1 are dropped
  assert.deepEqual(first, x.subarray(0, 6));
  assert.deepEqual(m.drawNoise(4), x.subarray(8, 12));
  m.dispose();
});

test('a NaN in x0 skips the step and leaves weights, moments, EMA and the step count untouched', async () => {
  const m = newModel();
  await m.trainStep(batch(SMALL, 2, 7), HYPER); // non-zero moments first
  const names = ['blocks.0.attn.qkv.weight', 'final_layer.linear.weight', 'y_embedder.embedding_table.weight'];
  const before = names.map((n) => (['model', 'ema', 'adam_m', 'adam_v'] as const).map((s) => m.readParam(n, s)));
  const bad = batch(SMALL, 2, 8);
  bad.x0[17] = NaN;
  const r = await m.trainStep(bad, HYPER);
  assert.equal(r.skipped, true);
  assert.equal(r.step, 1);
  assert.equal(m.getStep(), 1);
  const after = names.map((n) => (['model', 'ema', 'adam_m', 'adam_v'] as const).map((s) => m.readParam(n, s)));
  assert.deepEqual(after, before);
  // and the model still trains afterwards
  const ok = await m.trainStep(batch(SMALL, 2, 9), HYPER);
  assert.equal(ok.skipped, false);
  assert.equal(ok.step, 2);
  m.dispose();
});

test('identical losses and weights with 1 and 2 threads', async () => {
  const m1 = newModel(SMALL, 5, 1);
  const m2 = newModel(SMALL, 5, 2);
  const data = batch(SMALL, 3, 10);
  for (let i = 0; i < 2; i++) {
    const [r1, r2] = [await m1.trainStep(data, HYPER), await m2.trainStep(data, HYPER)];
    assert.deepEqual(r1.loss, r2.loss);
    assert.deepEqual(r1.vb, r2.vb);
    assert.equal(r1.gradNorm, r2.gradNorm);
  }
  for (const name of ['blocks.1.adaLN_modulation.1.weight', 'x_embedder.proj.weight']) assert.deepEqual(m1.readParam(name), m2.readParam(name));
  m1.dispose();
  m2.dispose();
});

test('the event loop keeps running during a trainStep', async () => {
  const cfg: ModelConfig = { ...SMALL, inputSize: 16, hiddenSize: 128, depth: 4, numHeads: 4 };
  const m = newModel(cfg, 2, 2);
  const data = batch(cfg, 8, 11);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const started = performance.now();
  const p = m.trainStep(data, HYPER);
  assert.equal(m.busy, true);
  assert.equal(m.busyWith, 'trainStep');
  const r = await p;
  const ms = performance.now() - started;
  clearInterval(timer);
  assert.equal(m.busy, false);
  assert.equal(r.skipped, false);
  assert.ok(ms > 15, `the step must take long enough to tell (took ${ms.toFixed(1)} ms)`);
  assert.ok(ticks >= 2, `a 1 ms timer fired ${ticks} times during a ${ms.toFixed(1)} ms step`);
  m.dispose();
});

test('sampleStep on a new (all-zero) model is the DDIM update with eps_hat = 0; the input is not modified', async () => {
  const m = newModel();
  const t = 600;
  const abar = TABLES.sqrtAbar[t] ** 2;
  const abarPrev = TABLES.sqrtAbar[t - 100] ** 2;
  const coefs = ddimCoefs(t, t - 100, 0);
  const x = uniformF32(2 * 3 * 64, 2, 12);
  const copy = x.slice();
  const out = await m.sampleStep(x, t, Int32Array.from([1, 5]), coefs);
  assert.deepEqual(x, copy);
  const want = Array.from(x, (v) => Math.sqrt(abarPrev) * Math.sqrt(1 / abar) * v);
  assert.ok(relErr(out, want) < 1e-6, `relative error ${relErr(out, want)}`);
  m.dispose();
});

// ---- the sampling-step kernel against the DDPM / DDIM update, written out ----------------

function ddpmCoefs(t: number): SampleStepCoefs {
  return {
    mode: 'ddpm',
    sqrtRecipAbar: TABLES.sqrtRecipAbar[t],
    sqrtRecipm1Abar: TABLES.sqrtRecipm1Abar[t],
    coef1: TABLES.coef1[t],
    coef2: TABLES.coef2[t],
    logBeta: TABLES.logBeta[t],
    postLogVar: TABLES.postLogVar[t],
    sqrtAbarPrev: 1,
    epsCoef: 0,
    sigma: 0,
    addNoise: t > 0,
    clipX0: false,
    cfg: false,
    guidance: 1,
  };
}

function ddimCoefs(t: number, prev: number, eta: number): SampleStepCoefs {
  const abar = TABLES.sqrtAbar[t] ** 2;
  const abarPrev = prev < 0 ? 1 : TABLES.sqrtAbar[prev] ** 2;
  const sigma = eta * Math.sqrt((1 - abarPrev) / (1 - abar)) * Math.sqrt(1 - abar / abarPrev);
  return {
    ...ddpmCoefs(t),
    mode: 'ddim',
    sqrtAbarPrev: Math.sqrt(abarPrev),
    epsCoef: Math.sqrt(1 - abarPrev - sigma * sigma),
    sigma,
    addNoise: t > 0 && eta > 0,
  };
}

/** The DDPM (IDDPM p_sample) / DDIM (ddim_sample) update with guidance, element by element, in float64. */
function directStep(out: Float32Array, x: Float32Array, z: Float32Array, N: number, C: number, HW: number, learnSigma: boolean, k: SampleStepCoefs): Float64Array {
  const Cout = learnSigma ? 2 * C : C;
  const res = new Float64Array(x.length);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      for (let j = 0; j < HW; j++) {
        const i = (n * C + c) * HW + j;
        let eps = out[(n * Cout + c) * HW + j];
        if (k.cfg) {
          const eNull = out[((n + N) * Cout + c) * HW + j];
          eps = eNull + k.guidance * (eps - eNull);
        }
        let x0 = k.sqrtRecipAbar * x[i] - k.sqrtRecipm1Abar * eps;
        if (k.clipX0) {
          x0 = Math.min(1, Math.max(-1, x0));
          // IDDPM's DDIM takes eps back from the clipped x0_hat
          if (k.mode === 'ddim') eps = (k.sqrtRecipAbar * x[i] - x0) / k.sqrtRecipm1Abar;
        }
        if (k.mode === 'ddim') {
          res[i] = k.sqrtAbarPrev * x0 + k.epsCoef * eps + (k.addNoise ? k.sigma * z[i] : 0);
        } else {
          let logVar = k.postLogVar;
          if (learnSigma) {
            const frac = (out[(n * Cout + C + c) * HW + j] + 1) / 2; // from the conditional half
            logVar = frac * k.logBeta + (1 - frac) * k.postLogVar;
          }
          const mu = k.coef1 * x0 + k.coef2 * x[i];
          res[i] = mu + (k.addNoise ? Math.exp(0.5 * logVar) * z[i] : 0);
        }
      }
    }
  }
  return res;
}

test('sampleStepKernel matches the DDPM / DDIM update written out (DDPM, DDIM, eta, clipping, guidance, t = 0)', () => {
  const N = 3;
  const C = 2;
  const HW = 5;
  const cases: [string, boolean, SampleStepCoefs][] = [
    ['ddpm learned sigma', true, ddpmCoefs(500)],
    ['ddpm fixed sigma', false, ddpmCoefs(500)],
    ['ddpm t = 0 (no noise)', true, ddpmCoefs(0)],
    ['ddpm clipped', true, { ...ddpmCoefs(900), clipX0: true }],
    ['ddim eta 0', true, ddimCoefs(700, 680, 0)],
    ['ddim eta 1', false, ddimCoefs(700, 680, 1)],
    ['ddim clipped', true, { ...ddimCoefs(900, 850, 0.5), clipX0: true }],
    ['ddpm cfg 4', true, { ...ddpmCoefs(300), cfg: true, guidance: 4 }],
    ['ddim cfg 1.5 clipped', false, { ...ddimCoefs(400, 300, 0.3), cfg: true, guidance: 1.5, clipX0: true }],
  ];
  for (const [name, learnSigma, k] of cases) {
    const Cout = learnSigma ? 2 * C : C;
    const rows = k.cfg ? 2 * N : N;
    const out = uniformF32(rows * Cout * HW, 1.5, 31);
    const x = uniformF32(N * C * HW, 3, 32);
    const z = uniformF32(N * C * HW, 2, 33);
    const got = sampleStepKernel(out, x, z, { N, C, HW, learnSigma }, k);
    const want = directStep(out, x, z, N, C, HW, learnSigma, k);
    assert.ok(relErr(got, want) < 1e-6, `${name}: relative error ${relErr(got, want)}`);
    if (k.clipX0) {
      const unclipped = directStep(out, x, z, N, C, HW, learnSigma, { ...k, clipX0: false });
      assert.ok(relErr(unclipped, want) > 1e-3, `${name}: the case must exercise clipping`);
    }
  }
});

test('runBench: a tiny benchmark returns the GEMM reference, forward and train-step rows', async () => {
  const rows = await runBench({ models: ['DiT-Ti/8@16x3'], batches: [2], device: 'cpu', threads: 2, iters: 1, kernels: false, gemmSize: 64 });
  const gemm = rows.find((r) => r.what.startsWith('gemm'));
  assert.ok(gemm && gemm.gflops > 0 && gemm.ratioToGemm === 1, 'the GEMM reference row');
  for (const what of ['forward', 'train_step']) {
    const r = rows.find((x) => x.what === what);
    assert.ok(r, `a ${what} row`);
    assert.equal(r.model, 'DiT-Ti/8@16x3');
    assert.equal(r.device, 'cpu');
    assert.equal(r.batch, 2);
    assert.ok(r.ms > 0 && r.imagesPerSec > 0 && r.gflops > 0, `${what}: ${JSON.stringify(r)}`);
    assert.ok(Math.abs(r.imagesPerSec - (2 * 1000) / r.ms) < 1e-6 * r.imagesPerSec, 'images/s = batch / time');
    assert.ok(Math.abs(r.ratioToGemm - r.gflops / gemm.gflops) < 1e-9, 'ratio to the GEMM rate of the same run');
    assert.ok(r.activationMB > 0, `${what}: activation memory`);
  }
  const rec = await runBench({ models: ['DiT-Ti/8@16x3'], batches: [2], device: 'cpu', threads: 2, iters: 1, kernels: false, gemmSize: 64, recompute: true });
  const step = rows.find((x) => x.what === 'train_step');
  const stepRec = rec.find((x) => x.what === 'train_step recompute');
  assert.ok(step && stepRec && stepRec.activationMB < step.activationMB / 2, 'recompute row with less activation memory');
  await assert.rejects(runBench({ models: ['DiT-Ti/8@16x3'], batches: [2], device: 'cpu', recompute: 1 as unknown as boolean }), /opts.recompute must be a boolean/);
  // --profile: one row per op (and Linear / attention shape) of one train step, shares summing to 1
  const prof = await runBench({ models: ['DiT-Ti/8@16x3'], batches: [2], device: 'cpu', threads: 2, iters: 1, kernels: false, gemmSize: 64, profile: true });
  const opRows = prof.filter((r) => r.what.startsWith('step ') && r.what !== 'step total (profiled)');
  const att = opRows.find((r) => r.what.startsWith('step attention_forward '));
  assert.ok(att && att.calls === 12 && att.gflops > 0, `attention_forward once per DiT-Ti block: ${JSON.stringify(att)}`);
  assert.ok(Math.abs(opRows.reduce((s, r) => s + r.share, 0) - 1) < 1e-9, 'the op rows share the profiled step');
  const total = prof.find((r) => r.what === 'step total (profiled)');
  assert.ok(total && total.share === 1 && Math.abs(total.ms - opRows.reduce((s, r) => s + r.ms, 0)) < 1e-6 * total.ms);
  assert.equal(rows.filter((r) => r.what.startsWith('step ')).length, 0, 'no profile rows unless asked');
});

test('dispose frees a model at once; a model dropped without dispose is freed by the GC', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const base = liveModelCount();
  const m = newModel();
  assert.equal(liveModelCount(), base + 1);
  m.dispose();
  assert.equal(liveModelCount(), base);
  (() => {
    for (let i = 0; i < 4; i++) DiTModel.create({ config: SMALL, seed: i, threads: 1 }); // dropped at once
  })();
  assert.equal(liveModelCount(), base + 4);
  // finalizers run after a GC pass, possibly on a later turn of the event loop
  for (let i = 0; i < 20 && liveModelCount() > base; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(liveModelCount(), base, 'the GC freed every dropped model');
});

test('two models train at the same time on separate workers, as they would one after the other', async () => {
  const [a, b, c] = [newModel(SMALL, 4, 1), newModel(SMALL, 4, 1), newModel(SMALL, 4, 1)];
  const d1 = batch(SMALL, 2, 13);
  const d2 = batch(SMALL, 2, 14);
  const [ra, rb] = await Promise.all([a.trainStep(d1, HYPER), b.trainStep(d2, HYPER)]);
  const rc1 = await c.trainStep(d1, HYPER);
  assert.deepEqual(ra.loss, rc1.loss);
  c.dispose();
  const c2 = newModel(SMALL, 4, 1);
  assert.deepEqual(rb.loss, (await c2.trainStep(d2, HYPER)).loss);
  for (const m of [a, b, c2]) m.dispose();
});
