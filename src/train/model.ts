// From config to a native model with its diffusion tables.
import type { Config } from '../config/schema.js';
import { makeCoefs, toNativeTables, type DiffusionCoefs } from '../diffusion/coefs.js';
import { betasFor } from '../diffusion/schedule.js';
import { DiTModel, presetConfig, type ModelConfig } from '../native.js';
import { world } from '../parallel/world.js';

export function modelConfigOf(c: Pick<Config, 'model'>): ModelConfig {
  const m = c.model;
  const mc = presetConfig(m.name, {
    inputSize: m.input_size,
    inChannels: m.in_channels,
    numClasses: m.num_classes,
    classDropoutProb: m.class_dropout_prob,
    learnSigma: m.learn_sigma,
    mlpRatio: m.mlp_ratio,
  });
  if (m.depth !== null) mc.depth = m.depth;
  if (m.hidden_size !== null) mc.hiddenSize = m.hidden_size;
  if (m.num_heads !== null) mc.numHeads = m.num_heads;
  return mc;
}

export function coefsOf(c: Pick<Config, 'diffusion'>): DiffusionCoefs {
  return makeCoefs(betasFor(c.diffusion.schedule, c.diffusion.diffusion_steps));
}

/** A freshly initialised model (DiT's init from `seed`) with the tables set. */
export function createModel(
  c: Pick<Config, 'model' | 'diffusion' | 'device' | 'threads' | 'cuda_math' | 'seed'> & Partial<Pick<Config, 'recompute_activations'>>,
): { model: DiTModel; coefs: DiffusionCoefs } {
  const model = DiTModel.create({
    config: modelConfigOf(c),
    device: c.device,
    threads: c.threads > 0 ? c.threads : undefined,
    cudaMath: c.cuda_math,
    // one process per GPU: the local rank picks the device (data parallelism)
    ...(c.device === 'cuda' && world().distributed ? { cudaDevice: world().localRank } : {}),
    seed: c.seed,
    noiseSeed: c.seed,
    recompute: c.recompute_activations ?? false,
  });
  const coefs = coefsOf(c);
  model.setTables(toNativeTables(coefs));
  return { model, coefs };
}
