// The experiment's own settings (experiment.json next to the configs): which
// methods, which is the baseline, the reference set, the feature network and
// the --quick overrides. Training settings stay in the YAML configs.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { ConfigError } from '../errors.js';
import { FEATNET_ARCHS, type FeatNetArch } from '../featnet/arch.js';

export interface FeatNetSpec {
  /**
   * the feature network's architecture; the other arch's keys are unused.
   * Default 'vit': experiment folders written before the CNN existed keep their network.
   */
  arch: FeatNetArch;
  /** CNN: output channels of each stage */
  channels: number[];
  /** CNN: width of the features (fc1) */
  fc_hidden: number;
  steps: number;
  batch_size: number;
  lr: number;
  weight_decay: number;
  held_out_images: number;
  hidden_size: number;
  depth: number;
  num_heads: number;
  mlp_ratio: number;
}

/** One evaluation sampler: its name is the prefix of its metrics (`ddpm250/featnet_fid`). */
export interface SamplerSpec {
  name: string;
  sampler: 'ddpm' | 'ddim';
  /** respacing, as sample.steps: "250", "ddim50" */
  steps: string;
  eta: number;
  /** evaluate at every `every`-th checkpoint (1: all); the last checkpoint always */
  every: number;
  /** images per class at the last checkpoint (0: sample.num_per_class, as at the others) */
  last_num_per_class: number;
}

export interface ExperimentSpec {
  methods: string[];
  /** training seeds: every method trains once per seed (data fixed by data.data_seed) */
  seeds: number[];
  /** evaluation samplers, the first is the primary one */
  samplers: SamplerSpec[];
  /** confidence level of the intervals over seeds */
  ci_level: number;
  baseline: string;
  primary_metric: MetricKey;
  reference_images: number;
  pixel_feature_size: number;
  kid_subsets: number;
  prdc_k: number;
  keep_checkpoints: boolean;
  featnet: FeatNetSpec;
  /** command-line style overrides applied to every method's config */
  overrides: string[];
  /**
   * The experiment refuses to report (before training anything) when the
   * feature network's held-out accuracy is below this: FID in the features of
   * a classifier that has not learnt the classes measures little.
   */
  min_feature_accuracy: number;
  /**
   * The plateau criterion of the speed-up: the baseline's primary curve is flat
   * when it changed by less than flat_tolerance (relative) over the last
   * flat_fraction of the run; otherwise no speed-up factor is read.
   */
  flat_fraction: number;
  flat_tolerance: number;
  /** the primary endpoint in words, declared before the run; the report repeats it first */
  declaration: string;
}

export const METRIC_KEYS = ['featnet_fid', 'featnet_kid', 'featnet_precision', 'featnet_recall', 'pixel_fid', 'pixel_kid', 'pixel_precision', 'pixel_recall', 'class_accuracy'] as const;
export type MetricKey = (typeof METRIC_KEYS)[number];
export const lowerIsBetter = (m: MetricKey): boolean => !m.endsWith('precision') && !m.endsWith('recall') && !m.endsWith('accuracy');

const DEFAULT_SAMPLER: SamplerSpec = { name: 'ddim20', sampler: 'ddim', steps: 'ddim20', eta: 0, every: 1, last_num_per_class: 0 };

const DEFAULTS: ExperimentSpec = {
  methods: ['uniform', 'speed', 'p2', 'min_snr', 'lognorm'],
  seeds: [0],
  samplers: [DEFAULT_SAMPLER],
  ci_level: 0.95,
  baseline: 'uniform',
  primary_metric: 'featnet_fid',
  reference_images: 1000,
  pixel_feature_size: 8,
  kid_subsets: 50,
  prdc_k: 3,
  keep_checkpoints: false,
  featnet: { arch: 'vit', channels: [32, 64], fc_hidden: 128, steps: 400, batch_size: 32, lr: 1e-3, weight_decay: 0.05, held_out_images: 1000, hidden_size: 64, depth: 4, num_heads: 4, mlp_ratio: 4 },
  overrides: [],
  min_feature_accuracy: 0,
  flat_fraction: 1 / 3,
  flat_tolerance: 0.05,
  declaration: '',
};

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function merge(file: string, base: ExperimentSpec, src: Json, prefix: string): ExperimentSpec {
  const out = structuredClone(base) as unknown as Json;
  for (const [k, v] of Object.entries(src)) {
    if (k === '//' || k === 'quick') continue;
    const key = prefix + k;
    if (k === 'featnet') {
      if (!isObj(v)) throw new ConfigError(key, 'expected an object', file);
      const fn = out.featnet as Json;
      for (const [fk, fv] of Object.entries(v)) {
        if (!(fk in fn)) throw new ConfigError(`${key}.${fk}`, `unknown key (expected one of: ${Object.keys(fn).join(', ')})`, file);
        if (fk === 'arch') {
          if (!FEATNET_ARCHS.includes(fv as FeatNetArch)) throw new ConfigError(`${key}.arch`, `expected one of ${FEATNET_ARCHS.join(', ')}, found ${JSON.stringify(fv)}`, file);
        } else if (fk === 'channels') {
          if (!Array.isArray(fv) || fv.length < 1 || fv.length > 8 || !fv.every((x) => Number.isInteger(x) && x >= 1 && x <= 4096)) {
            throw new ConfigError(`${key}.channels`, `expected a list of 1 to 8 stage widths (integers in [1, 4096]), found ${JSON.stringify(fv)}`, file);
          }
        } else if (typeof fv !== 'number' || !(fv > 0)) throw new ConfigError(`${key}.${fk}`, `expected a number > 0, found ${JSON.stringify(fv)}`, file);
        fn[fk] = fv;
      }
      continue;
    }
    if (k === 'seeds') {
      if (!Array.isArray(v) || v.length === 0 || !v.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 31)) throw new ConfigError(key, `expected a non-empty list of integer seeds >= 0, found ${JSON.stringify(v)}`, file);
      if (new Set(v).size !== v.length) throw new ConfigError(key, `lists a seed twice: ${JSON.stringify(v)}`, file);
      out.seeds = v;
      continue;
    }
    if (k === 'samplers') {
      out.samplers = parseSamplers(v, key, file);
      continue;
    }
    if (!(k in out)) throw new ConfigError(key, `unknown key (expected one of: ${Object.keys(DEFAULTS).join(', ')}, quick)`, file);
    const want = DEFAULTS[k as keyof ExperimentSpec];
    if (Array.isArray(want)) {
      if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw new ConfigError(key, 'expected a list of strings', file);
    } else if (typeof v !== typeof want) throw new ConfigError(key, `expected a ${typeof want}, found ${JSON.stringify(v)}`, file);
    out[k] = k === 'overrides' ? [...(out.overrides as string[]), ...(v as string[])] : v;
  }
  return out as unknown as ExperimentSpec;
}

function parseSamplers(v: unknown, key: string, file: string): SamplerSpec[] {
  if (!Array.isArray(v) || v.length === 0) throw new ConfigError(key, `expected a non-empty list of samplers {name, sampler, steps, eta, every}, found ${JSON.stringify(v)}`, file);
  const out = v.map((x, i): SamplerSpec => {
    const at = `${key}[${i}]`;
    if (!isObj(x)) throw new ConfigError(at, `expected an object {name, sampler, steps, eta, every}, found ${JSON.stringify(x)}`, file);
    for (const k of Object.keys(x)) if (!(k in DEFAULT_SAMPLER)) throw new ConfigError(`${at}.${k}`, `unknown key (expected one of: ${Object.keys(DEFAULT_SAMPLER).join(', ')})`, file);
    const s = { ...DEFAULT_SAMPLER, ...x } as SamplerSpec;
    if (typeof s.name !== 'string' || !/^[A-Za-z0-9_-]+$/.test(s.name)) throw new ConfigError(`${at}.name`, `expected a name of letters, digits, _ or -, found ${JSON.stringify(s.name)}`, file);
    if (s.sampler !== 'ddpm' && s.sampler !== 'ddim') throw new ConfigError(`${at}.sampler`, `expected ddpm or ddim, found ${JSON.stringify(s.sampler)}`, file);
    if (typeof s.steps === 'number') s.steps = String(s.steps);
    if (typeof s.steps !== 'string' || s.steps.length === 0) throw new ConfigError(`${at}.steps`, `expected a respacing like "250" or "ddim50", found ${JSON.stringify(s.steps)}`, file);
    if (typeof s.eta !== 'number' || !(s.eta >= 0 && s.eta <= 1)) throw new ConfigError(`${at}.eta`, `expected a number in [0, 1], found ${JSON.stringify(s.eta)}`, file);
    if (!Number.isInteger(s.every) || s.every < 1) throw new ConfigError(`${at}.every`, `expected a positive integer, found ${JSON.stringify(s.every)}`, file);
    if (!Number.isInteger(s.last_num_per_class) || s.last_num_per_class < 0) throw new ConfigError(`${at}.last_num_per_class`, `expected an integer >= 0 (0: sample.num_per_class), found ${JSON.stringify(s.last_num_per_class)}`, file);
    return s;
  });
  if (new Set(out.map((s) => s.name)).size !== out.length) throw new ConfigError(key, 'two samplers share a name', file);
  return out;
}

/** A spec as saved by an earlier version (report.json, experiment.json) with the keys it lacks at their defaults. */
export function specWithDefaults(saved: Partial<ExperimentSpec>): ExperimentSpec {
  const spec = { ...structuredClone(DEFAULTS), ...saved } as ExperimentSpec;
  spec.featnet = { ...DEFAULTS.featnet, ...(saved.featnet ?? {}) };
  spec.samplers = (saved.samplers ?? DEFAULTS.samplers).map((s) => ({ ...DEFAULT_SAMPLER, ...s }));
  return spec;
}

/** experiment.json in `dir` (defaults when absent), with the `quick` section merged over it when asked. */
export function loadExperimentSpec(dir: string, quick: boolean): { spec: ExperimentSpec; file: string | null } {
  const file = path.join(dir, 'experiment.json');
  let spec = structuredClone(DEFAULTS);
  let raw: Json = {};
  if (existsSync(file)) {
    try {
      const j: unknown = JSON.parse(readFileSync(file, 'utf8'));
      if (!isObj(j)) throw new Error('expected a JSON object');
      raw = j;
    } catch (e) {
      throw new ConfigError('', `cannot read the experiment settings: ${(e as Error).message}`, file);
    }
    spec = merge(file, spec, raw, '');
  }
  if (quick) {
    const q = raw.quick ?? {};
    if (!isObj(q)) throw new ConfigError('quick', 'expected an object', file);
    spec = merge(file, spec, q, 'quick.');
  }
  if (!METRIC_KEYS.includes(spec.primary_metric)) throw new ConfigError('primary_metric', `expected one of ${METRIC_KEYS.join(', ')}, found ${JSON.stringify(spec.primary_metric)}`, file);
  if (!spec.methods.includes(spec.baseline)) throw new ConfigError('baseline', `'${spec.baseline}' is not among the methods (${spec.methods.join(', ')})`, file);
  if (new Set(spec.methods).size !== spec.methods.length) throw new ConfigError('methods', 'lists a method twice', file);
  for (const m of spec.methods) {
    if (!/^[A-Za-z0-9_-]+$/.test(m)) throw new ConfigError('methods', `method names are file names without .yaml, found ${JSON.stringify(m)}`, file);
    if (!existsSync(path.join(dir, `${m}.yaml`))) throw new ConfigError('methods', `no config ${m}.yaml in ${dir}`, file);
  }
  if (!(spec.ci_level > 0 && spec.ci_level < 1)) throw new ConfigError('ci_level', `expected a number in (0, 1), found ${spec.ci_level}`, file);
  if (!(spec.min_feature_accuracy >= 0 && spec.min_feature_accuracy <= 1)) throw new ConfigError('min_feature_accuracy', `expected a number in [0, 1], found ${spec.min_feature_accuracy}`, file);
  if (!(spec.flat_fraction > 0 && spec.flat_fraction < 1)) throw new ConfigError('flat_fraction', `expected a number in (0, 1), found ${spec.flat_fraction}`, file);
  if (!(spec.flat_tolerance > 0)) throw new ConfigError('flat_tolerance', `expected a number > 0, found ${spec.flat_tolerance}`, file);
  for (const k of ['reference_images', 'pixel_feature_size', 'kid_subsets', 'prdc_k'] as const) {
    if (!Number.isInteger(spec[k]) || spec[k] < 1) throw new ConfigError(k, `expected a positive integer, found ${spec[k]}`, file);
  }
  return { spec, file: existsSync(file) ? file : null };
}
