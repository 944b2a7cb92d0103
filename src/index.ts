// speed-train's public API (the CLI in src/cli.ts is built on these).
export * from './errors.js';
export { loadConfig, configToYaml, describeSchema, SCHEMA, type Config, type Phase, type LoadOptions } from './config/index.js';
export { train, createModel, lrAt, type TrainOptions, type TrainResult, type MetricsLine } from './train/index.js';
export { runSample, runInference, loadForGeneration } from './generate/index.js';
export { makeDataset, BatchLoader, SyntheticDataset, ImageFolderDataset, LatentsDataset, type Dataset, type Batch } from './data/index.js';
export {
  writeCheckpoint, loadCheckpoint, readState, resolveCheckpoint, listCheckpoints, stepDirName, useCheckpoint, verifyCheckpoint, type CheckpointState,
} from './checkpoint/index.js';
export {
  readSafetensors, encodeSafetensors, SafetensorsReader, readSafetensorsHeader, safetensorsParts, writeSafetensorsTo, type LazyTensor,
} from './io/safetensors.js';
export { DiTModel, presetConfig, nativeInfo, runBench, NativeError } from './native.js';
export { convertPt, type ConvertOptions, type ConvertResult } from './convert/index.js';
export { inferDiT, readWeightsFile, type InferredDiT } from './checkpoint/weights-file.js';
export { ConfigErrorList } from './config/index.js';
export { VAE, sha256File, type VaeConfig, type VaeLoadOptions, type VaeEncodeOptions, type VaeDecodeOptions } from './vae/index.js';
