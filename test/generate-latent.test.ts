// Sampling a latent model: clip_denoised's default (never clip latents), the
// division by vae.scale_factor, and the configs that say so.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { loadConfig } from '../src/config/index.js';
import { clipDenoisedFor, isLatentModel, unscaleLatents } from '../src/generate/decode.js';

const model = (inChannels: number, data: string) =>
  ({ model: { config: { inChannels } }, trained: { data: { name: data } } }) as unknown as Parameters<typeof isLatentModel>[0];

test('clip_denoised: null clips pixel models and never latent models; an explicit value wins', () => {
  assert.equal(clipDenoisedFor(model(3, 'synthetic'), { clip_denoised: null }), true);
  assert.equal(clipDenoisedFor(model(4, 'latents'), { clip_denoised: null }), false);
  assert.equal(clipDenoisedFor(model(3, 'latents'), { clip_denoised: null }), false); // trained on latents
  assert.equal(clipDenoisedFor(model(4, 'synthetic'), { clip_denoised: null }), false); // 4 channels are not an image
  assert.equal(clipDenoisedFor(model(4, 'latents'), { clip_denoised: true }), true);
  assert.equal(clipDenoisedFor(model(3, 'image_folder'), { clip_denoised: false }), false);
});

test('latents are divided by vae.scale_factor before decoding (and in latents.npy)', () => {
  const x = Float32Array.from([0.18215, -0.3643, 1]);
  const u = unscaleLatents(x, 0.18215);
  assert.ok(Math.abs(u[0] - 1) < 1e-6 && Math.abs(u[1] + 2) < 1e-6 && Math.abs(u[2] - 1 / 0.18215) < 1e-5);
  assert.notEqual(u, x);
});

test('the 256x256 latent configs never clip and name the VAE and the shard folder', () => {
  for (const f of ['configs/imagenet256/speed/dit_xl2.yaml', 'configs/ffhq256/baseline/dit_s2.yaml', 'configs/metfaces256/speed/dit_b2.yaml']) {
    for (const phase of ['sample', 'inference'] as const) {
      const c = loadConfig(f, { phase }).config;
      assert.equal(c[phase].clip_denoised, false, `${f} ${phase}`);
      assert.equal(c.data.name, 'latents');
      assert.match(c.vae.path ?? '', /\.safetensors$/);
      assert.equal(c.vae.scale_factor, 0.18215);
      assert.equal(c.encode.image_size, 256);
      assert.equal(c.model.input_size * 8, 256);
    }
  }
  assert.equal(loadConfig('configs/imagenet256/baseline/dit_xl2.yaml').config.recompute_activations, true);
  assert.equal(loadConfig('configs/metfaces256/speed/dit_s2.yaml').config.model.num_classes, 0);
});
