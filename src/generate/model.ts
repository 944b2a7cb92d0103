// A model for sampling, built from the checkpoint's own config (its network and
// diffusion schedule are what the weights belong to), loaded with its weights.
import path from 'node:path';

import { STATE_FILE, checkStoredConfig, loadCheckpoint, readState, useCheckpoint } from '../checkpoint/index.js';
import { contradictions, describeInferred, isWeightsFile, loadWeightsFile, modelSectionFor, readWeightsFile } from '../checkpoint/weights-file.js';
import type { Config } from '../config/schema.js';
import { CheckpointError } from '../errors.js';
import type { DiffusionCoefs } from '../diffusion/coefs.js';
import { NativeError, type DiTModel } from '../native.js';
import { createModel, modelConfigOf } from '../train/model.js';

export interface GenerationModel {
  model: DiTModel;
  coefs: DiffusionCoefs;
  ckpt: string;
  step: number;
  /** the config the checkpoint was trained with */
  trained: Config;
}

/**
 * `spec`: a checkpoint directory, "latest"/null (the newest in experiment_dir;
 * "latest" falls back past a damaged newest checkpoint, with a warning), or a
 * bare DiT weights file (.safetensors), whose architecture is read off its
 * tensor shapes and whose diffusion schedule is the config's.
 */
export function loadForGeneration(
  c: Config, spec: string | null,
  log: (m: string) => void = (m) => process.stdout.write(m + '\n'),
  warn: (m: string) => void = (m) => process.stderr.write(m + '\n'),
): GenerationModel {
  if (isWeightsFile(spec)) return loadBareWeights(c, spec, log);
  // "latest" falls back past a damaged newest checkpoint; the model is built
  // from each candidate's own (validated) config.
  const { value } = useCheckpoint(spec, c.experiment_dir, (ckpt) => {
    const state = readState(ckpt);
    const stateFile = path.join(ckpt, STATE_FILE);
    const trained = checkStoredConfig(state.config, stateFile) as unknown as Config;
    // The schema checks each key; the addon checks how they combine (hidden_size a
    // multiple of num_heads, sizes it can index): a state.json that passes the first
    // and fails the second is a damaged checkpoint, named as such.
    const built = asCheckpointError(stateFile, () => {
      checkWeightsMatch(trained, ckpt);
      return createModel({
        model: trained.model,
        diffusion: trained.diffusion,
        device: c.device,
        threads: c.threads,
        cuda_math: c.cuda_math,
        seed: c.seed,
      });
    });
    const { model, coefs } = built;
    try {
      loadCheckpoint(model, ckpt, { model: true, ema: true, optimizer: false, note: warn });
    } catch (e) {
      model.dispose();
      throw e;
    }
    return { model, coefs, ckpt, step: state.step, trained };
  }, warn);
  return value;
}

function asCheckpointError<T>(stateFile: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof NativeError) throw new CheckpointError(stateFile, `its config cannot build a network: ${e.message}`);
    throw e;
  }
}

/**
 * The network state.json names against the tensor shapes in model.safetensors's
 * header, before the model is allocated: a state.json naming DiT-XL/2 beside
 * DiT-S weights would otherwise allocate gigabytes only to fail the shape check.
 */
export function checkWeightsMatch(trained: Config, ckpt: string): void {
  const file = path.join(ckpt, 'model.safetensors');
  const { arch } = readWeightsFile(file);
  const diff = contradictions(arch, modelConfigOf(trained));
  if (diff.length > 0) {
    throw new CheckpointError(path.join(ckpt, STATE_FILE), `its config (model.name ${trained.model.name}) does not match the tensors of ${file}: ` +
      `${diff.join('; ')}; state.json or the tensor files were replaced`);
  }
}

function loadBareWeights(c: Config, file: string, log: (m: string) => void): GenerationModel {
  const { arch } = readWeightsFile(file);
  const section = modelSectionFor(arch, c.model, file);
  // The weights define the network (as a checkpoint's state.json does); say where the config differs.
  const a = modelConfigOf({ model: section });
  const b = modelConfigOf(c);
  const differ = (Object.keys(a) as (keyof typeof a)[]).filter((k) => a[k] !== b[k]).map((k) => `${k} ${String(b[k])} -> ${String(a[k])}`);
  log(`weights: ${file}: inferred ${describeInferred(arch, section)}` + (differ.length ? `; differs from the config's model: ${differ.join(', ')}` : ''));
  const trained: Config = { ...c, model: section };
  const { model, coefs } = createModel({ ...trained, device: c.device, threads: c.threads, cuda_math: c.cuda_math, seed: c.seed });
  try {
    loadWeightsFile(model, file);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, coefs, ckpt: file, step: 0, trained };
}
