// The VAE a config names (vae.path), loaded on the config's device.
import path from 'node:path';

import type { Config } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import type { VAE } from './index.js';

/** vae.path resolved, or a ConfigError when it is not set. */
export function configuredVaePath(c: Pick<Config, 'vae'>): string {
  if (!c.vae.path) {
    throw new ConfigError('vae.path', "not set: the VAE weight file (.safetensors, e.g. stabilityai/sd-vae-ft-ema's diffusion_pytorch_model.safetensors; see docs/latent.md)");
  }
  return path.resolve(c.vae.path);
}

export async function loadConfiguredVae(c: Pick<Config, 'vae' | 'device' | 'threads' | 'cuda_math'>, log: (m: string) => void): Promise<VAE> {
  const file = configuredVaePath(c);
  const { VAE } = await import('./index.js');
  return VAE.load(file, { device: c.device, threads: c.threads || undefined, cudaMath: c.cuda_math, log });
}
