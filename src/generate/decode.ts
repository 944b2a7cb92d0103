// Latent models: sampled latents (the model's space: VAE latents times
// vae.scale_factor) -> divided by the scale -> VAE decoder -> images in about
// [-1, 1], which the caller turns into PNGs and samples.npz exactly as for a
// pixel model.
import { existsSync } from 'node:fs';
import path from 'node:path';

import type { Config } from '../config/schema.js';
import { MANIFEST, readManifest } from '../data/latent-shards.js';
import { Progress } from '../progress.js';
import type { VAE } from '../vae/index.js';
import { loadConfiguredVae } from '../vae/configured.js';
import type { GenerationModel } from './model.js';

/** A model trained on latents (from its own config), or on images. */
export function isLatentModel(g: Pick<DecodedModel, 'trained' | 'model'>): boolean {
  const C = g.model.config.inChannels;
  return g.trained?.data?.name === 'latents' || (C !== 1 && C !== 3);
}

/** clip_denoised as set, or by default: clip pixels, never latents (DiT samples latents with clip_denoised=False). */
export function clipDenoisedFor(g: Pick<DecodedModel, 'trained' | 'model'>, s: Pick<Config['sample'], 'clip_denoised'>): boolean {
  return s.clip_denoised ?? !isLatentModel(g);
}

/** Model-space latents -> VAE latents (divided by vae.scale_factor), as a new array. */
export function unscaleLatents(x: Float32Array, scale: number): Float32Array {
  const out = new Float32Array(x.length);
  const inv = 1 / scale;
  for (let i = 0; i < x.length; i++) out[i] = x[i] * inv;
  return out;
}

export interface LatentDecoder {
  vae: VAE;
  scale: number;
  /** [n, zc, h, w] model-space latents -> [n, C, h f, w f] images */
  decode(x: Float32Array, n: number, label?: string): Promise<Float32Array>;
  dispose(): void;
}

/** The configured VAE as a decoder of this model's samples, or null when vae.path is not set. */
/** What the decoder needs of the model: its latent shape and the config it was trained with (whose data manifest names the VAE that encoded its latents). */
export type DecodedModel = Pick<GenerationModel, 'trained'> & { model: { config: { inChannels: number; inputSize: number } } };

export async function latentDecoder(c: Config, g: DecodedModel, log: (m: string) => void): Promise<LatentDecoder | null> {
  if (!c.vae.path) return null;
  const vae = await loadConfiguredVae(c, log);
  const { inChannels: zc, inputSize: h } = g.model.config;
  if (vae.config.latentChannels !== zc) {
    vae.dispose();
    throw new RangeError(`vae.path: the VAE has ${vae.config.latentChannels} latent channels, the checkpoint's model takes ${zc}`);
  }
  const scale = c.vae.scale_factor;
  // The latents were made by the VAE the training data's manifest names: say so if this is another file.
  const root = g.trained?.data?.root;
  if (root && existsSync(path.join(path.resolve(root), MANIFEST))) {
    try {
      const m = readManifest(path.resolve(root));
      if (m.vae.sha256 !== vae.sha256) log(`warning: vae.path ${vae.file} (sha256 ${vae.sha256.slice(0, 12)}…) is not the VAE that encoded the training data (${m.vae.file}, sha256 ${m.vae.sha256.slice(0, 12)}…)`);
      if (m.latent_scale !== scale) log(`warning: vae.scale_factor ${scale} differs from the training data's latent_scale ${m.latent_scale} (${root}/${MANIFEST})`);
    } catch { /* an unreadable manifest is the data set's problem, not sampling's */ }
  }
  return {
    vae,
    scale,
    async decode(x, n, label = 'decode') {
      const progress = new Progress(label, n);
      const imgs = await vae.decode(unscaleLatents(x, scale), n, h, h, { chunk: c.vae.chunk, onProgress: (d) => progress.tick(d) });
      progress.done();
      return imgs;
    },
    dispose: () => vae.dispose(),
  };
}
