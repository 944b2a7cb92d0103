// The typed face of the addon's feature networks, CNNModel and ViTModel
// (native/src/napi/classifier.h): a small image classifier used as a trained
// feature space, of either architecture, with the same methods. Arguments are
// checked here first so messages name them in TypeScript terms; every error is
// a NativeError.
import {
  addonExport,
  addonPath,
  call,
  callAsync,
  checkInt,
  NativeError,
  NativeParamStore,
  type CudaMath,
  type Device,
  type ParamInfo,
  type TransformerConfig,
} from '../native.js';

import { FEATNET_ARCHS, type FeatNetArch } from './arch.js';

export { FEATNET_ARCHS, type FeatNetArch };

/** The ViT (native ViTConfig): patch embedding, transformer blocks, mean-pooled final LayerNorm as features. */
export interface ViTFeatNetConfig extends TransformerConfig {
  arch: 'vit';
}

/**
 * The CNN (native CNNConfig): per stage two 3x3 convolutions (the second of
 * stride 2) with ReLUs, then fc1 -> ReLU (the features, fcHidden wide) -> fc2.
 */
export interface CNNFeatNetConfig {
  arch: 'cnn';
  inputSize: number;
  inChannels: number;
  /** output channels of each stage */
  channels: number[];
  fcHidden: number;
  numClasses: number;
}

export type FeatNetConfig = ViTFeatNetConfig | CNNFeatNetConfig;

/** Length of a feature vector: the ViT's width, or the CNN's fc1 width. */
export function featNetFeatureDim(c: FeatNetConfig): number {
  return c.arch === 'cnn' ? c.fcHidden : c.hiddenSize;
}

/** The network in a few words, for logs and feature-space descriptions. */
export function describeFeatNet(c: FeatNetConfig): string {
  return c.arch === 'cnn'
    ? `CNN classifier, stages [${c.channels.join(', ')}], fc ${c.fcHidden}`
    : `ViT classifier ${c.depth}x${c.hiddenSize}, patch ${c.patchSize}`;
}

export interface FeatNetOptions {
  config: FeatNetConfig;
  device?: Device;
  threads?: number;
  cudaDevice?: number;
  cudaMath?: CudaMath;
  /** seed of the initialisation */
  seed: number;
}

export interface FeatNetHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** <= 0: no clipping */
  maxGradNorm: number;
}

export interface FeatNetStepResult {
  /** batch-mean cross-entropy */
  loss: number;
  losses: Float64Array;
  /** [N, numClasses] */
  logits: Float64Array;
  /** samples whose argmax logit is the label */
  correct: number;
  gradNorm: number;
  skipped: boolean;
  step: number;
}

export type FeatNetSlot = 'model' | 'adam_m' | 'adam_v' | 'grad';

interface NativeClassifier {
  params(): ParamInfo[];
  numTrainable(): number;
  config(): Omit<ViTFeatNetConfig, 'arch'> | Omit<CNNFeatNetConfig, 'arch'>;
  readParam(name: string, slot: FeatNetSlot): Float32Array;
  writeParam(name: string, slot: FeatNetSlot, data: Float32Array): void;
  getStep(): number;
  setStep(step: number): void;
  trainStep(x: Float32Array, y: Int32Array, hp: FeatNetHyper): Promise<FeatNetStepResult>;
  logits(x: Float32Array): Promise<Float32Array>;
  features(x: Float32Array): Promise<Float32Array>;
  dispose(): void;
  busy(): string | null;
}

type ClassifierCtor = new (config: FeatNetConfig, opts: Omit<FeatNetOptions, 'config'>) => NativeClassifier;

// The addon src/native.ts loads (one instance, not a second copy).
function ctor(arch: FeatNetArch): ClassifierCtor {
  const name = arch === 'cnn' ? 'CNNModel' : 'ViTModel';
  const c = addonExport(name) as ClassifierCtor | undefined;
  if (!c) throw new NativeError(`the native addon ${addonPath()} has no ${name} (feature network); rebuild it with \`npm run build:native\``);
  return c;
}

const VIT_INT_KEYS = ['inputSize', 'patchSize', 'inChannels', 'hiddenSize', 'depth', 'numHeads'] as const;
const CNN_INT_KEYS = ['inputSize', 'inChannels', 'fcHidden'] as const;

export function checkFeatNetConfig(c: FeatNetConfig, what: string): void {
  if (typeof c !== 'object' || c === null) throw new NativeError(`${what} must be an object`);
  const arch: unknown = c.arch;
  if (arch !== 'cnn' && arch !== 'vit') throw new NativeError(`${what}.arch must be one of ${FEATNET_ARCHS.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(arch ?? null)}`);
  checkInt(c.numClasses, `${what}.numClasses`, 2, 1 << 20);
  if (c.arch === 'cnn') {
    for (const k of CNN_INT_KEYS) checkInt(c[k], `${what}.${k}`, 1, 1 << 16);
    if (!Array.isArray(c.channels) || c.channels.length < 1 || c.channels.length > 8) {
      throw new NativeError(`${what}.channels must be a list of 1 to 8 stage widths, got ${JSON.stringify(c.channels ?? null)}`);
    }
    c.channels.forEach((v, i) => checkInt(v, `${what}.channels[${i}]`, 1, 4096));
    return;
  }
  for (const k of VIT_INT_KEYS) checkInt(c[k], `${what}.${k}`, 1, 1 << 20);
  if (typeof c.mlpRatio !== 'number' || !(c.mlpRatio > 0) || !Number.isFinite(c.mlpRatio)) {
    throw new NativeError(`${what}.mlpRatio must be a finite number > 0, got ${String(c.mlpRatio)}`);
  }
  if (c.inputSize % c.patchSize !== 0) throw new NativeError(`${what}.inputSize ${c.inputSize} is not divisible by patchSize ${c.patchSize}`);
  if (c.hiddenSize % 4 !== 0) throw new NativeError(`${what}.hiddenSize must be a multiple of 4 (2D sin-cos pos_embed), got ${c.hiddenSize}`);
  if (c.hiddenSize % c.numHeads !== 0) throw new NativeError(`${what}.numHeads ${c.numHeads} must divide hiddenSize ${c.hiddenSize}`);
}

/** The feature network (CNN or ViT): a native model whose long calls run off the event loop. */
export class FeatNet extends NativeParamStore<FeatNetSlot, ParamInfo> {
  readonly config: FeatNetConfig;
  readonly #native: NativeClassifier;

  private constructor(config: FeatNetConfig, native: NativeClassifier) {
    super(native, 'feature network', 'model');
    this.config = config;
    this.#native = native;
  }

  static create(opts: FeatNetOptions): FeatNet {
    const w = 'FeatNet.create';
    if (typeof opts !== 'object' || opts === null) throw new NativeError(`${w}: options must be an object`);
    checkFeatNetConfig(opts.config, `${w}: config`);
    checkInt(opts.seed, `${w}: seed`, 0, Number.MAX_SAFE_INTEGER);
    if (opts.threads !== undefined) checkInt(opts.threads, `${w}: threads`, 0, 4096);
    const { config, ...rest } = opts;
    return call(() => {
      const native = new (ctor(config.arch))(config, { ...rest, device: opts.device ?? 'cpu' });
      return new FeatNet({ ...native.config(), arch: config.arch } as FeatNetConfig, native);
    });
  }

  /** per-image input length C*H*W */
  get imageSize(): number {
    return this.config.inChannels * this.config.inputSize * this.config.inputSize;
  }

  #images(x: Float32Array, what: string): number {
    if (!(x instanceof Float32Array)) throw new NativeError(`${what} must be a Float32Array`);
    const per = this.imageSize;
    if (x.length === 0 || x.length % per !== 0) {
      throw new NativeError(`${what} has ${x.length} elements, expected a positive multiple of C*H*W = ${per}`);
    }
    return x.length / per;
  }
  #call<R>(what: string, f: () => R): R {
    this.ready(what);
    return call(f);
  }
  #async<R>(what: string, f: () => Promise<R>): Promise<R> {
    return callAsync(() => {
      this.ready(what);
      return f();
    });
  }

  numTrainable(): number {
    return this.#call('numTrainable', () => this.#native.numTrainable());
  }
  writeParam(name: string, slot: FeatNetSlot, data: Float32Array): void {
    this.#call('writeParam', () => this.#native.writeParam(name, slot, data));
  }
  getStep(): number {
    return this.#call('getStep', () => this.#native.getStep());
  }
  setStep(step: number): void {
    checkInt(step, 'setStep: step', 0, Number.MAX_SAFE_INTEGER);
    this.#call('setStep', () => this.#native.setStep(step));
  }

  /** One AdamW step on the batch-mean cross-entropy of x [N, C, H, W] (in [-1, 1]) with labels y [N]. */
  trainStep(x: Float32Array, y: Int32Array, hp: FeatNetHyper): Promise<FeatNetStepResult> {
    return this.#async('trainStep', () => {
      const N = this.#images(x, 'trainStep: x');
      if (!(y instanceof Int32Array) || y.length !== N) throw new NativeError(`trainStep: y must be an Int32Array of N = ${N} labels`);
      const bad = y.findIndex((v) => v < 0 || v >= this.config.numClasses);
      if (bad >= 0) throw new NativeError(`trainStep: y[${bad}] = ${y[bad]} is out of range: expected a label in [0, ${this.config.numClasses - 1}]`);
      for (const k of ['lr', 'beta1', 'beta2', 'eps', 'weightDecay', 'maxGradNorm'] as const) {
        if (typeof hp[k] !== 'number' || !Number.isFinite(hp[k])) throw new NativeError(`trainStep: hp.${k} must be a finite number`);
      }
      return this.#native.trainStep(x, y, hp);
    });
  }
  /** [N, numClasses] */
  logits(x: Float32Array): Promise<Float32Array> {
    return this.#async('logits', () => {
      this.#images(x, 'logits: x');
      return this.#native.logits(x);
    });
  }
  /** The features, [N, featNetFeatureDim(config)]: the CNN's fc1 activations after ReLU, or the ViT's mean-pooled final LayerNorm. */
  features(x: Float32Array): Promise<Float32Array> {
    return this.#async('features', () => {
      this.#images(x, 'features: x');
      return this.#native.features(x);
    });
  }
}
