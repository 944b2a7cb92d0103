// Shared by the train/e2e/cli tests: a tiny, fast config and the addon path.
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { loadConfig, type Config, type Phase } from '../src/config/index.js';

/** Points the native module at a built addon (build-e2e, else the default build/). */
export function useAddon(): void {
  if (process.env.SPEED_TRAIN_ADDON) return;
  for (const dir of ['build-e2e', 'build']) {
    const f = path.resolve(dir, 'Release', 'speed_native.node');
    if (existsSync(f)) { process.env.SPEED_TRAIN_ADDON = f; return; }
  }
}

export const TINY = `
experiment_dir: EXP
seed: 3
log_every: 1
ckpt_every: 0
max_training_steps: 10
threads: 1
sample_at_end: false
model: {name: DiT-Ti/4, input_size: 8, in_channels: 3, num_classes: 4, depth: 2, hidden_size: 32, num_heads: 2}
data: {name: synthetic, image_size: 8, channels: 3, num_classes: 4, num_samples: 64, batch_size: 8}
diffusion: {sampling: speed, weighting: speed, diffusion_steps: 100, tau: 70}
optimizer: {lr: 2.0e-3, warmup_steps: 2, max_grad_norm: 1.0}
ema: {decay: 0.9}
sample: {sampler: ddim, steps: ddim5, num_per_class: 2, guidance_scale: 2.0, batch_size: 8}
inference: {sampler: ddim, steps: ddim5, num_samples: 6, per_proc_batch_size: 4}
`;

const scratch: string[] = [];
process.on('exit', () => {
  // Test runs must not fill the disk: a run's checkpoints can reach hundreds of MB.
  if (!process.env.SPEED_TRAIN_KEEP_TMP) for (const d of scratch) rmSync(d, { recursive: true, force: true });
});

/** A fresh tmp folder, removed when this test process exits (SPEED_TRAIN_KEEP_TMP=1 keeps it). */
export function scratchDir(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  scratch.push(dir);
  return dir;
}

/** A tmp folder with tiny.yaml; returns the file and the experiment dir. */
export function tinyConfigFile(extra = ''): { file: string; exp: string } {
  const dir = scratchDir('st-e2e-');
  const exp = path.join(dir, 'exp');
  const file = path.join(dir, 'tiny.yaml');
  writeFileSync(file, TINY.replace('EXP', exp) + extra);
  return { file, exp };
}

export function tinyConfig(overrides: string[] = [], phase: Phase = 'train'): { config: Config; file: string; exp: string } {
  const { file, exp } = tinyConfigFile();
  return { config: loadConfig(file, { overrides, phase }).config, file, exp };
}
