export { runSample, generate, type SampleResult } from './sample.js';
export { runInference, type InferenceResult } from './inference.js';
export { loadForGeneration } from './model.js';
export { toUint8NHWC, encodePng, grid } from './images.js';
