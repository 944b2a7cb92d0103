// A model for sampling, built from the checkpoint's own config (its network and
// diffusion schedule are what the weights belong to), loaded with its weights.
import path from 'node:path';

import { STATE_FILE, checkStoredConfig, loadCheckpoint, readState, useCheckpoint } from '../checkpoint/index.js';
import type { Config } from '../config/schema.js';
import type { DiffusionCoefs } from '../diffusion/coefs.js';
import type { DiTModel } from '../native.js';
import { createModel } from '../train/model.js';

export interface GenerationModel {
  model: DiTModel;
  coefs: DiffusionCoefs;
  ckpt: string;
  step: number;
  /** the config the checkpoint was trained with */
  trained: Config;
}

export function loadForGeneration(c: Config, spec: string | null, warn?: (msg: string) => void): GenerationModel {
  // "latest" falls back past a damaged newest checkpoint; the model is built
  // from each candidate's own (validated) config.
  const { value } = useCheckpoint(spec, c.experiment_dir, (ckpt) => {
    const state = readState(ckpt);
    const trained = checkStoredConfig(state.config, path.join(ckpt, STATE_FILE)) as unknown as Config;
    const { model, coefs } = createModel({
      model: trained.model,
      diffusion: trained.diffusion,
      device: c.device,
      threads: c.threads,
      cuda_math: c.cuda_math,
      seed: c.seed,
    });
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
