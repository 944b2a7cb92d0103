export { train, lrAt, dropLabels, type TrainOptions, type TrainResult } from './loop.js';
export { createModel, modelConfigOf, coefsOf } from './model.js';
export { bucketEdges, NUM_BUCKETS, type MetricsLine } from './metrics.js';
