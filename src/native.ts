// The typed face of the native addon (native/src/napi). Everything per-element
// runs in the addon; this module validates arguments, converts names and runs
// long calls off the event loop (they return Promises).
//
// CONTRACT: the exported names and types below are what the rest of src/ uses.
// The implementation (loading build/Release/speed_native.node) lives here too.
//
// Arguments are checked here first (types, lengths, ranges, finiteness) so that
// messages name the argument in TypeScript terms; the addon checks them again.
// Every error, from here or from the addon, is a NativeError.

import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export type Device = 'cpu' | 'cuda';
export type CudaMath = 'bf16' | 'tf32' | 'fp32';
export type Slot = 'model' | 'ema' | 'adam_m' | 'adam_v' | 'grad';

/** The transformer's shape: the keys the DiT (ModelConfig) and the feature network's ViT (ViTFeatNetConfig) share. */
export interface TransformerConfig {
  inputSize: number;
  patchSize: number;
  inChannels: number;
  hiddenSize: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  numClasses: number;
}

/** DiT hyper-parameters (native DiTConfig). */
export interface ModelConfig extends TransformerConfig {
  /** 0 = unconditional */
  numClasses: number;
  classDropoutProb: number;
  learnSigma: boolean;
}

export interface ModelOptions {
  config: ModelConfig;
  device?: Device; // default 'cpu'
  /** CPU threads; 0 or undefined = all cores */
  threads?: number;
  cudaDevice?: number;
  cudaMath?: CudaMath; // default 'bf16'
  /** seed of DiT's initialisation */
  seed: number;
  /** seed of the Philox noise stream (default: seed) */
  noiseSeed?: number;
  /**
   * Activation recomputation in training (default false): keep only each block's
   * input and re-run its forward in backward. Bitwise the same results, about a
   * depth-th of the activation memory, about a third more compute.
   */
  recompute?: boolean;
}

export interface ParamInfo {
  name: string; // DiT state_dict name
  shape: number[];
  numel: number;
  trainable: boolean;
}

/** Per-timestep tables (length T each) in float64, from src/diffusion. */
export interface DiffusionTables {
  sqrtAbar: Float64Array;
  sqrt1mAbar: Float64Array;
  sqrtRecipAbar: Float64Array;
  sqrtRecipm1Abar: Float64Array;
  coef1: Float64Array;
  coef2: Float64Array;
  logBeta: Float64Array;
  postLogVar: Float64Array;
}

export interface OptimizerHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** <= 0: no clipping */
  maxGradNorm: number;
  /** < 0: no EMA update */
  emaDecay: number;
  /** multiplies vb ("rescaled MSE": T/1000); 1 by default */
  vbScale: number;
  /** data parallelism (src/parallel): this call's samples start at this index of the global batch (default 0) */
  shardOffset?: number;
  /** data parallelism: samples in the global batch (default N); the noise stream advances by this many samples */
  globalBatch?: number;
}

export interface TrainBatch {
  /** [N, C, H, W] clean images/latents in the model's scale */
  x0: Float32Array;
  /** [N] time steps in [0, T) */
  t: Int32Array;
  /** [N] labels after label dropout (numClasses = null); ignored when unconditional */
  y: Int32Array;
  /** [N] per-sample weights of the mse term */
  weight: Float32Array;
}

export interface TrainStepResult {
  loss: Float32Array;
  mse: Float32Array;
  vb: Float32Array;
  gradNorm: number;
  /** true when the loss or gradient was not finite: weights untouched */
  skipped: boolean;
  /** optimizer steps taken so far */
  step: number;
}

/** Coefficients of one reverse step (native SampleStepCoefs: the DDPM / DDIM update of IDDPM's p_sample and DDIM's ddim_sample). */
export interface SampleStepCoefs {
  mode: 'ddpm' | 'ddim';
  sqrtRecipAbar: number;
  sqrtRecipm1Abar: number;
  coef1: number;
  coef2: number;
  logBeta: number;
  postLogVar: number;
  sqrtAbarPrev: number;
  epsCoef: number;
  sigma: number;
  addNoise: boolean;
  clipX0: boolean;
  cfg: boolean;
  guidance: number;
  /** guide eps channels [0, guidanceChannels) only, the rest keep the conditional prediction (DiT: 3); 0 or absent: all */
  guidanceChannels?: number;
}

export interface NoiseState {
  seed: number;
  offset: number;
}

export interface NativeInfo {
  version: string;
  /** the CPU GEMM chosen at run time: "blas (<library>)" or "builtin (avx512|avx2|portable)" */
  gemm: string;
  cuda: { available: boolean; reason: string };
  hardwareThreads: number;
  /** the .node file that was loaded */
  addonPath: string;
  /** the compiler that built the addon */
  compiler: string;
  napiVersion: number;
}

/** One row of the native benchmark (native/src/core/bench). */
export interface BenchRow {
  model: string; // e.g. "DiT-S/2"
  device: Device;
  batch: number;
  what: string; // "forward", "train_step", "gemm", or a kernel name
  ms: number;
  imagesPerSec: number; // 0 for kernels
  gflops: number; // achieved GFLOP/s (FLOPs counted analytically); 0 when not meaningful
  gbps: number; // achieved GB/s for memory-bound kernels; 0 when not meaningful
  ratioToGemm: number; // gflops / the large-GEMM rate measured in the same run
  activationMB: number; // forward / train_step rows: activation memory of the call (MiB); else 0
  /** profile rows ("step <op> [shape]", "step total (profiled)"): calls in one step; else 0 */
  calls: number;
  /** profile rows: share of the profiled step's time (the total row: 1); else 0 */
  share: number;
}

export interface BenchOptions {
  models: string[]; // e.g. ["DiT-S/2@32x4", "DiT-Ti/4@32x3"]: preset @ size x channels
  batches: number[];
  device: Device;
  threads?: number;
  cudaMath?: CudaMath;
  iters?: number;
  kernels?: boolean; // time each kernel alone (default true)
  /** time the train step with activation recomputation (default false) */
  recompute?: boolean;
  /** after each train step timing, one more step timed op by op (default false) */
  profile?: boolean;
  /** side of the square float32 GEMM that sets the reference rate (default 2048) */
  gemmSize?: number;
}

/** Thrown for every error that comes from the addon or from argument checks here. */
export class NativeError extends Error {
  override name = 'NativeError';
}


// ---------------------------------------------------------------------------
// Loading the addon.

/** The native Model object (native/src/napi/model.cpp). */
interface NativeModel {
  params(): ParamInfo[];
  numTrainable(): number;
  config(): ModelConfig;
  readParam(name: string, slot: Slot): Float32Array;
  writeParam(name: string, slot: Slot, data: Float32Array): void;
  setTables(tables: DiffusionTables): void;
  getNoiseState(): NoiseState;
  setNoiseState(seed: number, offset: number): void;
  getStep(): number;
  setStep(step: number): void;
  trainStep(x0: Float32Array, t: Int32Array, y: Int32Array, weight: Float32Array, hp: OptimizerHyper): Promise<TrainStepResult>;
  forward(x: Float32Array, t: Int32Array, y: Int32Array, useEma: boolean): Promise<Float32Array>;
  sampleStep(x: Float32Array, t: number, y: Int32Array, coefs: SampleStepCoefs, useEma: boolean): Promise<Float32Array>;
  drawNoise(n: number): Float32Array;
  dispose(): void;
  busy(): string | null;
  steps(): number;
  activationBytes(n: number, training: boolean): number;
  setCollective(kind: 'mpi' | 'nccl' | null, cudaDevice?: number): void;
  broadcastState(root: number): void;
}

interface Addon {
  Model: new (config: ModelConfig, opts: Omit<ModelOptions, 'config'>) => NativeModel;
  presetConfig(name: string, base?: Partial<ModelConfig>): ModelConfig;
  nativeInfo(): Omit<NativeInfo, 'version' | 'addonPath'>;
  cpuForceBuiltinGemm(on: boolean): void;
  sampleStepKernel(
    modelOut: Float32Array,
    x: Float32Array,
    noise: Float32Array,
    dims: { N: number; C: number; HW: number; learnSigma: boolean },
    coefs: SampleStepCoefs,
  ): Float32Array;
  runBench(opts: BenchOptions): Promise<BenchRow[]>;
  liveModels(): number;
  /** data parallelism (native/src/napi/parallel.cpp; typed in src/parallel/native.ts) */
  parallel: unknown;
}

// src/native.ts and its compiled dist/native.js both sit one level below the package root.
const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
let addon: Addon | undefined;

/** Where the addon is loaded from: $SPEED_TRAIN_ADDON, else build/Release/speed_native.node. */
export function addonPath(): string {
  const env = process.env.SPEED_TRAIN_ADDON;
  return env ? resolve(env) : join(packageRoot, 'build', 'Release', 'speed_native.node');
}

function load(): Addon {
  if (addon) return addon;
  const file = addonPath();
  if (!existsSync(file)) {
    throw new NativeError(
      `the native addon was not found at ${file}` +
        (process.env.SPEED_TRAIN_ADDON ? ' (from SPEED_TRAIN_ADDON)' : '') +
        '; run `npm run build:native` in the package folder to build it',
    );
  }
  try {
    addon = require(file) as Addon;
  } catch (e) {
    throw new NativeError(`could not load the native addon ${file}: ${(e as Error).message}; rebuild it with \`npm run build:native\``);
  }
  return addon;
}

/** One export of the loaded addon by name, for modules that wrap its other classes (src/featnet: ViTModel). */
export function addonExport(name: string): unknown {
  return (load() as unknown as Record<string, unknown>)[name];
}

/** Every error that leaves this module (or src/featnet) is a NativeError with the original message. */
export function asNativeError(e: unknown): NativeError {
  if (e instanceof NativeError) return e;
  const err = new NativeError(e instanceof Error ? e.message : String(e));
  if (e instanceof Error) err.cause = e;
  return err;
}

export function call<R>(f: () => R): R {
  try {
    return f();
  } catch (e) {
    throw asNativeError(e);
  }
}

/** A Promise-returning call: argument errors reject instead of throwing. */
export function callAsync<R>(f: () => Promise<R>): Promise<R> {
  try {
    return f().catch((e: unknown) => {
      throw asNativeError(e);
    });
  } catch (e) {
    return Promise.reject(asNativeError(e));
  }
}

// ---------------------------------------------------------------------------
// Argument checks (the addon repeats them; these name arguments as TS sees them).

const withArticle = (noun: string): string => (/^[IU]/.test(noun) ? 'an ' : 'a ') + noun;

function describe(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (ArrayBuffer.isView(v)) return withArticle(v.constructor.name);
  if (Array.isArray(v)) return 'an Array';
  if (typeof v === 'number') return `the number ${v}`;
  if (typeof v === 'object') return 'an object';
  return `a ${typeof v}`;
}

type TypedCtor = Float32ArrayConstructor | Int32ArrayConstructor | Float64ArrayConstructor;

function checkTyped(v: unknown, ctor: TypedCtor, what: string): void {
  if (!(v instanceof ctor)) throw new NativeError(`${what} must be ${withArticle(ctor.name)}, got ${describe(v)}`);
}

function checkFinite(v: unknown, what: string): number {
  if (typeof v !== 'number') throw new NativeError(`${what} must be a number, got ${describe(v)}`);
  if (!Number.isFinite(v)) throw new NativeError(`${what} must be a finite number, got ${v}`);
  return v;
}

export function checkInt(v: unknown, what: string, lo: number, hi: number): number {
  checkFinite(v, what);
  const n = v as number;
  if (!Number.isSafeInteger(n)) throw new NativeError(`${what} must be an integer, got ${n}`);
  if (n < lo || n > hi) throw new NativeError(`${what} must be in [${lo}, ${hi}], got ${n}`);
  return n;
}

function checkLength(what: string, got: number, names: string, dims: number[]): void {
  const want = dims.reduce((a, b) => a * b, 1);
  if (got !== want) {
    const shown = dims.length > 1 ? `${names} = ${dims.join('*')} = ${want}` : `${names} = ${want}`;
    throw new NativeError(`${what} has ${got} elements, expected ${shown}`);
  }
}

const CONFIG_INT_KEYS = ['inputSize', 'patchSize', 'inChannels', 'hiddenSize', 'depth', 'numHeads', 'numClasses'] as const;

function checkConfig(c: Partial<ModelConfig>, what: string, all: boolean): void {
  if (typeof c !== 'object' || c === null) throw new NativeError(`${what} must be an object, got ${describe(c)}`);
  for (const k of CONFIG_INT_KEYS) {
    if (!all && c[k] === undefined) continue;
    checkInt(c[k], `${what}.${k}`, k === 'numClasses' ? 0 : 1, 2 ** 31 - 1);
  }
  if (all || c.mlpRatio !== undefined) {
    if (checkFinite(c.mlpRatio, `${what}.mlpRatio`) <= 0) throw new NativeError(`${what}.mlpRatio must be > 0, got ${c.mlpRatio}`);
  }
  if (all || c.classDropoutProb !== undefined) {
    const p = checkFinite(c.classDropoutProb, `${what}.classDropoutProb`);
    if (p < 0 || p >= 1) throw new NativeError(`${what}.classDropoutProb must be in [0, 1), got ${p}`);
  }
  if ((all || c.learnSigma !== undefined) && typeof c.learnSigma !== 'boolean') {
    throw new NativeError(`${what}.learnSigma must be a boolean, got ${describe(c.learnSigma)}`);
  }
}

const COEF_NUMBERS = [
  'sqrtRecipAbar',
  'sqrtRecipm1Abar',
  'coef1',
  'coef2',
  'logBeta',
  'postLogVar',
  'sqrtAbarPrev',
  'epsCoef',
  'sigma',
  'guidance',
] as const;
const COEF_BOOLS = ['addNoise', 'clipX0', 'cfg'] as const;

function checkCoefs(c: SampleStepCoefs, what: string): void {
  if (typeof c !== 'object' || c === null) throw new NativeError(`${what} must be an object, got ${describe(c)}`);
  if (c.mode !== 'ddpm' && c.mode !== 'ddim') throw new NativeError(`${what}.mode must be 'ddpm' or 'ddim', got ${JSON.stringify(c.mode)}`);
  for (const k of COEF_NUMBERS) checkFinite(c[k], `${what}.${k}`);
  for (const k of COEF_BOOLS) {
    if (typeof c[k] !== 'boolean') throw new NativeError(`${what}.${k} must be a boolean, got ${describe(c[k])}`);
  }
  if (c.guidanceChannels !== undefined) checkInt(c.guidanceChannels, `${what}.guidanceChannels`, 0, 1 << 16);
}

const HYPER_KEYS = ['lr', 'beta1', 'beta2', 'eps', 'weightDecay', 'maxGradNorm', 'emaDecay', 'vbScale'] as const;

function checkHyper(hp: OptimizerHyper, what: string): void {
  if (typeof hp !== 'object' || hp === null) throw new NativeError(`${what} must be an object, got ${describe(hp)}`);
  for (const k of HYPER_KEYS) checkFinite(hp[k], `${what}.${k}`);
  const bad = (k: string, v: number, expect: string) => new NativeError(`${what}.${k} = ${v}, expected ${expect}`);
  if (hp.lr < 0) throw bad('lr', hp.lr, '>= 0');
  if (hp.beta1 < 0 || hp.beta1 >= 1) throw bad('beta1', hp.beta1, 'a value in [0, 1)');
  if (hp.beta2 < 0 || hp.beta2 >= 1) throw bad('beta2', hp.beta2, 'a value in [0, 1)');
  if (hp.eps <= 0) throw bad('eps', hp.eps, '> 0');
  if (hp.weightDecay < 0) throw bad('weightDecay', hp.weightDecay, '>= 0');
  if (hp.emaDecay > 1) throw bad('emaDecay', hp.emaDecay, '<= 1 (< 0: no EMA)');
  if (hp.vbScale < 0) throw bad('vbScale', hp.vbScale, '>= 0');
  if (hp.shardOffset !== undefined) checkInt(hp.shardOffset, `${what}.shardOffset`, 0, 1000000);
  if (hp.globalBatch !== undefined) checkInt(hp.globalBatch, `${what}.globalBatch`, 0, 1000000);
}

const SLOTS: readonly Slot[] = ['model', 'ema', 'adam_m', 'adam_v', 'grad'];

function checkSlot(slot: unknown, what: string): void {
  if (!SLOTS.includes(slot as Slot)) {
    throw new NativeError(`${what} must be one of ${SLOTS.map((s) => `'${s}'`).join(', ')}, got ${JSON.stringify(slot)}`);
  }
}

const TABLE_KEYS = [
  'sqrtAbar',
  'sqrt1mAbar',
  'sqrtRecipAbar',
  'sqrtRecipm1Abar',
  'coef1',
  'coef2',
  'logBeta',
  'postLogVar',
] as const;

// ---------------------------------------------------------------------------
// Free functions.

/** DiT preset ("DiT-Ti/4", "DiT-S/2", ... "DiT-XL/8") applied over `base`. */
export function presetConfig(name: string, base?: Partial<ModelConfig>): ModelConfig {
  if (typeof name !== 'string') throw new NativeError(`presetConfig: name must be a string, got ${describe(name)}`);
  if (base !== undefined) checkConfig(base, 'presetConfig: base', false);
  return call(() => load().presetConfig(name, base));
}

export function nativeInfo(): NativeInfo {
  const info = call(() => load().nativeInfo());
  const pkg = require(join(packageRoot, 'package.json')) as { version: string };
  return { ...info, version: pkg.version, addonPath: addonPath() };
}

/** Native models alive in this process: created and neither disposed nor collected. */
export function liveModelCount(): number {
  return call(() => load().liveModels());
}

/** Force the CPU backend's built-in GEMM instead of BLAS (tests, bench). */
export function cpuForceBuiltinGemm(on: boolean): void {
  if (typeof on !== 'boolean') throw new NativeError(`cpuForceBuiltinGemm: on must be a boolean, got ${describe(on)}`);
  call(() => load().cpuForceBuiltinGemm(on));
}

export function runBench(opts: BenchOptions): Promise<BenchRow[]> {
  return callAsync(() => {
    if (typeof opts !== 'object' || opts === null) throw new NativeError(`runBench: opts must be an object, got ${describe(opts)}`);
    if (!Array.isArray(opts.models) || opts.models.length === 0 || !opts.models.every((m) => typeof m === 'string')) {
      throw new NativeError(`runBench: opts.models must be a non-empty array of strings like "DiT-S/2@32x4", got ${JSON.stringify(opts.models)}`);
    }
    if (!Array.isArray(opts.batches) || opts.batches.length === 0) {
      throw new NativeError(`runBench: opts.batches must be a non-empty array of batch sizes, got ${JSON.stringify(opts.batches)}`);
    }
    opts.batches.forEach((b, i) => checkInt(b, `runBench: opts.batches[${i}]`, 1, 1 << 20));
    if (opts.threads !== undefined) checkInt(opts.threads, 'runBench: opts.threads', 0, 4096);
    if (opts.iters !== undefined) checkInt(opts.iters, 'runBench: opts.iters', 1, 1 << 20);
    if (opts.gemmSize !== undefined) checkInt(opts.gemmSize, 'runBench: opts.gemmSize', 16, 1 << 15);
    if (opts.kernels !== undefined && typeof opts.kernels !== 'boolean') throw new NativeError(`runBench: opts.kernels must be a boolean, got ${describe(opts.kernels)}`);
    for (const key of ['recompute', 'profile'] as const) {
      if (opts[key] !== undefined && typeof opts[key] !== 'boolean') throw new NativeError(`runBench: opts.${key} must be a boolean, got ${describe(opts[key])}`);
    }
    if (opts.cudaMath !== undefined && !['bf16', 'tf32', 'fp32'].includes(opts.cudaMath)) {
      throw new NativeError(`runBench: opts.cudaMath must be 'bf16', 'tf32' or 'fp32', got ${JSON.stringify(opts.cudaMath)}`);
    }
    return load().runBench(opts);
  });
}

/**
 * The fused sampling-step kernel alone, on the CPU backend (float32): returns the
 * new x [N, C, HW] from modelOut ([N or 2N, Cout, HW]) and noise [N, C, HW].
 * Lets tests drive the real kernel with an oracle model output.
 */
export function sampleStepKernel(
  modelOut: Float32Array,
  x: Float32Array,
  noise: Float32Array,
  dims: { N: number; C: number; HW: number; learnSigma: boolean },
  coefs: SampleStepCoefs,
): Float32Array {
  const w = 'sampleStepKernel';
  checkTyped(modelOut, Float32Array, `${w}: modelOut`);
  checkTyped(x, Float32Array, `${w}: x`);
  checkTyped(noise, Float32Array, `${w}: noise`);
  if (typeof dims !== 'object' || dims === null) throw new NativeError(`${w}: dims must be an object, got ${describe(dims)}`);
  const N = checkInt(dims.N, `${w}: dims.N`, 1, 1 << 24);
  const C = checkInt(dims.C, `${w}: dims.C`, 1, 1 << 16);
  const HW = checkInt(dims.HW, `${w}: dims.HW`, 1, 1 << 26);
  if (typeof dims.learnSigma !== 'boolean') throw new NativeError(`${w}: dims.learnSigma must be a boolean, got ${describe(dims.learnSigma)}`);
  checkCoefs(coefs, `${w}: coefs`);
  checkLength(`${w}: x`, x.length, 'N*C*HW', [N, C, HW]);
  checkLength(`${w}: noise`, noise.length, 'N*C*HW', [N, C, HW]);
  checkLength(`${w}: modelOut`, modelOut.length, `${coefs.cfg ? '2N' : 'N'}*${dims.learnSigma ? '2C' : 'C'}*HW`, [
    coefs.cfg ? 2 * N : N,
    dims.learnSigma ? 2 * C : C,
    HW,
  ]);
  return call(() => load().sampleStepKernel(modelOut, x, noise, dims, coefs));
}

// ---------------------------------------------------------------------------
// What every network object shares.

/** The addon side of a network (Model, ViTModel, VAEModel): its named tensors and the busy / dispose protocol. */
export interface NativeStore<S extends string, P extends { name: string; shape: number[]; numel: number }> {
  params(): P[];
  readParam(name: string, slot?: S): Float32Array;
  busy(): string | null;
  dispose(): void;
}

/**
 * The parameter store the network classes build on (DiTModel, FeatNet, VAE):
 * their named tensors in each slot, and the lifecycle of the native object
 * (busy while a long call runs, unusable after dispose). Checking here first
 * gives each class's own words ("the model", "the VAE"); the addon checks again.
 */
export abstract class NativeParamStore<S extends string, P extends { name: string; shape: number[]; numel: number }> {
  readonly #store: NativeStore<S, P>;
  #disposed = false;

  protected constructor(
    store: NativeStore<S, P>,
    /** what error messages call the object: "model", "feature network", "VAE" */
    private readonly noun: string,
    /** the slot readParam reads when none is named (undefined: the store has no slots) */
    private readonly defaultSlot?: S,
  ) {
    this.#store = store;
  }

  /** true while a Promise-returning call is running; a second call then rejects. */
  get busy(): boolean {
    return this.#store.busy() !== null;
  }
  /** The running long call's name ("trainStep", ...) or null. */
  get busyWith(): string | null {
    return this.#store.busy();
  }
  /** true after dispose(). */
  get disposed(): boolean {
    return this.#disposed;
  }

  /** Refuses calls on a disposed or busy object. */
  protected ready(what: string): void {
    if (this.#disposed) throw new NativeError(`${what}: the ${this.noun} has been disposed`);
    const busy = this.#store.busy();
    if (busy !== null) throw new NativeError(`${what}: ${this.noun} is busy with ${busy}; await the previous call`);
  }

  /** Every tensor: its state_dict name, shape and size. */
  params(): P[] {
    this.ready('params');
    return call(() => this.#store.params());
  }

  /** A copy of one tensor (of `slot`, where the store has slots). */
  readParam(name: string, slot: S | undefined = this.defaultSlot): Float32Array {
    this.ready('readParam');
    if (typeof name !== 'string') throw new NativeError(`readParam: name must be a string, got ${describe(name)}`);
    return call(() => (slot === undefined ? this.#store.readParam(name) : this.#store.readParam(name, slot)));
  }

  /** Frees native memory; the object is unusable afterwards. */
  dispose(): void {
    if (this.#disposed) return;
    call(() => this.#store.dispose());
    this.#disposed = true;
  }
}

// ---------------------------------------------------------------------------
// The model.

export class DiTModel extends NativeParamStore<Slot, ParamInfo> {
  readonly config: ModelConfig;
  readonly device: Device;
  readonly #native: NativeModel;

  private constructor(config: ModelConfig, device: Device, native: NativeModel) {
    super(native, 'model', 'model');
    this.config = config;
    this.device = device;
    this.#native = native;
  }

  /** Builds the model on its backend and initialises it as DiT does. */
  static create(opts: ModelOptions): DiTModel {
    const w = 'DiTModel.create';
    if (typeof opts !== 'object' || opts === null) throw new NativeError(`${w}: options must be an object, got ${describe(opts)}`);
    checkConfig(opts.config, `${w}: config`, true);
    // the device is checked where the config is read and in the addon (device_from_js)
    const device = opts.device ?? 'cpu';
    checkInt(opts.seed, `${w}: seed`, 0, Number.MAX_SAFE_INTEGER);
    if (opts.noiseSeed !== undefined) checkInt(opts.noiseSeed, `${w}: noiseSeed`, 0, Number.MAX_SAFE_INTEGER);
    if (opts.threads !== undefined) checkInt(opts.threads, `${w}: threads`, 0, 4096);
    if (opts.cudaDevice !== undefined) checkInt(opts.cudaDevice, `${w}: cudaDevice`, 0, 1024);
    if (opts.recompute !== undefined && typeof opts.recompute !== 'boolean') throw new NativeError(`${w}: recompute must be a boolean, got ${describe(opts.recompute)}`);
    if (opts.cudaMath !== undefined && !['bf16', 'tf32', 'fp32'].includes(opts.cudaMath)) {
      throw new NativeError(`${w}: cudaMath must be 'bf16', 'tf32' or 'fp32', got ${JSON.stringify(opts.cudaMath)}`);
    }
    const { config, ...rest } = opts;
    const native = call(() => new (load().Model)(config, { ...rest, device }));
    return new DiTModel(call(() => native.config()), device, native);
  }

  /** T of the tables given to setTables (0 before). */
  get steps(): number {
    return this.#native.steps();
  }

  numTrainable(): number {
    this.ready('numTrainable');
    return call(() => this.#native.numTrainable());
  }
  /**
   * Bytes of activation memory a call at batch `n` allocates: a training step
   * (under this model's recompute setting) or a forward / sampling step.
   * Parameters, Adam moments and EMA (5 x numTrainable() floats) come on top.
   */
  activationBytes(n: number, training: boolean): number {
    this.ready('activationBytes');
    checkInt(n, 'activationBytes: n', 1, 1 << 24);
    if (typeof training !== 'boolean') throw new NativeError(`activationBytes: training must be a boolean, got ${describe(training)}`);
    return call(() => this.#native.activationBytes(n, training));
  }
  override readParam(name: string, slot: Slot = 'model'): Float32Array {
    checkSlot(slot, 'readParam: slot');
    return super.readParam(name, slot);
  }
  writeParam(name: string, slot: Slot, data: Float32Array): void {
    this.ready('writeParam');
    if (typeof name !== 'string') throw new NativeError(`writeParam: name must be a string, got ${describe(name)}`);
    checkSlot(slot, 'writeParam: slot');
    checkTyped(data, Float32Array, 'writeParam: data');
    call(() => this.#native.writeParam(name, slot, data));
  }
  setTables(tables: DiffusionTables): void {
    this.ready('setTables');
    if (typeof tables !== 'object' || tables === null) throw new NativeError(`setTables: tables must be an object, got ${describe(tables)}`);
    for (const k of TABLE_KEYS) checkTyped(tables[k], Float64Array, `setTables: tables.${k}`);
    const T = tables.sqrtAbar.length;
    if (T < 1) throw new NativeError('setTables: tables.sqrtAbar is empty, expected T >= 1 values');
    for (const k of TABLE_KEYS) {
      const a = tables[k];
      if (a.length !== T) throw new NativeError(`setTables: tables.${k} has ${a.length} values, expected T = ${T} (the length of tables.sqrtAbar)`);
      const i = a.findIndex((v) => !Number.isFinite(v));
      if (i >= 0) throw new NativeError(`setTables: tables.${k}[${i}] is ${a[i]}, expected finite values`);
    }
    call(() => this.#native.setTables(tables));
  }
  getNoiseState(): NoiseState {
    this.ready('getNoiseState');
    return call(() => this.#native.getNoiseState());
  }
  setNoiseState(state: NoiseState): void {
    this.ready('setNoiseState');
    if (typeof state !== 'object' || state === null) throw new NativeError(`setNoiseState: state must be an object, got ${describe(state)}`);
    checkInt(state.seed, 'setNoiseState: state.seed', 0, Number.MAX_SAFE_INTEGER);
    checkInt(state.offset, 'setNoiseState: state.offset', 0, Number.MAX_SAFE_INTEGER);
    call(() => this.#native.setNoiseState(state.seed, state.offset));
  }
  getStep(): number {
    this.ready('getStep');
    return call(() => this.#native.getStep());
  }
  setStep(step: number): void {
    this.ready('setStep');
    checkInt(step, 'setStep: step', 0, Number.MAX_SAFE_INTEGER);
    call(() => this.#native.setStep(step));
  }

  /** Checks labels y against numClasses (the null label only with dropout). */
  #checkLabels(y: Int32Array, N: number, what: string): void {
    const { numClasses, classDropoutProb } = this.config;
    if (numClasses === 0) {
      if (y.length !== 0 && y.length !== N) throw new NativeError(`${what} has ${y.length} elements, expected N = ${N} (or 0: the model is unconditional)`);
      return;
    }
    checkLength(what, y.length, 'N', [N]);
    const hi = classDropoutProb > 0 ? numClasses : numClasses - 1;
    const i = y.findIndex((v) => v < 0 || v > hi);
    if (i >= 0) {
      const why = classDropoutProb > 0 ? ` (${numClasses} = the null label)` : ' (no null label: classDropoutProb is 0)';
      throw new NativeError(`${what}[${i}] = ${y[i]} is out of range: expected a label in [0, ${hi}]${why}`);
    }
  }

  #checkTimes(t: Int32Array, what: string, needTables: boolean): void {
    const T = this.#native.steps();
    if (needTables && T === 0) throw new NativeError(`${what}: no diffusion tables; call setTables first`);
    const i = t.findIndex((v) => v < 0 || (T > 0 && v >= T));
    if (i >= 0) throw new NativeError(`${what}[${i}] = ${t[i]} is out of range: expected a time step in [0, ${T > 0 ? T : 'T'})`);
  }

  trainStep(batch: TrainBatch, hp: OptimizerHyper): Promise<TrainStepResult> {
    return callAsync(() => {
      const w = 'trainStep';
      this.ready(w);
      if (typeof batch !== 'object' || batch === null) throw new NativeError(`${w}: batch must be an object, got ${describe(batch)}`);
      checkTyped(batch.x0, Float32Array, `${w}: batch.x0`);
      checkTyped(batch.t, Int32Array, `${w}: batch.t`);
      checkTyped(batch.y, Int32Array, `${w}: batch.y`);
      checkTyped(batch.weight, Float32Array, `${w}: batch.weight`);
      const N = batch.t.length;
      if (N < 1) throw new NativeError(`${w}: batch.t is empty, expected N >= 1 time steps`);
      const { inChannels: C, inputSize: H } = this.config;
      checkLength(`${w}: batch.x0`, batch.x0.length, 'N*C*H*W', [N, C, H, H]);
      this.#checkLabels(batch.y, N, `${w}: batch.y`);
      checkLength(`${w}: batch.weight`, batch.weight.length, 'N', [N]);
      const bad = batch.weight.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) throw new NativeError(`${w}: batch.weight[${bad}] is ${batch.weight[bad]}, expected finite weights`);
      this.#checkTimes(batch.t, `${w}: batch.t`, true);
      checkHyper(hp, `${w}: hp`);
      return this.#native.trainStep(batch.x0, batch.t, batch.y, batch.weight, hp);
    });
  }

  /** out [N, Cout, H, W] */
  forward(x: Float32Array, t: Int32Array, y: Int32Array, opts?: { useEma?: boolean }): Promise<Float32Array> {
    return callAsync(() => {
      const w = 'forward';
      this.ready(w);
      checkTyped(x, Float32Array, `${w}: x`);
      checkTyped(t, Int32Array, `${w}: t`);
      checkTyped(y, Int32Array, `${w}: y`);
      const N = t.length;
      if (N < 1) throw new NativeError(`${w}: t is empty, expected N >= 1 time steps`);
      const { inChannels: C, inputSize: H } = this.config;
      checkLength(`${w}: x`, x.length, 'N*C*H*W', [N, C, H, H]);
      this.#checkLabels(y, N, `${w}: y`);
      this.#checkTimes(t, `${w}: t`, false);
      return this.#native.forward(x, t, y, opts?.useEma === true);
    });
  }

  /** One reverse step; returns the new x [N, C, H, W] (the input is not modified). */
  sampleStep(
    x: Float32Array,
    t: number,
    y: Int32Array,
    coefs: SampleStepCoefs,
    opts?: { useEma?: boolean },
  ): Promise<Float32Array> {
    return callAsync(() => {
      const w = 'sampleStep';
      this.ready(w);
      checkTyped(x, Float32Array, `${w}: x`);
      checkTyped(y, Int32Array, `${w}: y`);
      const T = this.#native.steps();
      if (T === 0) throw new NativeError(`${w}: no diffusion tables; call setTables first`);
      checkInt(t, `${w}: t`, 0, T - 1);
      checkCoefs(coefs, `${w}: coefs`);
      const { inChannels: C, inputSize: H, numClasses, classDropoutProb } = this.config;
      const per = C * H * H;
      if (x.length === 0 || x.length % per !== 0) {
        throw new NativeError(`${w}: x has ${x.length} elements, expected a positive multiple of C*H*W = ${C}*${H}*${H} = ${per}`);
      }
      this.#checkLabels(y, x.length / per, `${w}: y`);
      if (coefs.cfg && (numClasses === 0 || classDropoutProb <= 0)) {
        throw new NativeError(`${w}: coefs.cfg needs a class-conditional model with a null label (numClasses > 0 and classDropoutProb > 0)`);
      }
      return this.#native.sampleStep(x, t, y, coefs, opts?.useEma === true);
    });
  }

  /**
   * Data parallelism (src/parallel): trainStep averages the gradient over the MPI
   * world ("mpi", host buffers) or NCCL ("nccl", GPU buffers) before clipping
   * and AdamW, and returns the whole global batch's per-sample losses; null detaches.
   */
  setCollective(kind: 'mpi' | 'nccl' | null, cudaDevice?: number): void {
    this.ready('setCollective');
    call(() => this.#native.setCollective(kind, cudaDevice));
  }
  /** Weights, EMA, Adam moments, step and noise state from rank `root` to every rank. */
  broadcastState(root: number): void {
    this.ready('broadcastState');
    checkInt(root, 'broadcastState: root', 0, 1 << 20);
    call(() => this.#native.broadcastState(root));
  }

  /** n standard normals from the model's Philox noise stream (advances it); e.g. x_T. */
  drawNoise(n: number): Float32Array {
    this.ready('drawNoise');
    checkInt(n, 'drawNoise: n', 0, 2 ** 32);
    return call(() => this.#native.drawNoise(n));
  }

}
