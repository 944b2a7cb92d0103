// A model for sampling, built from the checkpoint's own config (its network and
// diffusion schedule are what the weights belong to), loaded with its weights.
import { loadCheckpoint, readState, resolveCheckpoint } from '../checkpoint/index.js';
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

export function loadForGeneration(c: Config, spec: string | null): GenerationModel {
  const ckpt = resolveCheckpoint(spec, c.experiment_dir);
  const state = readState(ckpt);
  const trained = state.config as Config;
  const { model, coefs } = createModel({
    model: trained.model,
    diffusion: trained.diffusion,
    device: c.device,
    threads: c.threads,
    cuda_math: c.cuda_math,
    seed: c.seed,
  });
  try {
    loadCheckpoint(model, ckpt, { model: true, ema: true, optimizer: false });
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, coefs, ckpt, step: state.step, trained };
}
