// Bad arguments give NativeErrors that name the argument and say what was
// expected, both through src/native.ts and straight at the addon (its own C++
// checks), and the process survives all of them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import {
  DiTModel,
  NativeError,
  addonPath,
  nativeInfo,
  presetConfig,
  runBench,
  sampleStepKernel,
  type OptimizerHyper,
  type SampleStepCoefs,
  type TrainBatch,
} from '../src/native.js';
import { HYPER, SMALL, linearTables, uniformF32 } from './helpers/native-fixtures.js';

const TABLES = linearTables(1000);

function goodBatch(N = 2): TrainBatch {
  return {
    x0: uniformF32(N * 3 * 64, 1, 1),
    t: Int32Array.from({ length: N }, (_, i) => 100 * i),
    y: Int32Array.from({ length: N }, (_, i) => i),
    weight: new Float32Array(N).fill(1),
  };
}

const COEFS: SampleStepCoefs = {
  mode: 'ddpm',
  sqrtRecipAbar: 1.1,
  sqrtRecipm1Abar: 0.4,
  coef1: 0.3,
  coef2: 0.6,
  logBeta: -5,
  postLogVar: -5.2,
  sqrtAbarPrev: 1,
  epsCoef: 0,
  sigma: 0,
  addNoise: true,
  clipX0: false,
  cfg: false,
  guidance: 1,
};

function model(cfg = SMALL): DiTModel {
  const m = DiTModel.create({ config: cfg, seed: 1, threads: 1 });
  m.setTables(TABLES);
  return m;
}

/** Asserts that f throws (or rejects with) a NativeError whose message contains every fragment. */
async function expectError(what: string, f: () => unknown, ...fragments: (string | RegExp)[]): Promise<void> {
  let err: unknown;
  try {
    await f();
  } catch (e) {
    err = e;
  }
  assert.ok(err !== undefined, `${what}: expected an error, got none`);
  assert.ok(err instanceof NativeError, `${what}: expected a NativeError, got ${String(err)}`);
  for (const frag of fragments) {
    if (typeof frag === 'string') assert.ok(err.message.includes(frag), `${what}: message "${err.message}" lacks "${frag}"`);
    else assert.match(err.message, frag, what);
  }
}

test('a table of bad arguments through src/native.ts', async () => {
  const m = model();
  const uncond = model({ ...SMALL, numClasses: 0, classDropoutProb: 0 });
  const noDrop = model({ ...SMALL, classDropoutProb: 0 });
  const fresh = DiTModel.create({ config: SMALL, seed: 1 }); // no tables
  const hp = (over: Partial<OptimizerHyper>) => ({ ...HYPER, ...over });
  const b = (over: Partial<TrainBatch>) => ({ ...goodBatch(), ...over });

  const cases: [string, () => unknown, ...(string | RegExp)[]][] = [
    // model creation and presets
    ['NaN config value', () => DiTModel.create({ config: { ...SMALL, mlpRatio: NaN }, seed: 1 }), 'config.mlpRatio must be a finite number'],
    ['fractional config value', () => DiTModel.create({ config: { ...SMALL, depth: 1.5 }, seed: 1 }), 'config.depth must be an integer'],
    ['missing config key', () => DiTModel.create({ config: { ...SMALL, numHeads: undefined as unknown as number }, seed: 1 }), 'config.numHeads must be a number, got undefined'],
    ['heads do not divide hidden', () => DiTModel.create({ config: { ...SMALL, numHeads: 5 }, seed: 1 }), 'config: hiddenSize: expected a multiple of numHeads=5, got 32'],
    ['patch does not divide input', () => DiTModel.create({ config: { ...SMALL, patchSize: 3 }, seed: 1 }), 'config: inputSize: expected a multiple of patchSize=3'],
    ['dropout out of range', () => DiTModel.create({ config: { ...SMALL, classDropoutProb: 1.5 }, seed: 1 }), 'config.classDropoutProb must be in [0, 1)'],
    ['bad device', () => DiTModel.create({ config: SMALL, seed: 1, device: 'tpu' as 'cpu' }), "device must be 'cpu' or 'cuda'"],
    ['negative seed', () => DiTModel.create({ config: SMALL, seed: -1 }), 'seed must be in [0, '],
    ['bad cudaMath', () => DiTModel.create({ config: SMALL, seed: 1, cudaMath: 'fp8' as 'bf16' }), 'cudaMath must be'],
    ['bad preset', () => presetConfig('DiT-Q/2'), "unknown DiT preset 'DiT-Q/2'", 'DiT-S/2'],
    ['bad preset base', () => presetConfig('DiT-S/2', { mlpRatio: NaN }), 'presetConfig: base.mlpRatio must be a finite number'],
    // parameters
    ['unknown param', () => m.readParam('blocks.9.attn.qkv.weight'), "readParam: unknown parameter 'blocks.9.attn.qkv.weight'"],
    ['unknown slot', () => m.readParam('pos_embed', 'adam' as 'model'), 'readParam: slot must be one of', "'adam_m'"],
    ['write wrong length', () => m.writeParam('x_embedder.proj.bias', 'model', new Float32Array(3)), "writeParam: data for 'x_embedder.proj.bias' has 3 elements, expected 32"],
    ['write wrong kind', () => m.writeParam('x_embedder.proj.bias', 'model', new Float64Array(32) as unknown as Float32Array), 'writeParam: data must be a Float32Array, got a Float64Array'],
    ['write grad slot', () => m.writeParam('x_embedder.proj.bias', 'grad', new Float32Array(32)), 'grad slot is read-only'],
    ['adam moments of pos_embed', () => m.readParam('pos_embed', 'adam_m'), "'pos_embed' is not trainable"],
    // tables and state
    ['tables wrong kind', () => m.setTables({ ...TABLES, coef1: new Float32Array(1000) as unknown as Float64Array }), 'setTables: tables.coef1 must be a Float64Array, got a Float32Array'],
    ['tables lengths differ', () => m.setTables({ ...TABLES, logBeta: new Float64Array(999) }), 'setTables: tables.logBeta has 999 values, expected T = 1000'],
    ['tables NaN', () => m.setTables({ ...TABLES, postLogVar: TABLES.postLogVar.map((v, i) => (i === 7 ? NaN : v)) }), 'setTables: tables.postLogVar[7] is NaN'],
    ['noise state negative', () => m.setNoiseState({ seed: 1, offset: -4 }), 'setNoiseState: state.offset must be in [0, '],
    ['noise state fractional', () => m.setNoiseState({ seed: 1.5, offset: 0 }), 'setNoiseState: state.seed must be an integer'],
    ['step negative', () => m.setStep(-1), 'setStep: step must be in [0, '],
    ['drawNoise negative', () => m.drawNoise(-1), 'drawNoise: n must be in [0, '],
    // trainStep
    ['x0 wrong length', () => m.trainStep(b({ x0: new Float32Array(100) }), HYPER), 'trainStep: batch.x0 has 100 elements, expected N*C*H*W = 2*3*8*8 = 384'],
    ['x0 wrong kind', () => m.trainStep(b({ x0: new Float64Array(384) as unknown as Float32Array }), HYPER), 'trainStep: batch.x0 must be a Float32Array, got a Float64Array'],
    ['t wrong kind', () => m.trainStep(b({ t: new Float32Array(2) as unknown as Int32Array }), HYPER), 'trainStep: batch.t must be an Int32Array, got a Float32Array'],
    ['t empty', () => m.trainStep(b({ t: new Int32Array(0) }), HYPER), 'trainStep: batch.t is empty'],
    ['t too large', () => m.trainStep(b({ t: Int32Array.from([0, 1000]) }), HYPER), 'trainStep: batch.t[1] = 1000 is out of range: expected a time step in [0, 1000)'],
    ['t negative', () => m.trainStep(b({ t: Int32Array.from([-1, 0]) }), HYPER), 'batch.t[0] = -1 is out of range'],
    ['label too large', () => m.trainStep(b({ y: Int32Array.from([0, 6]) }), HYPER), 'trainStep: batch.y[1] = 6 is out of range: expected a label in [0, 5] (5 = the null label)'],
    ['null label without dropout', () => noDrop.trainStep(b({ y: Int32Array.from([5, 0]) }), HYPER), 'batch.y[0] = 5 is out of range: expected a label in [0, 4] (no null label'],
    ['labels wrong length', () => m.trainStep(b({ y: Int32Array.from([0]) }), HYPER), 'trainStep: batch.y has 1 elements, expected N = 2'],
    ['weight wrong length', () => m.trainStep(b({ weight: new Float32Array(3) }), HYPER), 'trainStep: batch.weight has 3 elements, expected N = 2'],
    ['weight NaN', () => m.trainStep(b({ weight: Float32Array.from([1, NaN]) }), HYPER), 'trainStep: batch.weight[1] is NaN'],
    ['NaN lr', () => m.trainStep(goodBatch(), hp({ lr: NaN })), 'trainStep: hp.lr must be a finite number, got NaN'],
    ['Infinity eps', () => m.trainStep(goodBatch(), hp({ eps: Infinity })), 'trainStep: hp.eps must be a finite number'],
    ['beta1 = 1', () => m.trainStep(goodBatch(), hp({ beta1: 1 })), 'trainStep: hp.beta1 = 1, expected a value in [0, 1)'],
    ['missing hp key', () => m.trainStep(goodBatch(), { ...HYPER, vbScale: undefined } as unknown as OptimizerHyper), 'trainStep: hp.vbScale must be a number, got undefined'],
    ['no tables', () => fresh.trainStep(goodBatch(), HYPER), 'trainStep: batch.t: no diffusion tables; call setTables first'],
    // forward and sampling
    ['forward x wrong length', () => m.forward(new Float32Array(5), Int32Array.from([1]), Int32Array.from([1])), 'forward: x has 5 elements, expected N*C*H*W = 1*3*8*8 = 192'],
    ['forward labels on unconditional', () => uncond.forward(new Float32Array(192), Int32Array.from([1]), Int32Array.from([1, 2])), 'forward: y has 2 elements, expected N = 1 (or 0: the model is unconditional)'],
    ['sampleStep t out of range', () => m.sampleStep(new Float32Array(192), 1000, Int32Array.from([1]), COEFS), 'sampleStep: t must be in [0, 999], got 1000'],
    ['sampleStep no tables', () => fresh.sampleStep(new Float32Array(192), 10, Int32Array.from([1]), COEFS), 'sampleStep: no diffusion tables'],
    ['sampleStep x not a multiple', () => m.sampleStep(new Float32Array(200), 10, Int32Array.from([1]), COEFS), 'sampleStep: x has 200 elements, expected a positive multiple of C*H*W = 3*8*8 = 192'],
    ['sampleStep cfg unconditional', () => uncond.sampleStep(new Float32Array(192), 10, new Int32Array(0), { ...COEFS, cfg: true }), 'sampleStep: coefs.cfg needs a class-conditional model with a null label'],
    ['sampleStep bad mode', () => m.sampleStep(new Float32Array(192), 10, Int32Array.from([1]), { ...COEFS, mode: 'euler' as 'ddpm' }), "sampleStep: coefs.mode must be 'ddpm' or 'ddim'"],
    ['sampleStep NaN coef', () => m.sampleStep(new Float32Array(192), 10, Int32Array.from([1]), { ...COEFS, sigma: NaN }), 'sampleStep: coefs.sigma must be a finite number'],
    ['kernel modelOut length', () => sampleStepKernel(new Float32Array(10), new Float32Array(6), new Float32Array(6), { N: 1, C: 2, HW: 3, learnSigma: true }, COEFS), 'sampleStepKernel: modelOut has 10 elements, expected N*2C*HW = 1*4*3 = 12'],
    ['kernel cfg length', () => sampleStepKernel(new Float32Array(12), new Float32Array(6), new Float32Array(6), { N: 1, C: 2, HW: 3, learnSigma: true }, { ...COEFS, cfg: true }), 'expected 2N*2C*HW = 2*4*3 = 24'],
    ['kernel noise kind', () => sampleStepKernel(new Float32Array(12), new Float32Array(6), new Int32Array(6) as unknown as Float32Array, { N: 1, C: 2, HW: 3, learnSigma: true }, COEFS), 'sampleStepKernel: noise must be a Float32Array, got an Int32Array'],
    ['bench bad model spec', () => runBench({ models: ['DiT-Q/2@8x3'], batches: [1], device: 'cpu' }), "runBench: opts.models: 'DiT-Q/2@8x3'"],
    ['bench bad batch', () => runBench({ models: ['DiT-Ti/8@16x3'], batches: [0], device: 'cpu' }), 'runBench: opts.batches[0] must be in [1, '],
    ['bench bad device', () => runBench({ models: ['DiT-Ti/8@16x3'], batches: [1], device: 'gpu' as 'cpu' }), "runBench: opts.device must be 'cpu' or 'cuda'"],
  ];
  if (!nativeInfo().cuda.available) {
    cases.push(['cuda when unavailable', () => DiTModel.create({ config: SMALL, seed: 1, device: 'cuda' }), "DiTModel.create: device 'cuda' is not available: ", nativeInfo().cuda.reason]);
    // fails inside the bench's worker thread: the C++ exception must become a rejection
    cases.push(['bench on cuda when unavailable', () => runBench({ models: ['DiT-Ti/8@16x3'], batches: [1], device: 'cuda', iters: 1, kernels: false, gemmSize: 16 }), "runBench: device 'cuda' is not available: ", nativeInfo().cuda.reason]);
  }
  for (const [what, f, ...frags] of cases) await expectError(what, f, ...frags);

  // after all of that the models still work
  const r = await m.trainStep(goodBatch(), HYPER);
  assert.equal(r.skipped, false);
  for (const x of [m, uncond, noDrop, fresh]) x.dispose();
});

test('calls after dispose fail clearly; dispose is idempotent', async () => {
  const m = model();
  m.dispose();
  assert.equal(m.disposed, true);
  m.dispose();
  await expectError('readParam', () => m.readParam('pos_embed'), 'readParam: the model has been disposed');
  await expectError('params', () => m.params(), 'params: the model has been disposed');
  await expectError('trainStep', () => m.trainStep(goodBatch(), HYPER), 'trainStep: the model has been disposed');
  await expectError('forward', () => m.forward(new Float32Array(192), Int32Array.from([1]), Int32Array.from([1])), 'forward: the model has been disposed');
});

test('a busy model refuses every other call at once, then works again', async () => {
  const m = model();
  const first = m.trainStep(goodBatch(), HYPER);
  const busy = 'model is busy with trainStep; await the previous call';
  const second = m.trainStep(goodBatch(), HYPER);
  await expectError('second trainStep', () => second, `trainStep: ${busy}`);
  await expectError('forward', () => m.forward(new Float32Array(384), Int32Array.from([1, 2]), Int32Array.from([1, 2])), `forward: ${busy}`);
  await expectError('sampleStep', () => m.sampleStep(new Float32Array(192), 3, Int32Array.from([1]), COEFS), `sampleStep: ${busy}`);
  await expectError('readParam', () => m.readParam('pos_embed'), `readParam: ${busy}`);
  await expectError('writeParam', () => m.writeParam('x_embedder.proj.bias', 'model', new Float32Array(32)), `writeParam: ${busy}`);
  await expectError('setTables', () => m.setTables(TABLES), `setTables: ${busy}`);
  await expectError('setNoiseState', () => m.setNoiseState({ seed: 1, offset: 0 }), `setNoiseState: ${busy}`);
  await expectError('dispose', () => m.dispose(), busy);
  const r = await first;
  assert.equal(r.step, 1);
  assert.equal(m.busy, false);
  const again = await m.trainStep(goodBatch(), HYPER);
  assert.equal(again.step, 2);
  m.dispose();
});

// ---- the addon's own checks, without src/native.ts in front -----------------------------

interface RawModel {
  trainStep(...a: unknown[]): Promise<unknown>;
  forward(...a: unknown[]): Promise<unknown>;
  sampleStep(...a: unknown[]): Promise<unknown>;
  readParam(...a: unknown[]): unknown;
  writeParam(...a: unknown[]): unknown;
  setTables(...a: unknown[]): unknown;
  setNoiseState(...a: unknown[]): unknown;
  dispose(): void;
}
interface RawAddon {
  Model: new (...a: unknown[]) => RawModel;
  presetConfig(...a: unknown[]): unknown;
  sampleStepKernel(...a: unknown[]): unknown;
  cpuForceBuiltinGemm(...a: unknown[]): unknown;
}

test('the addon checks its arguments itself (C++ side)', async () => {
  const raw = createRequire(import.meta.url)(addonPath()) as RawAddon;
  const throwsNative = async (what: string, f: () => unknown, fragment: string) => {
    await assert.rejects(async () => f(), (e: Error) => {
      assert.ok(e instanceof Error, what);
      assert.ok(e.message.includes(fragment), `${what}: message "${e.message}" lacks "${fragment}"`);
      return true;
    });
  };
  await throwsNative('NaN config', () => new raw.Model({ ...SMALL, mlpRatio: NaN }, { seed: 1 }), 'DiTModel.create: config.mlpRatio must be a finite number');
  await throwsNative('no options', () => new raw.Model(SMALL), 'DiTModel.create: options must be an object, got undefined');
  await throwsNative('bad preset', () => raw.presetConfig('DiT-Z/2'), "unknown DiT preset 'DiT-Z/2'");
  await throwsNative('bad gemm flag', () => raw.cpuForceBuiltinGemm('yes'), 'cpuForceBuiltinGemm: on must be a boolean');
  const m = new raw.Model(SMALL, { seed: 1, threads: 1 });
  const { x0, t, y, weight } = goodBatch();
  await throwsNative('no tables', () => m.trainStep(x0, t, y, weight, HYPER), 'trainStep: batch.t: no diffusion tables; call setTables first');
  await throwsNative('tables short', () => m.setTables({ ...TABLES, coef2: new Float64Array(10) }), 'setTables: tables.coef2 has 10 values, expected T = 1000');
  m.setTables(TABLES);
  await throwsNative('x0 kind', () => m.trainStep(Array.from(x0), t, y, weight, HYPER), 'trainStep: batch.x0 must be a Float32Array, got an Array');
  await throwsNative('x0 length', () => m.trainStep(new Float32Array(10), t, y, weight, HYPER), 'trainStep: batch.x0 has 10 elements, expected N*C*H*W = 2*3*8*8 = 384');
  await throwsNative('t range', () => m.trainStep(x0, Int32Array.from([0, 5000]), y, weight, HYPER), 'trainStep: batch.t[1] = 5000 is out of range');
  await throwsNative('y range', () => m.trainStep(x0, t, Int32Array.from([-3, 0]), weight, HYPER), 'trainStep: batch.y[0] = -3 is out of range');
  await throwsNative('NaN lr', () => m.trainStep(x0, t, y, weight, { ...HYPER, lr: NaN }), 'trainStep: hp.lr must be a finite number');
  await throwsNative('no hp', () => m.trainStep(x0, t, y, weight), 'trainStep: hp must be an object, got undefined');
  await throwsNative('unknown param', () => m.readParam('nope', 'model'), "readParam: unknown parameter 'nope'");
  await throwsNative('unknown slot', () => m.readParam('pos_embed', 'moments'), "readParam: slot must be one of 'model', 'ema', 'adam_m', 'adam_v', 'grad', got 'moments'");
  await throwsNative('write length', () => m.writeParam('pos_embed', 'model', new Float32Array(2)), "writeParam: data for 'pos_embed' has 2 elements, expected 512");
  await throwsNative('noise seed', () => m.setNoiseState(-1, 0), 'setNoiseState: seed must be in [0, ');
  await throwsNative('sample t', () => m.sampleStep(new Float32Array(192), 1000, Int32Array.from([1]), COEFS, false), 'sampleStep: t must be in [0, 999]');
  await throwsNative('kernel x', () => raw.sampleStepKernel(new Float32Array(12), new Float32Array(5), new Float32Array(6), { N: 1, C: 2, HW: 3, learnSigma: true }, COEFS), 'sampleStepKernel: x has 5 elements, expected N*C*HW = 6');
  // busy, seen by the addon itself: the second call throws synchronously
  const p = m.trainStep(x0, t, y, weight, HYPER);
  await throwsNative('busy', () => m.trainStep(x0, t, y, weight, HYPER), 'trainStep: model is busy with trainStep; await the previous call');
  await throwsNative('busy dispose', () => m.dispose(), 'dispose: model is busy with trainStep');
  await p;
  m.dispose();
  await throwsNative('disposed', () => m.readParam('pos_embed', 'model'), 'readParam: the model has been disposed');
});

test('JS arrays mutated right after a call do not affect it (inputs are copied)', async () => {
  const a = model();
  const b = model();
  const data = goodBatch();
  const copy: TrainBatch = { x0: data.x0.slice(), t: data.t.slice(), y: data.y.slice(), weight: data.weight.slice() };
  const pa = a.trainStep(data, HYPER);
  data.x0.fill(1e30);
  data.t.fill(999);
  data.weight.fill(0);
  const ra = await pa;
  const rb = await b.trainStep(copy, HYPER);
  assert.deepEqual(ra.loss, rb.loss);
  a.dispose();
  b.dispose();
});

test('a missing addon gives a NativeError that says how to build it', async () => {
  const { spawnSync } = await import('node:child_process');
  const script = "import('./src/native.ts').then((m) => { try { m.nativeInfo(); } catch (e) { console.log(e.name + ': ' + e.message); } })";
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], {
    cwd: new URL('..', import.meta.url),
    env: { ...process.env, SPEED_TRAIN_ADDON: '/nonexistent/speed_native.node' },
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^NativeError: the native addon was not found at \/nonexistent\/speed_native.node \(from SPEED_TRAIN_ADDON\); run `npm run build:native`/);
});
