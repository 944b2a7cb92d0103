// Public face of the evaluation package (metrics, feature spaces, loaders).
export {
  runEvaluate,
  evaluateFeatures,
  formatEvalTable,
  writeEvalJson,
  checkFeatureSpaceAccuracy,
  classifierAccuracy,
  realFloor,
  DEFAULT_MIN_FEATURE_ACCURACY,
  type EvaluateOptions,
  type EvaluateFeaturesOptions,
  type EvalResult,
  type FeatureAccuracyCheck,
} from './evaluate.js';
export {
  type FeatureSpace,
  type FeatureOutputs,
  type ClassifierInfo,
  type AllFeatures,
  type ImageBatch,
  type FeatureSpaceResolver,
  DEFAULT_FEATURE_SPACE,
  pixelFeatureSpace,
  extractFeatures,
  extractAllFeatures,
  resolveFeatureSpace,
  registerFeatureSpaceResolver,
} from './features.js';
export { type GaussianStats, featureStats, frechetDistance, frechetDistanceParts } from './fid.js';
export { type KidOptions, type KidResult, kernelInceptionDistance, mmd2Unbiased, defaultKidSubsetSize } from './kid.js';
export { type InceptionScoreResult, inceptionScore, labelAccuracy, IS_SPLIT_SIZE } from './inception-score.js';
export { INCEPTION_SPACE, INCEPTION_DIMS, loadInceptionFeatureSpace } from './inception-space.js';
export { type PrdcOptions, type PrdcResult, precisionRecall } from './prdc.js';
export { type ReferenceStats, referenceFromFeatures, saveReferenceStats, loadReferenceStats, isReferenceStatsFile } from './reference.js';
export { type ImageSet, loadImageSet, loadPngFolder, imageSetFromArray, readSampleLabels } from './samples.js';
