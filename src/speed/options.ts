// SpeeD's configuration (the `diffusion:` keys of the SpeeD configs) and its checks.
import { ConfigError } from '../errors.js';

export const SAMPLING_NAMES = ['uniform', 'speed', 'speed_boundary', 'no_dual', 'lognorm', 'clts'] as const;
export const WEIGHTING_NAMES = ['none', 'speed', 'p2', 'min_snr', 'theory'] as const;
export type SamplingName = (typeof SAMPLING_NAMES)[number];
export type WeightingName = (typeof WEIGHTING_NAMES)[number];

export interface SpeedOptions {
  /** time-step sampler */
  sampling: SamplingName;
  /** per-sample weighting of the mse term */
  weighting: WeightingName;
  /** speed/no_dual: probability ratio below vs above tau (> 0) */
  k: number;
  /** speed/no_dual: threshold step of the asymmetric sampling; speed weighting: cut (in [1, T]) */
  tau: number;
  /** speed weighting: weights span [1 - lam, lam] (lam in [0.5, 1]) */
  lam: number;
  /** p2 weighting: 1/(p2_k + snr)^p2_gamma */
  p2_k: number;
  p2_gamma: number;
  /** min_snr weighting: min(snr, gamma)/snr */
  min_snr_gamma: number;
  /** lognorm sampler: logit-normal mean and std on u = sqrt(1 - abar) */
  lognorm_mean: number;
  lognorm_std: number;
  /** clts sampler: Gaussian centre and width, as fractions of T */
  clts_mu: number;
  clts_sigma: number;
  /** clts sampler: the Gaussian's share grows linearly to 1 over this many steps */
  clts_target_steps: number;
}

/** The defaults for T = 1000 (SpeeD's k = 5, tau = 700, lam = 0.6). */
export const DEFAULT_SPEED_OPTIONS: Readonly<SpeedOptions> = Object.freeze({
  sampling: 'speed',
  weighting: 'speed',
  k: 5,
  tau: 700,
  lam: 0.6,
  p2_k: 1,
  p2_gamma: 1,
  min_snr_gamma: 5,
  lognorm_mean: 0,
  lognorm_std: 1,
  clts_mu: 0.5,
  clts_sigma: 0.2,
  clts_target_steps: 100000,
});

/** The keys validateSpeedOptions reads (other `diffusion:` keys belong to the config schema). */
export const SPEED_OPTION_KEYS = Object.keys(DEFAULT_SPEED_OPTIONS) as (keyof SpeedOptions)[];

/**
 * Reads SpeeD's keys from a `diffusion:` section (other keys are ignored: the
 * config schema owns them) and fills in the defaults. tau defaults to 700 for
 * T = 1000 and to round(0.7 T) otherwise, so small-T configs work unchanged.
 * Throws ConfigError naming `diffusion.<key>` and what was expected.
 */
export function validateSpeedOptions(obj: unknown, T: number, file?: string): SpeedOptions {
  const sec = 'diffusion';
  if (obj === undefined || obj === null) obj = {};
  if (typeof obj !== 'object' || Array.isArray(obj)) {
    throw new ConfigError(sec, `expected a mapping, got ${JSON.stringify(obj)}`, file);
  }
  if (!Number.isInteger(T) || T < 1) throw new ConfigError(`${sec}.T`, `expected an integer >= 1, got ${String(T)}`, file);
  const o = obj as Record<string, unknown>;
  const path = (k: string) => `${sec}.${k}`;

  const name = <N extends string>(key: string, allowed: readonly N[], def: N): N => {
    const v = o[key];
    if (v === undefined) return def;
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      throw new ConfigError(path(key), `unknown value ${JSON.stringify(v)}; allowed: ${allowed.join(', ')}`, file);
    }
    return v as N;
  };
  const num = (key: string, def: number, ok: (x: number) => boolean, expect: string): number => {
    const v = o[key];
    if (v === undefined) return def;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) {
      throw new ConfigError(path(key), `expected ${expect}, got ${JSON.stringify(v)}`, file);
    }
    return v;
  };

  const d = DEFAULT_SPEED_OPTIONS;
  const tauDefault = T === 1000 ? d.tau : Math.max(1, Math.round(0.7 * T));
  return {
    sampling: name('sampling', SAMPLING_NAMES, d.sampling),
    weighting: name('weighting', WEIGHTING_NAMES, d.weighting),
    k: num('k', d.k, (x) => x > 0, 'a number > 0'),
    tau: num('tau', tauDefault, (x) => Number.isInteger(x) && x >= 1 && x <= T, `an integer in [1, T] = [1, ${T}]`),
    lam: num('lam', d.lam, (x) => x >= 0.5 && x <= 1, 'a number in [0.5, 1]'),
    p2_k: num('p2_k', d.p2_k, (x) => x >= 0, 'a number >= 0'),
    p2_gamma: num('p2_gamma', d.p2_gamma, (x) => x >= 0, 'a number >= 0'),
    min_snr_gamma: num('min_snr_gamma', d.min_snr_gamma, (x) => x > 0, 'a number > 0'),
    lognorm_mean: num('lognorm_mean', d.lognorm_mean, () => true, 'a finite number'),
    lognorm_std: num('lognorm_std', d.lognorm_std, (x) => x > 0, 'a number > 0'),
    clts_mu: num('clts_mu', d.clts_mu, (x) => x >= 0 && x <= 1, 'a fraction of T in [0, 1]'),
    clts_sigma: num('clts_sigma', d.clts_sigma, (x) => x > 0, 'a fraction of T > 0'),
    clts_target_steps: num('clts_target_steps', d.clts_target_steps, (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0'),
  };
}
