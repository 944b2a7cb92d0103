// -p evaluate: metrics of a sample set (default: the newest inference output)
// against real images (default: the configured data set), in a named feature
// space; prints a table and writes eval.json.
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';

import type { Config } from '../config/index.js';
import { ConfigError } from '../errors.js';
import { formatEvalTable, runEvaluate, type EvalResult } from './index.js';
import { referenceImages } from './real.js';

/** samples.npz of the newest inference-<step> folder in the experiment folder. */
export function newestInferenceSamples(experimentDir: string): string | null {
  if (!existsSync(experimentDir)) return null;
  const dirs = readdirSync(experimentDir)
    .filter((d) => /^inference-\d+$/.test(d) && existsSync(path.join(experimentDir, d, 'samples.npz')))
    .sort();
  return dirs.length ? path.join(experimentDir, dirs[dirs.length - 1], 'samples.npz') : null;
}

export interface EvaluatePhaseOptions {
  /** the Inception-v3 weights file (--inception); overrides evaluate.inception.path */
  inception?: string;
}

export async function runEvaluatePhase(
  c: Config,
  log: (line: string) => void = (l) => process.stdout.write(l + '\n'),
  o: EvaluatePhaseOptions = {},
): Promise<EvalResult> {
  const e = c.evaluate;
  const samples = e.samples ?? newestInferenceSamples(c.experiment_dir);
  if (!samples) {
    throw new ConfigError('evaluate.samples', `not set, and ${c.experiment_dir} holds no inference-*/samples.npz (run -p inference first, or set evaluate.samples=PATH)`);
  }
  if (!existsSync(samples)) throw new ConfigError('evaluate.samples', `${samples} does not exist`);
  if (e.reference !== null && !existsSync(e.reference)) throw new ConfigError('evaluate.reference', `${e.reference} does not exist`);
  const reference = e.reference ?? (await referenceImages(c, e.num_reference));
  const result = await runEvaluate({
    samples,
    reference,
    featureSpace: e.feature_space,
    inceptionPath: o.inception ?? e.inception.path,
    device: c.device,
    threads: c.threads || undefined,
    minFeatureAccuracy: e.min_feature_accuracy,
    allowWeakFeatures: e.allow_weak_features,
    cacheReference: e.cache_reference ?? undefined,
    k: e.k,
    out: e.out ?? c.experiment_dir,
    log,
  });
  log(formatEvalTable(result));
  return result;
}
