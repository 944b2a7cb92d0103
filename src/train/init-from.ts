// model.init_from: training that starts from existing weights (fine-tuning a
// released DiT, or continuing from another run with a fresh optimizer).
import { existsSync, statSync } from 'node:fs';

import { loadCheckpoint } from '../checkpoint/index.js';
import { contradictions, describeInferred, isWeightsFile, loadWeightsFile, modelSectionFor, readWeightsFile } from '../checkpoint/weights-file.js';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import type { DiTModel } from '../native.js';

/** Loads `c.model.init_from` into the raw and EMA weights of `model`; the optimizer starts fresh. */
export function initFrom(model: DiTModel, c: Config, log: (m: string) => void): void {
  const src = c.model.init_from;
  if (!src) return;
  if (isWeightsFile(src)) {
    const { arch } = readWeightsFile(src);
    const bad = contradictions(arch, model.config);
    if (bad.length > 0) {
      const fit = modelSectionFor(arch, c.model, src);
      const keys = [`model.name=${fit.name}`, `model.input_size=${fit.input_size}`, `model.in_channels=${fit.in_channels}`, `model.num_classes=${fit.num_classes}`,
        `model.learn_sigma=${fit.learn_sigma}`, ...(fit.depth !== null ? [`model.depth=${fit.depth}`, `model.hidden_size=${fit.hidden_size}`] : [])];
      throw new ConfigError('model.init_from', `${src} does not fit the configured model: ${bad.join('; ')}. The weights are ${describeInferred(arch, fit)} (${keys.join(' ')})`);
    }
    loadWeightsFile(model, src);
    log(`init_from: ${src}: ${describeInferred(arch, modelSectionFor(arch, c.model, src))}; loaded into the weights and the EMA (fresh optimizer)`);
    return;
  }
  if (existsSync(src) && statSync(src).isDirectory()) {
    loadCheckpoint(model, src, { model: true, ema: true, optimizer: false });
    log(`init_from: ${src}: weights and EMA of that checkpoint (fresh optimizer, step 0)`);
    return;
  }
  throw new ConfigError('model.init_from', `${JSON.stringify(src)} is neither a .safetensors weights file nor a checkpoint directory`);
}
