// TensorBoard event files written without TensorFlow.
export { crc32c, maskCrc } from './crc32c.js';
export { ProtoWriter } from './proto.js';
export { EventWriter, tfRecord, type Histogram } from './events.js';
export { bucketTag, timestepHistogram, writeEvalScalars, writeMetricsLine } from './training.js';
