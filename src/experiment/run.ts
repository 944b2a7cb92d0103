// The speed-up experiment: for the same model, data, seed and step budget, train
// every method with the trainer (src/train), draw samples from each checkpoint's
// EMA weights with the same sampler and the same starting noise (samples.ts),
// score them in a trained feature space and in pixels against held-out real
// images, then write report.md, report.json and the plots (report.ts).
//
// Each run's samples are kept as they come (samples.json), so an interrupted
// experiment continues where it stopped: finished runs are not trained again,
// and scoring, which is cheap, is always done afresh from the kept samples.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { loadConfig, type Config } from '../config/index.js';
import { FashionMnistDataset, makeDataset, SceneDataset, SyntheticDataset, type Dataset } from '../data/index.js';
import { ConfigError } from '../errors.js';
import { checkFeatureSpaceAccuracy, evaluateFeatures, extractFeatures, labelAccuracy, pixelFeatureSpace, referenceFromFeatures, type FeatureSpace, type ImageBatch, type ReferenceStats } from '../eval/index.js';
import { featNetFeatureSpace, featNetMatches, featNetSpaceName, imagesToModelInput, loadFeatNet, readFeatNetInfo, saveFeatNet, SubsetDataset, trainFeatNet, type FeatNet, type FeatNetOverrides } from '../featnet/index.js';
import { loadExperimentSpec, type ExperimentSpec, type MetricKey, type SamplerSpec } from './spec.js';
import { writeReport } from './report.js';
import { readSampleSet, runSamples, writeSampleGrids, type PlannedRun, type RunSamples } from './samples.js';
import { curveKey, type EvalPoint, type Floor, type Metrics, type MethodResult } from './types.js';
import { range, realImages, seededOrder } from '../eval/real.js';

export interface ExperimentOptions {
  /** base.yaml of the experiment folder (or any config in it) */
  config: string;
  quick?: boolean;
  /** output folder (default results/speedup, results/speedup-quick with --quick) */
  out?: string;
  /** extra config overrides (key.path=value) for every method */
  overrides?: string[];
  log?: (line: string) => void;
  /** train (or reuse) the feature network, check it against min_feature_accuracy, and stop */
  featnetOnly?: boolean;
  /** train every run and draw its samples, then stop: no feature network, no scores (a later run without it scores them) */
  generateOnly?: boolean;
  /** with generateOnly: only these of the declared seeds (to split the drawing over processes or machines) */
  seeds?: number[];
  /** with generateOnly: only these of the declared methods */
  methods?: string[];
}

export { curveKey, type EvalPoint, type Floor, type Metrics, type MethodResult } from './types.js';
export { samplersAt, type PlannedRun } from './samples.js';

/**
 * The real-vs-real floor: a set of real images disjoint from the reference,
 * of the size of an evaluation's samples, scored like samples. No generator
 * can be expected to beat it; scores are read against it.
 */
export interface ExperimentResult {
  out: string;
  report: string;
  plots: string[];
  methods: MethodResult[];
  /** null with --generate-only */
  featnet: { file: string; accuracy: number; space: string } | null;
  seconds: number;
}

/** Keys a method may change; everything else must be equal across methods. */
const METHOD_KEYS = new Set(['experiment_dir', 'diffusion.sampling', 'diffusion.weighting', 'diffusion.k', 'diffusion.tau', 'diffusion.lam',
  'diffusion.p2_k', 'diffusion.p2_gamma', 'diffusion.min_snr_gamma', 'diffusion.lognorm_mean', 'diffusion.lognorm_std',
  'diffusion.clts_mu', 'diffusion.clts_sigma', 'diffusion.clts_target_steps']);

function flatten(v: unknown, prefix = '', out = new Map<string, string>()): Map<string, string> {
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else out.set(prefix, JSON.stringify(v));
  return out;
}

/** Throws unless the configs differ only in the methods' own diffusion keys (a fair comparison). */
export function checkComparable(configs: { method: string; config: Config }[]): void {
  const [first, ...rest] = configs;
  const a = flatten(first.config);
  for (const c of rest) {
    const b = flatten(c.config);
    for (const k of new Set([...a.keys(), ...b.keys()])) {
      if (METHOD_KEYS.has(k) || a.get(k) === b.get(k)) continue;
      throw new ConfigError(k, `differs between methods '${first.method}' (${a.get(k)}) and '${c.method}' (${b.get(k)}); ` +
        'the experiment compares methods on the same model, data, seed and step budget: set it in base.yaml');
    }
  }
}

/**
 * Held-out real data. The built-in synthetic set is a function of (seed, index),
 * so images past data.num_samples were never seen in training: the reference set
 * and the feature network's held-out split come from there. Other data sets
 * give a seeded subset of their own images (as ImageNet FID uses training images).
 */
export interface HeldOut {
  featTrain: Dataset;
  featHeld: Dataset;
  reference: Dataset;
  refIdx: Int32Array;
  /** real images disjoint from the reference for the real-vs-real floor (null: the data set has none to spare) */
  floorIdx: Int32Array | null;
  note: string;
  close: () => Promise<void>;
}

/** The most images one evaluation generates (sets the size of the floor's real set). */
export function maxEvalImages(spec: ExperimentSpec, c: Config): number {
  const classes = Math.max(1, c.model.num_classes);
  return Math.max(...spec.samplers.map((s) => classes * Math.max(c.sample.num_per_class, s.last_num_per_class)));
}

function heldOutData(c: Config, spec: ExperimentSpec): HeldOut {
  const d = c.data;
  const nRef = spec.reference_images;
  const nHeld = spec.featnet.held_out_images;
  const dataSeed = d.data_seed ?? c.seed;
  const nFloor = maxEvalImages(spec, c);
  if (d.name === 'fashion_mnist') {
    // The training split trains the model and the feature network; the test
    // split (never trained on) scores the feature network, and its two
    // disjoint halves give the reference and the real-vs-real floor.
    const test = new FashionMnistDataset({ root: d.root ? path.resolve(d.root) : null, split: 't10k', imageSize: d.image_size, channels: d.channels, numClasses: d.num_classes, fit: d.fashion_mnist_fit });
    const train = makeDataset(c);
    const half = Math.floor(test.size / 2);
    if (nRef > half) throw new ConfigError('reference_images', `${nRef} is more than half of the ${test.size} test images (the other half is the real-vs-real floor)`);
    if (nFloor > test.size - half) throw new ConfigError('sample.num_per_class', `an evaluation of ${nFloor} images is larger than the ${test.size - half} test images of the real-vs-real floor`);
    const order = seededOrder(test.size, dataSeed);
    return {
      featTrain: new SubsetDataset(train, range(0, train.size), 'training split'),
      featHeld: new SubsetDataset(test, range(0, test.size), 'test split'),
      reference: test,
      refIdx: order.slice(0, nRef),
      floorIdx: order.slice(half, half + nFloor),
      note: `${nRef} Fashion-MNIST test images (seeded half of the 10k test split, data seed ${dataSeed}; never trained on)`,
      close: async () => { await test.close(); await train.close(); },
    };
  }
  if (d.name === 'synthetic' || d.name === 'scenes') {
    const size = d.num_samples + nRef + nHeld + nFloor;
    const all = d.name === 'synthetic'
      ? new SyntheticDataset({ seed: dataSeed, size, imageSize: d.image_size, channels: d.channels, numClasses: d.num_classes })
      : new SceneDataset({ seed: dataSeed, size, imageSize: d.image_size, channels: d.channels });
    return {
      featTrain: new SubsetDataset(all, range(0, d.num_samples), 'training images'),
      featHeld: new SubsetDataset(all, range(d.num_samples + nRef, nHeld), 'held-out images'),
      reference: all,
      refIdx: range(d.num_samples, nRef),
      floorIdx: range(d.num_samples + nRef + nHeld, nFloor),
      note: `${nRef} held-out ${d.name} images (data seed ${dataSeed}, indices ${d.num_samples}..${d.num_samples + nRef - 1}, never trained on)`,
      close: () => all.close(),
    };
  }
  const data = makeDataset(c);
  // A finite data set: the reference is a seeded subset of the training images
  // (all of them when reference_images >= size), as FID on ImageNet or FFHQ
  // uses the training set. The feature network holds out the last nHeld of
  // the same seeded order for its accuracy and trains on the rest.
  if (nHeld > data.size / 2) throw new ConfigError('featnet.held_out_images', `${nHeld} is more than half of the data set's ${data.size} images`);
  const order = seededOrder(data.size, dataSeed);
  const n = Math.min(nRef, data.size);
  return {
    featTrain: new SubsetDataset(data, order.slice(0, data.size - nHeld), 'feature-network training split'),
    featHeld: new SubsetDataset(data, order.slice(data.size - nHeld), 'held-out split'),
    reference: data,
    refIdx: order.slice(0, n),
    floorIdx: null,
    note: n === data.size ? `all ${n} training images (${data.description})` : `${n} images drawn (seeded) from the training data (${data.description})`,
    close: () => data.close(),
  };
}

async function getFeatNet(file: string, c: Config, spec: ExperimentSpec, sets: { featTrain: Dataset; featHeld: Dataset }, log: (l: string) => void): Promise<{ net: FeatNet; accuracy: number; heldOutSize: number; trainedOn: string }> {
  const f = spec.featnet;
  const want: FeatNetOverrides = f.arch === 'cnn'
    ? { arch: 'cnn', channels: f.channels, fcHidden: f.fc_hidden }
    : { arch: 'vit', hiddenSize: f.hidden_size, depth: f.depth, numHeads: f.num_heads, mlpRatio: f.mlp_ratio };
  if (existsSync(file)) {
    const info = readFeatNetInfo(file);
    const same = info.steps === spec.featnet.steps && info.trainedOn === sets.featTrain.description &&
      featNetMatches(info.config, want) && info.config.inputSize === c.data.image_size;
    if (same) {
      const { net } = loadFeatNet(file, { device: c.device, threads: c.threads || undefined });
      log(`featnet: reusing ${file} (held-out accuracy ${info.accuracy.toFixed(4)})`);
      return { net, accuracy: info.accuracy, heldOutSize: info.heldOutSize, trainedOn: info.trainedOn };
    }
    log(`featnet: ${file} was trained with other settings; training a new one`);
  }
  const r = await trainFeatNet({
    dataset: sets.featTrain, heldOut: sets.featHeld, config: want, steps: spec.featnet.steps, batchSize: spec.featnet.batch_size,
    lr: spec.featnet.lr, weightDecay: spec.featnet.weight_decay, seed: c.seed, device: c.device, threads: c.threads || undefined, log,
  });
  saveFeatNet(file, r.net, { accuracy: r.accuracy, heldOutSize: r.heldOutSize, trainedOn: sets.featTrain.description, steps: r.steps });
  return { net: r.net, accuracy: r.accuracy, heldOutSize: r.heldOutSize, trainedOn: sets.featTrain.description };
}

function metricsOf(prefix: 'featnet' | 'pixel', m: ReturnType<typeof evaluateFeatures>): Partial<Metrics> {
  return { [`${prefix}_fid`]: m.fid, [`${prefix}_kid`]: m.kid_mean, [`${prefix}_precision`]: m.precision, [`${prefix}_recall`]: m.recall };
}

/**
 * Top-1 accuracy of the feature network on images against labels: for a
 * class-conditional model, how often a sample is recognised as the class it
 * was asked for (null unless the network's classes are the model's).
 */
export async function classAccuracy(net: FeatNet, imgs: ImageBatch, labels: Int32Array, batch = 250): Promise<number> {
  const K = net.config.numClasses;
  if (imgs.N === 0) return 0;
  const per = imgs.H * imgs.W * imgs.C;
  const logits = new Float32Array(imgs.N * K);
  for (let a = 0; a < imgs.N; a += batch) {
    const n = Math.min(batch, imgs.N - a);
    logits.set(await net.logits(imagesToModelInput({ ...imgs, data: imgs.data.subarray(a * per, (a + n) * per), N: n })), a * K);
  }
  return labelAccuracy(logits, imgs.N, K, labels);
}

type Space = { space: FeatureSpace; ref: ReferenceStats; prefix: 'featnet' | 'pixel' };

/** Scores a set of images (samples, or real images for the floor) in every space, and its class accuracy when `classifier` is given. */
async function scoreImages(imgs: ImageBatch, labels: Int32Array, spaces: Space[], spec: ExperimentSpec, classifier: FeatNet | null): Promise<Partial<Metrics>> {
  const out: Partial<Metrics> = {};
  for (const s of spaces) {
    const f = await extractFeatures(s.space, imgs);
    // the floors are measured once per sample count on held-out real images (floors.json), not per evaluation
    Object.assign(out, metricsOf(s.prefix, evaluateFeatures(f, imgs.N, s.ref, { kid: { subsets: spec.kid_subsets, seed: 0 }, k: spec.prdc_k, floor: false })));
  }
  out.class_accuracy = classifier ? await classAccuracy(classifier, imgs, labels) : null;
  return out;
}

/** Scores every sample set of a run (samples.ts) in every space: the run's curve. */
async function scoreRun(s: RunSamples, spaces: Space[], spec: ExperimentSpec, classifier: FeatNet | null): Promise<MethodResult> {
  const r: MethodResult = {
    method: s.method, seed: s.seed, sampling: s.sampling, weighting: s.weighting, experiment_dir: s.experiment_dir, train_seconds: s.train_seconds, evals: [],
  };
  for (const p of s.points) {
    const e: EvalPoint = { step: p.step, metrics: {}, n_samples: 0, samples: {}, seconds: {} };
    for (const set of p.sets) {
      const { imgs, labels } = readSampleSet(s.experiment_dir, set);
      const m = await scoreImages(imgs, labels, spaces, spec, classifier);
      for (const [k, v] of Object.entries(m)) e.metrics[`${set.sampler}/${k}`] = v ?? null;
      e.n_samples = set.n;
      e.samples![set.sampler] = set.n;
      e.seconds[set.sampler] = set.seconds;
    }
    r.evals.push(e);
  }
  return r;
}

/**
 * Every (seed, method) run's training and sampling configs. Pairing: within a
 * seed every method gets the same `seed` (model initialisation, data order,
 * diffusion noise, evaluation noise) and the same data, and checkComparable
 * refuses any other difference, so seed s of a method and seed s of the
 * baseline differ only in the method. The data stay the same for every seed
 * (data.data_seed, default the first seed), so the feature network and the
 * reference are shared.
 */
export function planRuns(dir: string, spec: ExperimentSpec, overrides: string[], out: string): { dataSeed: number; bySeed: { seed: number; configs: PlannedRun[] }[] } {
  const load = (m: string, phase: 'train' | 'sample', extra: string[]) =>
    loadConfig(path.join(dir, `${m}.yaml`), { overrides: [...overrides, ...extra], phase }).config;
  const probe = load(spec.methods[0], 'train', []);
  const dataSeed = probe.data.data_seed ?? spec.seeds[0];
  const runDir = (seed: number, m: string) => path.join(out, `seed-${seed}`, m);
  const bySeed = spec.seeds.map((seed) => {
    const extra = (m: string) => [`seed=${seed}`, `data.data_seed=${dataSeed}`, `experiment_dir=${runDir(seed, m)}`];
    const configs = spec.methods.map((method) => ({
      method, config: load(method, 'train', extra(method)),
      samplers: spec.samplers.map((sp) => ({
        spec: sp, config: load(method, 'sample', [...extra(method), `sample.sampler=${sp.sampler}`, `sample.steps=${sp.steps}`, `sample.eta=${sp.eta}`]),
      })),
    }));
    checkComparable(configs);
    // the sampling configs too: the same sampler, steps and evaluation noise for every method
    spec.samplers.forEach((_, k) => checkComparable(configs.map((c) => ({ method: c.method, config: c.samplers[k].config }))));
    return { seed, configs };
  });
  return { dataSeed, bySeed };
}

export async function runExperiment(o: ExperimentOptions): Promise<ExperimentResult> {
  const t0 = performance.now();
  const log = o.log ?? ((l: string) => process.stdout.write(l + '\n'));
  const dir = path.dirname(path.resolve(o.config));
  const { spec, file: specFile } = loadExperimentSpec(dir, o.quick ?? false);
  const out = path.resolve(o.out ?? (o.quick ? 'results/speedup-quick' : 'results/speedup'));
  mkdirSync(out, { recursive: true });
  log(`experiment: ${spec.methods.join(', ')} (baseline ${spec.baseline}) from ${dir}${specFile ? ` + ${path.basename(specFile)}` : ''}${o.quick ? ' [quick]' : ''} -> ${out}`);

  const overrides = [...spec.overrides, ...(o.overrides ?? []), 'sample_at_end=false'];
  const { dataSeed, bySeed } = planRuns(dir, spec, overrides, out);
  const base = bySeed[0].configs[0].config;
  if (base.ckpt_every <= 0 || base.max_training_steps <= 0) {
    throw new ConfigError('ckpt_every', 'the experiment evaluates every checkpoint: set ckpt_every > 0 and max_training_steps > 0 in base.yaml');
  }
  // a refused subset writes nothing
  for (const [key, subset, declared] of [['seeds', o.seeds, spec.seeds], ['methods', o.methods, spec.methods]] as const) {
    if (!subset) continue;
    if (!o.generateOnly) throw new ConfigError(key, `a subset of the ${key} only draws samples (--generate-only): the report needs every declared one`);
    const unknown = (subset as readonly (string | number)[]).filter((s) => !(declared as readonly (string | number)[]).includes(s));
    if (unknown.length > 0) throw new ConfigError(key, `${unknown.join(', ')} ${unknown.length > 1 ? 'are' : 'is'} not among the declared ${key} ${declared.join(', ')}`);
  }
  writeFileSync(path.join(out, 'experiment.json'), JSON.stringify({ spec, overrides, data_seed: dataSeed, config: o.config }, null, 2) + '\n');
  if (o.generateOnly) {
    let n = 0;
    let runs = 0;
    for (const { seed, configs } of bySeed.filter((b) => !o.seeds || o.seeds.includes(b.seed))) {
      for (const run of configs.filter((c) => !o.methods || o.methods.includes(c.method))) {
        n += (await runSamples(run, seed, spec.keep_checkpoints, log)).points.length;
        runs++;
      }
    }
    log(`--generate-only: the samples of ${runs} runs (${n} checkpoints) are drawn; ` +
      'the same command without --generate-only (and --seeds, --methods) trains the feature network, scores them and writes the report');
    return { out, report: '', plots: [], methods: [], featnet: null, seconds: (performance.now() - t0) / 1000 };
  }

  // Feature network and reference statistics, shared by every method and seed.
  const sets = heldOutData(base, spec);
  const fnFile = path.join(out, 'featnet.safetensors');
  const fn = await getFeatNet(fnFile, base, spec, sets, log);
  try {
    // the gate of every featnet space (-p evaluate, FID during training), with experiment.json's field and no override
    checkFeatureSpaceAccuracy({
      space: featNetSpaceName(fnFile, fn.accuracy, fn.net.config.arch), accuracy: fn.accuracy, heldOutSize: fn.heldOutSize,
      measuredOn: base.data.name === 'fashion_mnist' ? 'real test images' : 'held-out images', numClasses: fn.net.config.numClasses,
      min: spec.min_feature_accuracy, allow: false, minKey: 'min_feature_accuracy', allowKey: null, file: specFile ?? undefined,
      remedy: 'train it longer or wider in experiment.json featnet, or lower min_feature_accuracy and say so',
    });
  } catch (e) {
    fn.net.dispose();
    await sets.close();
    throw e;
  }
  if (o.featnetOnly) {
    fn.net.dispose();
    await sets.close();
    log(`featnet: ${fnFile} passes the gate (accuracy ${fn.accuracy.toFixed(4)} >= ${spec.min_feature_accuracy}); --featnet-only: stopping`);
    return { out, report: '', plots: [], methods: [], featnet: { file: fnFile, accuracy: fn.accuracy, space: featNetSpaceName(fnFile, fn.accuracy, fn.net.config.arch) }, seconds: (performance.now() - t0) / 1000 };
  }
  const featSpace = featNetFeatureSpace(fn.net, fn, fnFile);
  const pixSpace = pixelFeatureSpace(spec.pixel_feature_size);
  const refImgs = await realImages(sets.reference, sets.refIdx, 'reference');
  const floorImgs = sets.floorIdx ? await realImages(sets.reference, sets.floorIdx, 'real-vs-real floor') : null;
  const floorLabels = sets.floorIdx ? (await sets.reference.load(sets.floorIdx, new Uint8Array(sets.floorIdx.length))).y : null;
  await sets.close();
  const spaces = [
    { space: featSpace, prefix: 'featnet' as const, ref: referenceFromFeatures(await extractFeatures(featSpace, refImgs), refImgs.N, featSpace.dim, featSpace.name, sets.note) },
    { space: pixSpace, prefix: 'pixel' as const, ref: referenceFromFeatures(await extractFeatures(pixSpace, refImgs), refImgs.N, pixSpace.dim, pixSpace.name, sets.note) },
  ];
  log(`reference: ${sets.note}; feature spaces ${featSpace.name} and ${pixSpace.name}`);
  const conditional = base.model.num_classes > 0 && fn.net.config.numClasses === base.model.num_classes;
  const classifier = conditional ? fn.net : null;
  // The floor at every sample count an evaluation uses: FID and KID of a finite
  // set are biased by its size, so each score is read against the floor of its own size.
  const floors: Floor[] = [];
  if (floorImgs && floorLabels) {
    const classes = Math.max(1, base.model.num_classes);
    const sizes = [...new Set(spec.samplers.flatMap((s) => [base.sample.num_per_class, s.last_num_per_class || base.sample.num_per_class]).map((k) => k * classes))].sort((a, b) => a - b);
    const per = floorImgs.H * floorImgs.W * floorImgs.C;
    for (const n of sizes) {
      const imgs: ImageBatch = { data: floorImgs.data.subarray(0, n * per), N: n, H: floorImgs.H, W: floorImgs.W, C: floorImgs.C };
      const metrics = await scoreImages(imgs, floorLabels.subarray(0, n), spaces, spec, classifier);
      floors.push({ n, metrics, source: `${n} real images disjoint from the reference (${sets.note.split(' (')[0].replace(/^\d+ /, '')})` });
      log(`real-vs-real floor (${n} images): ${Object.entries(metrics).map(([k, v]) => `${k} ${v === null || v === undefined ? 'n/a' : v.toFixed(4)}`).join(', ')}`);
    }
  }
  writeFileSync(path.join(out, 'floors.json'), JSON.stringify({ feature_accuracy: fn.accuracy, held_out: fn.heldOutSize, floors }, null, 2) + '\n');
  const results: MethodResult[] = [];
  const drawn: RunSamples[] = [];
  try {
    for (const { seed, configs } of bySeed) {
      for (const run of configs) {
        const s = await runSamples(run, seed, spec.keep_checkpoints, log);
        drawn.push(s);
        const r = await scoreRun(s, spaces, spec, classifier);
        for (const e of r.evals) {
          const shown = Object.entries(e.metrics).filter(([k]) => k.endsWith('_fid')).map(([k, v]) => `${k} ${v?.toFixed(4)}`).join(', ');
          log(`seed ${seed} ${run.method} step ${e.step}: ${shown}`);
        }
        writeFileSync(path.join(run.config.experiment_dir, 'evals.json'), JSON.stringify({ ...r, featnet_space: featSpace.name }, null, 2) + '\n');
        results.push(r);
      }
    }
  } finally {
    fn.net.dispose();
  }

  const grids = await writeSampleGrids(out, drawn, spec.samplers[0].name);
  const rep = await writeReport(out, {
    spec, methods: results, quick: o.quick ?? false,
    featnet: { file: fnFile, accuracy: fn.accuracy, heldOutSize: fn.heldOutSize, space: featSpace.name, description: featSpace.description ?? '' },
    pixelSpace: pixSpace.name, reference: sets.note, base, seconds: (performance.now() - t0) / 1000, floors, grids,
  });
  log(`report: ${rep.report}`);
  return { out, report: rep.report, plots: rep.plots, methods: results, featnet: { file: fnFile, accuracy: fn.accuracy, space: featSpace.name }, seconds: (performance.now() - t0) / 1000 };
}
