// A warning for sampling from an EMA that has barely moved. The EMA starts as
// a copy of the initial weights and keeps decay^steps of them: DiT's 0.9999
// needs tens of thousands of steps, and even 0.995 after 400 steps still holds
// 13.5 % of the random initialisation, so its samples look like noise while
// the raw weights already draw shapes.
import type { Config } from '../config/schema.js';

/** Share of the initial weights left in the EMA after `steps` updates. */
export const emaInitialShare = (decay: number, steps: number): number => decay ** steps;

/** Above this share of its initial value the EMA is not yet a useful average. */
export const EMA_WARN_SHARE = 0.01;

/** The warning line, or null when the EMA has moved far enough (or is not used). */
export function emaWarning(trained: Config, steps: number, useEma: boolean): string | null {
  if (!useEma || steps <= 0) return null;
  // Started from given weights: the EMA's initial value is those weights, not noise.
  if (trained.model?.init_from) return null;
  const decay = trained.ema?.decay;
  if (typeof decay !== 'number' || decay <= 0 || decay >= 1) return null;
  const share = emaInitialShare(decay, steps);
  if (share <= EMA_WARN_SHARE) return null;
  const enough = Math.ceil(Math.log(EMA_WARN_SHARE) / Math.log(decay));
  return `warning: the EMA (ema.decay ${decay}) after ${steps} steps still holds ${(100 * share).toFixed(1)}% of the initial random weights ` +
    `(${enough} steps bring that under ${100 * EMA_WARN_SHARE}%); samples may look like noise. ` +
    'Sample the raw weights with use_ema=false, train longer, or train with a lower ema.decay (see README, "EMA")';
}
