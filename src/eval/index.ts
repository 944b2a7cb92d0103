// Public face of the evaluation package (metrics, feature spaces, loaders).
export { runEvaluate, evaluateFeatures, formatEvalTable, writeEvalJson, type EvaluateOptions, type EvalResult } from './evaluate.js';
export {
  type FeatureSpace,
  type ImageBatch,
  type FeatureSpaceResolver,
  DEFAULT_FEATURE_SPACE,
  pixelFeatureSpace,
  extractFeatures,
  resolveFeatureSpace,
  registerFeatureSpaceResolver,
} from './features.js';
export { type GaussianStats, featureStats, frechetDistance, frechetDistanceParts } from './fid.js';
export { type KidOptions, type KidResult, kernelInceptionDistance, mmd2Unbiased } from './kid.js';
export { type PrdcOptions, type PrdcResult, precisionRecall } from './prdc.js';
export { type ReferenceStats, referenceFromFeatures, saveReferenceStats, loadReferenceStats, isReferenceStatsFile } from './reference.js';
export { type ImageSet, loadImageSet, loadPngFolder, imageSetFromArray } from './samples.js';
