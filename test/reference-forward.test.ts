// The native DiT forward pass against an independent naive float64 forward
// written in TypeScript from the reference (test/helpers/naive-dit.ts), on small
// models whose every trainable parameter is set to random values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DiTModel, cpuForceBuiltinGemm, nativeInfo, type ModelConfig } from '../src/native.js';
import { naiveDiTForward, naivePosEmbed, type NaiveParams } from './helpers/naive-dit.js';
import { SMALL, relErr, uniformF32 } from './helpers/native-fixtures.js';

/** Random values for every trainable parameter, scaled by fan-in so activations stay O(1). */
function randomize(model: DiTModel, seed: number): NaiveParams {
  const params: NaiveParams = {};
  for (const [k, p] of model.params().entries()) {
    if (p.trainable) {
      const fanIn = p.shape.length > 1 ? p.shape.slice(1).reduce((a, b) => a * b, 1) : 16;
      // adaLN and final layers random too, so gates, shifts and scales all matter
      const data = uniformF32(p.numel, 1.5 / Math.sqrt(fanIn), seed * 1000 + k);
      model.writeParam(p.name, 'model', data);
    }
    params[p.name] = Float64Array.from(model.readParam(p.name, 'model'));
  }
  return params;
}

async function compare(cfg: ModelConfig, t: number[], y: number[], seed: number): Promise<number> {
  const model = DiTModel.create({ config: cfg, seed, threads: 2 });
  try {
    const params = randomize(model, seed);
    const { inChannels: C, inputSize: H } = cfg;
    const x = uniformF32(t.length * C * H * H, 2, seed + 7);
    const got = await model.forward(x, Int32Array.from(t), Int32Array.from(y));
    const want = naiveDiTForward(cfg, params, Float64Array.from(x), t, y);
    assert.equal(got.length, want.length);
    assert.ok(want.some((v) => Math.abs(v) > 0.1), 'the reference output is not trivially small');
    return relErr(got, want);
  } finally {
    model.dispose();
  }
}

test('pos_embed of a new model is the 2D sin-cos embedding of the reference', () => {
  const model = DiTModel.create({ config: SMALL, seed: 1 });
  const got = model.readParam('pos_embed');
  const want = naivePosEmbed(SMALL.hiddenSize, SMALL.inputSize / SMALL.patchSize);
  assert.ok(relErr(got, want) < 1e-6, `pos_embed relative error ${relErr(got, want)}`);
  model.dispose();
});

test('native forward = naive float64 forward (class-conditional, learned sigma, null label)', async () => {
  const err = await compare(SMALL, [0, 17, 500, 999], [0, 4, 5, 2], 11);
  assert.ok(err < 1e-5, `max relative error ${err}`);
});

test('native forward = naive float64 forward with the built-in GEMM forced (when BLAS is the default)', async (t) => {
  if (!nativeInfo().gemm.startsWith('blas')) t.diagnostic('built without BLAS: the built-in GEMM is already the default');
  cpuForceBuiltinGemm(true);
  try {
    const err = await compare(SMALL, [5, 640], [3, 5], 13);
    assert.ok(err < 1e-5, `max relative error ${err}`);
  } finally {
    cpuForceBuiltinGemm(false);
  }
});

test('native forward = naive float64 forward (unconditional, fixed sigma, patch 4, 2 heads)', async () => {
  const cfg: ModelConfig = { ...SMALL, patchSize: 4, inChannels: 2, hiddenSize: 16, numHeads: 2, depth: 1, numClasses: 0, classDropoutProb: 0, learnSigma: false };
  const err = await compare(cfg, [3, 250], [], 12);
  assert.ok(err < 1e-5, `max relative error ${err}`);
});

test('native EMA forward uses the EMA weights', async () => {
  const model = DiTModel.create({ config: SMALL, seed: 3 });
  const params = randomize(model, 3);
  // put the random weights in the EMA slot and zeros in the model slot
  for (const p of model.params()) {
    if (!p.trainable) continue;
    model.writeParam(p.name, 'ema', Float32Array.from(params[p.name]));
    model.writeParam(p.name, 'model', new Float32Array(p.numel));
  }
  const x = uniformF32(2 * 3 * 64, 2, 5);
  const ema = await model.forward(x, Int32Array.from([10, 900]), Int32Array.from([1, 3]), { useEma: true });
  const want = naiveDiTForward(SMALL, params, Float64Array.from(x), [10, 900], [1, 3]);
  assert.ok(relErr(ema, want) < 1e-5, `EMA forward relative error ${relErr(ema, want)}`);
  const plain = await model.forward(x, Int32Array.from([10, 900]), Int32Array.from([1, 3]));
  assert.ok(plain.every((v) => v === 0), 'the model slot holds zeros, so its forward is zero');
  model.dispose();
});
