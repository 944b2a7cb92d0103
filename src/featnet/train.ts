// Training the feature network on a labelled data set, with a held-out split
// whose accuracy is reported (and saved with the weights): a feature space is
// only as meaningful as the classifier behind it.
import { BatchLoader, type Batch, type Dataset } from '../data/index.js';
import type { Device } from '../native.js';
import { Rng } from '../rng.js';
import { FeatNet, describeFeatNet, type CNNFeatNetConfig, type FeatNetArch, type FeatNetConfig, type ViTFeatNetConfig } from './native.js';

/** Settings of a network to build: its arch (default 'cnn') and any keys of that arch's config. */
export type FeatNetOverrides = { arch?: FeatNetArch } & Partial<Omit<ViTFeatNetConfig, 'arch'>> & Partial<Omit<CNNFeatNetConfig, 'arch'>>;

/**
 * The config of a new network for inputSize x inputSize x inChannels images:
 * `over`'s keys of its arch over the defaults (CNN: stages [32, 64], fc 128;
 * ViT: width 128, depth 4, a patch size giving a 4x4 to 8x8 token grid, as its
 * cost grows with tokens squared). Keys of the other arch are ignored.
 */
export function defaultFeatNetConfig(inputSize: number, inChannels: number, numClasses: number, over: FeatNetOverrides = {}): FeatNetConfig {
  const base = { inputSize: over.inputSize ?? inputSize, inChannels: over.inChannels ?? inChannels, numClasses: over.numClasses ?? numClasses };
  if ((over.arch ?? 'cnn') === 'cnn') return { arch: 'cnn', ...base, channels: over.channels ?? [32, 64], fcHidden: over.fcHidden ?? 128 };
  let patchSize = 1;
  while (base.inputSize / patchSize > 8 && base.inputSize % (patchSize * 2) === 0) patchSize *= 2;
  return {
    arch: 'vit', ...base, patchSize: over.patchSize ?? patchSize, hiddenSize: over.hiddenSize ?? 128, depth: over.depth ?? 4,
    numHeads: over.numHeads ?? 4, mlpRatio: over.mlpRatio ?? 4,
  };
}

/** Whether `config` (a saved network's) is the arch of `want` with every key `want` sets. */
export function featNetMatches(config: FeatNetConfig, want: FeatNetOverrides): boolean {
  if (config.arch !== (want.arch ?? 'cnn')) return false;
  const have = config as unknown as Record<string, unknown>;
  return Object.entries(want).every(([k, v]) => v === undefined || JSON.stringify(have[k]) === JSON.stringify(v));
}

/** The samples of `base` at `indices` (a split of a data set). */
export class SubsetDataset implements Dataset {
  readonly size: number;
  readonly shape: readonly [number, number, number];
  readonly numClasses: number;
  readonly description: string;
  constructor(
    readonly base: Dataset,
    readonly indices: Int32Array,
    what: string,
  ) {
    this.size = indices.length;
    this.shape = base.shape;
    this.numClasses = base.numClasses;
    this.description = `${what}: ${indices.length} of ${base.description}`;
  }
  get badFiles(): number {
    return this.base.badFiles;
  }
  load(indices: Int32Array, flips: Uint8Array): Promise<Batch> {
    return this.base.load(Int32Array.from(indices, (i) => this.indices[i]), flips);
  }
  close(): Promise<void> {
    return Promise.resolve(); // the base data set belongs to the caller
  }
}

/** A seeded split of 0..n-1 into train and held-out index sets. */
export function splitIndices(n: number, heldOutFraction: number, seed: number): { train: Int32Array; heldOut: Int32Array } {
  if (!(heldOutFraction > 0 && heldOutFraction < 1)) throw new RangeError(`held-out fraction must be in (0, 1), got ${heldOutFraction}`);
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const rng = new Rng(seed * 4 + 7);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  const h = Math.max(1, Math.round(n * heldOutFraction));
  if (n - h < 1) throw new RangeError(`cannot split ${n} samples into train and held-out sets`);
  return { train: order.slice(0, n - h), heldOut: order.slice(n - h) };
}

export interface FeatNetTrainOptions {
  /** labelled training data (the built-in synthetic set, an image folder, ...) */
  dataset: Dataset;
  /** a separate held-out set; default: a seeded `heldOutFraction` of `dataset` */
  heldOut?: Dataset;
  heldOutFraction?: number;
  /** the network's arch and settings (defaultFeatNetConfig) */
  config?: FeatNetOverrides;
  steps: number;
  batchSize: number;
  lr?: number;
  weightDecay?: number;
  warmupSteps?: number;
  seed: number;
  device?: Device;
  threads?: number;
  randomFlip?: boolean;
  log?: (line: string) => void;
  /** lines every this many steps (default: 10 lines per run) */
  logEvery?: number;
}

export interface FeatNetTrainResult {
  net: FeatNet;
  /** held-out top-1 accuracy */
  accuracy: number;
  heldOutSize: number;
  trainSize: number;
  /** mean training loss over the last 10% of steps */
  finalLoss: number;
  steps: number;
  seconds: number;
  description: string;
}

/** Learning rate at step s: linear warm-up, then cosine decay to 0 (short classifier runs converge better). */
export function featnetLr(base: number, s: number, steps: number, warmup: number): number {
  if (s < warmup) return (base * (s + 1)) / warmup;
  const p = (s - warmup) / Math.max(1, steps - warmup);
  return 0.5 * base * (1 + Math.cos(Math.PI * Math.min(1, p)));
}

/** Top-1 accuracy of `net` on every sample of `data` (batches of `batch`). */
export async function featNetAccuracy(net: FeatNet, data: Dataset, batch = 256): Promise<number> {
  let correct = 0;
  const K = net.config.numClasses;
  for (let a = 0; a < data.size; a += batch) {
    const idx = Int32Array.from({ length: Math.min(batch, data.size - a) }, (_, i) => a + i);
    const b = await data.load(idx, new Uint8Array(idx.length));
    const z = await net.logits(b.x);
    for (let n = 0; n < idx.length; n++) {
      let arg = 0;
      for (let k = 1; k < K; k++) if (z[n * K + k] > z[n * K + arg]) arg = k;
      if (arg === b.y[n]) correct++;
    }
  }
  return correct / data.size;
}

export async function trainFeatNet(o: FeatNetTrainOptions): Promise<FeatNetTrainResult> {
  const log = o.log ?? (() => {});
  const t0 = performance.now();
  const [C, H, W] = o.dataset.shape;
  if (H !== W) throw new RangeError(`feature network: images must be square, the data set's are ${H}x${W}`);
  if (o.dataset.numClasses < 2) throw new RangeError(`feature network: needs labelled data with >= 2 classes, the data set has ${o.dataset.numClasses}`);
  // Always a subset view: closing the loader must not close the caller's data set.
  let train: Dataset = new SubsetDataset(o.dataset, Int32Array.from({ length: o.dataset.size }, (_, i) => i), 'train');
  let held: Dataset;
  if (o.heldOut) held = o.heldOut;
  else {
    const s = splitIndices(o.dataset.size, o.heldOutFraction ?? 0.1, o.seed);
    train = new SubsetDataset(o.dataset, s.train, 'train split');
    held = new SubsetDataset(o.dataset, s.heldOut, 'held-out split');
  }
  const config = defaultFeatNetConfig(H, C, o.dataset.numClasses, o.config);
  const net = FeatNet.create({ config, seed: o.seed, device: o.device, threads: o.threads });
  try {
    const loader = new BatchLoader(train, o.batchSize, o.seed + 101, o.randomFlip ?? true);
    const lr = o.lr ?? 1e-3;
    const warm = o.warmupSteps ?? Math.min(100, Math.floor(o.steps / 10));
    const every = o.logEvery ?? Math.max(1, Math.floor(o.steps / 10));
    const tail: number[] = [];
    let acc = 0;
    let seen = 0;
    log(`featnet: ${describeFeatNet(config)} (${net.numTrainable().toLocaleString('en')} parameters); ` +
      `${o.steps} steps of batch ${o.batchSize} on ${train.description}`);
    for (let s = 0; s < o.steps; s++) {
      const b = await loader.next();
      const r = await net.trainStep(b.x, b.y, { lr: featnetLr(lr, s, o.steps, warm), beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: o.weightDecay ?? 0.05, maxGradNorm: 1 });
      if (s >= o.steps - Math.max(1, Math.floor(o.steps / 10))) tail.push(r.loss);
      acc += r.correct;
      seen += b.y.length;
      if ((s + 1) % every === 0 || s + 1 === o.steps) {
        log(`featnet step ${s + 1}/${o.steps}: loss ${r.loss.toFixed(4)}, train accuracy ${(acc / seen).toFixed(3)}`);
        acc = 0;
        seen = 0;
      }
    }
    await loader.close();
    const accuracy = await featNetAccuracy(net, held);
    log(`featnet: held-out accuracy ${accuracy.toFixed(4)} on ${held.size} images (chance ${(1 / config.numClasses).toFixed(3)})`);
    return {
      net,
      accuracy,
      heldOutSize: held.size,
      trainSize: train.size,
      finalLoss: tail.reduce((a, b) => a + b, 0) / Math.max(1, tail.length),
      steps: o.steps,
      seconds: (performance.now() - t0) / 1000,
      description: train.description,
    };
  } catch (e) {
    net.dispose();
    throw e;
  }
}
