// SpeeD: asymmetric time-step sampling with duals and change-aware loss weighting.
export {
  type SpeedOptions,
  type SamplingName,
  type WeightingName,
  SPEED_PAPER_OPTIONS,
  SAMPLING_NAMES,
  WEIGHTING_NAMES,
  SPEED_OPTION_KEYS,
  defaultTau,
  speedOptions,
} from './options.js';
export { meaningfulBoundary, gradient, sqrt1mAbarIncrement, varianceIncrement, BOUNDARY_EPS } from './boundary.js';
export {
  type TimestepSampler,
  makeTimestepSampler,
  dualOf,
  asymmetricWeights,
  boundaryWeights,
  lognormWeights,
  cltsProbabilities,
} from './timesteps.js';
export { lossWeights, changeAwareWeights, snr } from './weights.js';
