// DDPM / DDIM sampling loops. TypeScript only computes each step's
// scalar coefficients; the per-element update runs natively (model.sampleStep =
// forward + one fused kernel), so nothing here loops over tensor elements.
import type { SampleStepCoefs } from '../native.js';
import type { DiffusionCoefs } from './coefs.js';
import { respace, spacedTimesteps } from './respace.js';

/** What a sampler needs from a model (DiTModel satisfies it; tests pass oracles). */
export interface SamplerModel {
  readonly config: { inChannels: number; inputSize: number; numClasses: number; learnSigma: boolean };
  /** One reverse step at original time index t; returns the new x (x is not modified). */
  sampleStep(x: Float32Array, t: number, y: Int32Array, coefs: SampleStepCoefs, opts?: { useEma?: boolean }): Promise<Float32Array>;
  /** n standard normals from the model's noise stream. */
  drawNoise(n: number): Float32Array;
}

export type SamplerName = 'ddpm' | 'ddim';

export interface SampleOptions {
  /** number of images */
  N: number;
  /** [N] class labels (ignored, and may be empty, for an unconditional model) */
  y: Int32Array;
  sampler: SamplerName;
  /** respacing spec: "" (all steps), "250", "10,15,20", "ddim50" */
  steps: string;
  /** DDIM only: 0 = deterministic, 1 = DDPM-like noise */
  eta: number;
  /** classifier-free guidance scale; 1 = off */
  guidanceScale: number;
  /**
   * eps channels the guidance applies to: 3 (default) guides channels 0..2 and
   * keeps the conditional prediction in the rest, as DiT's forward_with_cfg;
   * 'all' guides every eps channel. They differ only for models of more than 3
   * channels (latents); learned-variance channels are never guided.
   */
  guidanceChannels?: number | 'all';
  /** clamp x0_hat to [-1, 1] (pixel-space models) */
  clipDenoised: boolean;
  /** sample with the EMA weights (default true) */
  useEma?: boolean;
  /** DDPM without learned sigma: IDDPM's fixed "large" (beta) or "small" (posterior) variance; default large, as DiT */
  fixedVariance?: 'large' | 'small';
  /** start from this x_T ([N, C, H, W]) instead of fresh noise */
  xT?: Float32Array;
  /** called after every step with (steps done, total steps) */
  onProgress?: (i: number, n: number) => void;
}

/** The DDIM sigma of a step: eta sqrt((1 - abar_prev)/(1 - abar)) sqrt(1 - abar/abar_prev). */
export function ddimSigma(abar: number, abarPrev: number, eta: number): number {
  if (eta === 0) return 0;
  const v = ((1 - abarPrev) / (1 - abar)) * (1 - abar / abarPrev);
  return eta * Math.sqrt(Math.max(0, v));
}

/**
 * The coefficients of reverse step i of the (respaced) diffusion `c`.
 * For DDPM without learned sigma, postLogVar carries the fixed log-variance.
 */
export function stepCoefs(
  c: DiffusionCoefs,
  i: number,
  o: { sampler: SamplerName; eta: number; clipX0: boolean; cfg: boolean; guidance: number; learnSigma: boolean; fixedVariance?: 'large' | 'small'; guidanceChannels?: number },
): SampleStepCoefs {
  const abar = c.abar[i];
  const abarPrev = c.abarPrev[i];
  let postLogVar = c.postLogVar[i];
  if (o.sampler === 'ddpm' && !o.learnSigma && (o.fixedVariance ?? 'large') === 'large') {
    // IDDPM FIXED_LARGE: log(beta_t), with the posterior variance at t = 0.
    postLogVar = i === 0 ? (c.T > 1 ? Math.log(c.posteriorVariance[1]) : c.logBeta[0]) : c.logBeta[i];
  }
  const sigma = o.sampler === 'ddim' ? ddimSigma(abar, abarPrev, o.eta) : 0;
  return {
    mode: o.sampler,
    sqrtRecipAbar: c.sqrtRecipAbar[i],
    sqrtRecipm1Abar: c.sqrtRecipm1Abar[i],
    coef1: c.coef1[i],
    coef2: c.coef2[i],
    logBeta: c.logBeta[i],
    postLogVar,
    sqrtAbarPrev: Math.sqrt(abarPrev),
    epsCoef: Math.sqrt(Math.max(0, 1 - abarPrev - sigma * sigma)),
    sigma,
    addNoise: i > 0,
    clipX0: o.clipX0,
    cfg: o.cfg,
    guidance: o.guidance,
    guidanceChannels: o.guidanceChannels ?? 0,
  };
}

/** DiT's guided-channel count. */
export const DIT_GUIDANCE_CHANNELS = 3;

/** The native guidanceChannels of an option value: 0 = every channel. */
export function guidanceChannelsOf(v: number | 'all' | undefined): number {
  if (v === undefined) return DIT_GUIDANCE_CHANNELS;
  if (v === 'all') return 0;
  if (!Number.isInteger(v) || v < 1) fail(`guidanceChannels must be an integer >= 1 or 'all', got ${String(v)}`);
  return v;
}

function fail(what: string): never {
  throw new RangeError(`sample: ${what}`);
}

/** Runs the reverse process from x_T to x_0 and returns x_0 [N, C, H, W]. */
export async function sample(model: SamplerModel, coefs: DiffusionCoefs, opts: SampleOptions): Promise<Float32Array> {
  const { inChannels: C, inputSize: H, numClasses, learnSigma } = model.config;
  const N = opts.N;
  if (!Number.isInteger(N) || N < 1) fail(`N must be an integer >= 1, got ${String(N)}`);
  if (opts.sampler !== 'ddpm' && opts.sampler !== 'ddim') fail(`sampler must be "ddpm" or "ddim", got ${JSON.stringify(opts.sampler)}`);
  if (!Number.isFinite(opts.eta) || opts.eta < 0) fail(`eta must be a number >= 0, got ${String(opts.eta)}`);
  if (!Number.isFinite(opts.guidanceScale)) fail(`guidanceScale must be a finite number, got ${String(opts.guidanceScale)}`);
  let y = opts.y;
  if (numClasses > 0) {
    if (y.length !== N) fail(`y must hold N = ${N} labels, got ${y.length}`);
    for (let i = 0; i < N; i++) if (y[i] < 0 || y[i] >= numClasses) fail(`y[${i}] = ${y[i]} is outside [0, ${numClasses})`);
  } else if (y.length !== N) {
    y = new Int32Array(N); // unconditional: labels are ignored by the model
  }
  const cfg = opts.guidanceScale !== 1 && numClasses > 0;
  const guidanceChannels = guidanceChannelsOf(opts.guidanceChannels);

  const kept = spacedTimesteps(coefs.T, opts.steps);
  const { coefs: rc, timestepMap } = respace(coefs, kept);
  const numel = N * C * H * H;
  let x: Float32Array;
  if (opts.xT) {
    if (opts.xT.length !== numel) fail(`xT must hold N*C*H*W = ${numel} values, got ${opts.xT.length}`);
    x = opts.xT.slice();
  } else {
    x = model.drawNoise(numel);
  }
  const n = rc.T;
  const so = {
    sampler: opts.sampler,
    eta: opts.eta,
    clipX0: opts.clipDenoised,
    cfg,
    guidance: opts.guidanceScale,
    learnSigma,
    fixedVariance: opts.fixedVariance,
    guidanceChannels,
  };
  const useEma = opts.useEma ?? true;
  for (let i = n - 1; i >= 0; i--) {
    x = await model.sampleStep(x, timestepMap[i], y, stepCoefs(rc, i, so), { useEma });
    opts.onProgress?.(n - i, n);
  }
  return x;
}
