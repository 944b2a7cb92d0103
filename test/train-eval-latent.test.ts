// FID during training of a latent model: every evaluation decodes the sampled
// latents with the VAE of vae.path (as -p inference does) and scores the images;
// without a VAE the run is refused before its first step.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';

import { useAddon } from './helpers-e2e.js';
import { writeTinyVae } from './helpers/tiny-vae.js';

useAddon();
const CLI = path.resolve('src/cli.ts');
const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { encoding: 'utf8', env: process.env });

test('a latent model logs FID during training on VAE-decoded samples', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'train-eval-latent-'));
  const images = path.join(dir, 'images');
  mkdirSync(images);
  for (let k = 0; k < 8; k++) {
    const rgb = Buffer.alloc(16 * 16 * 3);
    for (let i = 0; i < 256; i++) rgb[i * 3 + (k % 3)] = 60 + ((i * 7 + k * 31) % 180);
    writeFileSync(path.join(images, `${k}.png`), await sharp(rgb, { raw: { width: 16, height: 16, channels: 3 } }).png().toBuffer());
  }
  const vae = await writeTinyVae(path.join(dir, 'vae'), { naming: 'diffusers', seed: 5 });
  const exp = path.join(dir, 'exp');
  const file = path.join(dir, 'latent.yaml');
  writeFileSync(file, `
experiment_dir: ${exp}
seed: 2
log_every: 5
ckpt_every: 0
max_training_steps: 6
threads: 1
sample_at_end: false
tensorboard: false
model: {name: DiT-Ti/4, input_size: 8, in_channels: 4, num_classes: 0, depth: 1, hidden_size: 32, num_heads: 2}
data: {name: latents, root: ${dir}/latents, image_size: 8, channels: 4, num_classes: 0, batch_size: 4}
encode: {images: ${images}, image_size: 16, shard_size: 8}
vae: {path: ${vae}, chunk: 4}
diffusion: {diffusion_steps: 100}
optimizer: {lr: 2.0e-3, warmup_steps: 2}
inference: {per_proc_batch_size: 4}
evaluate: {every: 3, num_samples: 6, sampler: ddim3, feature_space: pixels-4x4, num_reference: 8}
`);
  const enc = run(['encode', '-c', file]);
  assert.equal(enc.status, 0, enc.stderr.slice(-2000));
  const tr = run(['-c', file]);
  assert.equal(tr.status, 0, `${tr.stdout.slice(-2000)}\n${tr.stderr.slice(-2000)}`);
  const evals = readFileSync(path.join(exp, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; eval?: { fid: number; num_samples: number; feature_space: string } })
    .filter((r) => r.eval);
  assert.deepEqual(evals.map((r) => r.step), [3, 6]);
  for (const r of evals) {
    assert.equal(r.eval!.num_samples, 6);
    assert.equal(r.eval!.feature_space, 'pixels-4x4');
    assert.ok(Number.isFinite(r.eval!.fid) && r.eval!.fid > 0, `FID ${r.eval!.fid}`);
  }
  assert.notEqual(evals[0].eval!.fid, evals[1].eval!.fid, 'the weights changed between the evaluations');

  // without vae.path the latents cannot become images: refused before training, naming the key
  const none = run(['-c', file, 'vae.path=null', `experiment_dir=${exp}-novae`]);
  assert.notEqual(none.status, 0);
  assert.match(none.stderr, /vae\.path: FID during training \(evaluate\.every\) decodes the sampled latents/);
});
