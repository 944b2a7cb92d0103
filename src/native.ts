// The typed face of the native addon (native/src/napi). Everything per-element
// runs in the addon; this module validates arguments, converts names and runs
// long calls off the event loop (they return Promises).
//
// CONTRACT: the exported names and types below are what the rest of src/ uses.
// The implementation (loading build/Release/speed_native.node) lives here too.

export type Device = 'cpu' | 'cuda';
export type CudaMath = 'bf16' | 'tf32' | 'fp32';
export type Slot = 'model' | 'ema' | 'adam_m' | 'adam_v' | 'grad';

/** DiT hyper-parameters (native DiTConfig). */
export interface ModelConfig {
  inputSize: number;
  patchSize: number;
  inChannels: number;
  hiddenSize: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
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

/** Coefficients of one reverse step (native SampleStepCoefs; reference §5). */
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
}

export interface NoiseState {
  seed: number;
  offset: number;
}

export interface NativeInfo {
  version: string;
  /** "blas (...)" or "builtin" */
  gemm: string;
  cuda: { available: boolean; reason: string };
  hardwareThreads: number;
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
}

export interface BenchOptions {
  models: string[]; // e.g. ["DiT-S/2@32x4", "DiT-Ti/4@32x3"]: preset @ size x channels
  batches: number[];
  device: Device;
  threads?: number;
  cudaMath?: CudaMath;
  iters?: number;
  kernels?: boolean; // time each kernel alone (default true)
}

/** Thrown for every error that comes from the addon or from argument checks here. */
export class NativeError extends Error {
  override name = 'NativeError';
}

// ---------------------------------------------------------------------------
// Implementation below (native/src/napi + this file). Signatures are the contract.

/** DiT preset ("DiT-Ti/4", "DiT-S/2", ... "DiT-XL/8") applied over `base`. */
export function presetConfig(name: string, base?: Partial<ModelConfig>): ModelConfig {
  throw new NativeError('not implemented yet: presetConfig ' + name + String(base));
}

export function nativeInfo(): NativeInfo {
  throw new NativeError('not implemented yet: nativeInfo');
}

/** Force the CPU backend's built-in GEMM instead of BLAS (tests, bench). */
export function cpuForceBuiltinGemm(on: boolean): void {
  throw new NativeError('not implemented yet: cpuForceBuiltinGemm ' + String(on));
}

export function runBench(opts: BenchOptions): Promise<BenchRow[]> {
  return Promise.reject(new NativeError('not implemented yet: runBench ' + JSON.stringify(opts)));
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
  throw new NativeError('not implemented yet' + modelOut.length + x.length + noise.length + dims.N + coefs.mode);
}

export class DiTModel {
  readonly config: ModelConfig;
  readonly device: Device;

  private constructor(config: ModelConfig, device: Device) {
    this.config = config;
    this.device = device;
  }

  /** Builds the model on its backend and initialises it as DiT does. */
  static create(opts: ModelOptions): DiTModel {
    throw new NativeError('not implemented yet: DiTModel.create ' + JSON.stringify(opts.config));
  }

  /** true while a Promise-returning call is running; a second call then rejects. */
  get busy(): boolean {
    return false;
  }
  params(): ParamInfo[] {
    throw new NativeError('not implemented yet');
  }
  numTrainable(): number {
    throw new NativeError('not implemented yet');
  }
  readParam(name: string, slot: Slot = 'model'): Float32Array {
    throw new NativeError('not implemented yet' + name + slot);
  }
  writeParam(name: string, slot: Slot, data: Float32Array): void {
    throw new NativeError('not implemented yet' + name + slot + data.length);
  }
  setTables(tables: DiffusionTables): void {
    throw new NativeError('not implemented yet' + tables.coef1.length);
  }
  getNoiseState(): NoiseState {
    throw new NativeError('not implemented yet');
  }
  setNoiseState(state: NoiseState): void {
    throw new NativeError('not implemented yet' + state.seed);
  }
  getStep(): number {
    throw new NativeError('not implemented yet');
  }
  setStep(step: number): void {
    throw new NativeError('not implemented yet' + step);
  }
  trainStep(batch: TrainBatch, hp: OptimizerHyper): Promise<TrainStepResult> {
    return Promise.reject(new NativeError('not implemented yet' + batch.t.length + hp.lr));
  }
  /** out [N, Cout, H, W] */
  forward(x: Float32Array, t: Int32Array, y: Int32Array, opts?: { useEma?: boolean }): Promise<Float32Array> {
    return Promise.reject(new NativeError('not implemented yet' + x.length + t.length + y.length + String(opts)));
  }
  /** One reverse step; returns the new x [N, C, H, W] (the input is not modified). */
  sampleStep(
    x: Float32Array,
    t: number,
    y: Int32Array,
    coefs: SampleStepCoefs,
    opts?: { useEma?: boolean },
  ): Promise<Float32Array> {
    return Promise.reject(new NativeError('not implemented yet' + x.length + t + y.length + coefs.mode + String(opts)));
  }
  /** n standard normals from the model's Philox noise stream (advances it); e.g. x_T. */
  drawNoise(n: number): Float32Array {
    throw new NativeError('not implemented yet' + n);
  }
  /** Frees native memory; the object is unusable afterwards. */
  dispose(): void {}
}
