// SpeeD's configuration: the `diffusion:` keys of the SpeeD configs, as the
// sampler and the weights take them.

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

/**
 * SpeeD's published settings (sampling and weighting on, k = 5, tau = 700 and
 * lam = 0.6 for T = 1000): what the paper's configs set. The config's defaults
 * are the schema's (uniform sampling, no weighting: a plain DiT run).
 */
export const SPEED_PAPER_OPTIONS: Readonly<SpeedOptions> = Object.freeze({
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

/** The `diffusion:` keys that configure SpeeD (the others are the forward process). */
export const SPEED_OPTION_KEYS = Object.keys(SPEED_PAPER_OPTIONS) as (keyof SpeedOptions)[];

/** tau when the config leaves it unset: 700 for T = 1000 (SpeeD's), round(0.7 T) otherwise, so small-T configs work unchanged. */
export const defaultTau = (T: number): number => (T === 1000 ? 700 : Math.max(1, Math.round(0.7 * T)));

/**
 * SpeeD's options from a validated `diffusion:` section: the config schema owns
 * these keys (types, ranges, defaults, tau <= T); this only picks them out and
 * resolves an unset tau for the schedule's T.
 */
export function speedOptions(d: Omit<SpeedOptions, 'tau'> & { tau: number | null }, T: number): SpeedOptions {
  const o = Object.fromEntries(SPEED_OPTION_KEYS.map((k) => [k, d[k]])) as unknown as SpeedOptions;
  o.tau = d.tau ?? defaultTau(T);
  return o;
}
