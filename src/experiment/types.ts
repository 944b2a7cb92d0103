// What one method's runs produced, shared by the runner (run.ts) and the report
// (report.ts): a leaf module, so that neither imports the other for it.
import type { MetricKey } from './spec.js';

export interface EvalPoint {
  step: number;
  /** `<sampler>/<metric>` (e.g. ddpm250/featnet_fid) for every sampler evaluated at this step */
  metrics: Record<string, number | null>;
  /** images generated per sampler */
  n_samples: number;
  /** seconds per sampler name */
  seconds: Record<string, number>;
}

/** The key of one curve: a sampler's metric. */
export const curveKey = (sampler: string, metric: MetricKey): string => `${sampler}/${metric}`;

export interface MethodResult {
  method: string;
  seed: number;
  sampling: string;
  weighting: string;
  experiment_dir: string;
  train_seconds: number;
  evals: EvalPoint[];
}
