// The latent pipeline end to end through the CLI, with a tiny random-weight
// VAE (test/helpers/tiny-vae.ts): JPEG and PNG images -> `encode` -> train 20
// steps -> `-p sample` -> `-p inference` (decoded samples.npz + latents.npy)
// -> `-p evaluate`.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';

import { readManifest } from '../src/data/index.js';
import { labelColumnWidth, toUint8NHWC } from '../src/generate/images.js';
import { readNpy } from '../src/io/npy.js';
import { readNpz } from '../src/io/npz.js';
import { useAddon } from './helpers-e2e.js';
import { writeTinyVae } from './helpers/tiny-vae.js';

useAddon();
const CLI = path.resolve('src/cli.ts');
const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { encoding: 'utf8', env: process.env });
const ok = (r: ReturnType<typeof run>, what: string) => assert.equal(r.status, 0, `${what} failed:\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-3000)}`);

test('images (JPEG + PNG) -> encode -> train 20 steps -> sample -> inference -> evaluate, all through the CLI', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'latent-e2e-'));
  const images = path.join(dir, 'images');
  for (let k = 0; k < 12; k++) {
    const cls = k % 2 ? 'blue' : 'red';
    mkdirSync(path.join(images, cls), { recursive: true });
    const w = 18 + (k % 3) * 5, h = 16 + (k % 4) * 3;
    const rgb = Buffer.alloc(w * h * 3);
    for (let i = 0; i < w * h; i++) {
      const x = i % w, y = Math.floor(i / w);
      const v = 80 + ((x * 9 + y * 5 + k * 13) % 120);
      rgb[i * 3] = cls === 'red' ? v + 50 : 30; rgb[i * 3 + 1] = 40 + (y * 4) % 60; rgb[i * 3 + 2] = cls === 'blue' ? v + 50 : 30;
    }
    const s = sharp(rgb, { raw: { width: w, height: h, channels: 3 } });
    writeFileSync(path.join(images, cls, `${k}.${k % 3 === 0 ? 'png' : 'jpg'}`), k % 3 === 0 ? await s.png().toBuffer() : await s.jpeg({ quality: 90 }).toBuffer());
  }
  const vae = await writeTinyVae(path.join(dir, 'vae'), { naming: 'diffusers', seed: 5 });
  const exp = path.join(dir, 'exp');
  const file = path.join(dir, 'latent.yaml');
  writeFileSync(file, `
experiment_dir: ${exp}
seed: 2
log_every: 5
ckpt_every: 0
max_training_steps: 20
threads: 1
sample_at_end: false
model: {name: DiT-Ti/4, input_size: 8, in_channels: 4, num_classes: 2, depth: 2, hidden_size: 32, num_heads: 2}
data: {name: latents, root: ${dir}/latents, image_size: 8, channels: 4, num_classes: 2, batch_size: 4, random_flip: true}
encode: {images: ${images}, image_size: 16, flip: true, shard_size: 5}
vae: {path: ${vae}, chunk: 4}
diffusion: {sampling: speed, weighting: speed, diffusion_steps: 100, tau: 70}
optimizer: {lr: 2.0e-3, warmup_steps: 2}
ema: {decay: 0.9}
sample: {sampler: ddim, steps: ddim5, num_per_class: 2, guidance_scale: 2.0, batch_size: 4}
inference: {sampler: ddim, steps: ddim5, num_samples: 6, per_proc_batch_size: 4, save_latents: true}
evaluate: {num_reference: 8}
`);
  const enc = run(['encode', '-c', file]);
  ok(enc, 'encode');
  assert.match(enc.stdout, /encoded 12 images in [\d.]+ s \([\d.]+ images\/s\)/);
  const m = readManifest(path.join(dir, 'latents'));
  assert.deepEqual([m.count, m.shards.length, m.flip, m.latent_scale], [12, 3, true, 0.18215]);
  assert.deepEqual(m.shape, [4, 8, 8]);
  assert.match(m.vae.sha256, /^[0-9a-f]{64}$/);
  // Run again: complete, nothing re-encoded.
  const again = run(['encode', '-c', file]);
  ok(again, 'encode (rerun)');
  assert.match(again.stdout, /encoded 0 images .* 12 from earlier runs/);

  // The same random weights in the original LDM naming encode to the same bits.
  const ldm = await writeTinyVae(path.join(dir, 'vae-ldm'), { naming: 'ldm', seed: 5 });
  ok(run(['encode', '-c', file, `vae.path=${ldm}`, `encode.out=${dir}/latents-ldm`]), 'encode (LDM naming)');
  for (const s of m.shards) {
    assert.ok(readFileSync(path.join(dir, 'latents', s.file)).equals(readFileSync(path.join(dir, 'latents-ldm', s.file))), s.file);
  }

  const tr = run(['-c', file]);
  ok(tr, 'train');
  assert.match(tr.stdout, /trained 20\/20 steps/);
  assert.match(tr.stdout + tr.stderr, /latent shards .* 12 x \[4, 8, 8\] in 3 shards, scale 0\.18215/);

  const sm = run(['-c', file, '-p', 'sample']);
  ok(sm, 'sample');
  assert.doesNotMatch(sm.stdout, /is not the VAE that encoded/);
  // Another VAE file than the one that made the latents is pointed out.
  const other = run(['-c', file, '-p', 'sample', `vae.path=${await writeTinyVae(path.join(dir, 'vae-other'), { naming: 'diffusers', seed: 6 })}`, `sample.out=${dir}/other.png`]);
  ok(other, 'sample with another VAE');
  assert.match(other.stdout, /warning: vae\.path .* is not the VAE that encoded the training data/);
  const grid = await sharp(path.join(exp, 'samples', 'grid-0000020-ddim5-cfg2.png')).metadata();
  // 2 classes x 2 images of 16x16 (decoded from 8x8 latents), enlarged 4x, 2-pixel gaps,
  // after a column of row labels (the class indices 0 and 1).
  assert.deepEqual([grid.width, grid.height], [labelColumnWidth(['0', '1'], 64 + 2) + 2 * (64 + 2) + 2, 2 * (64 + 2) + 2]);

  // A wrong VAE file fails before sampling, naming the file.
  const badVae = run(['-c', file, '-p', 'sample', `vae.path=${dir}/missing.safetensors`, `sample.out=${dir}/bad.png`]);
  assert.equal(badVae.status, 1);
  assert.match(badVae.stderr, /missing\.safetensors/);
  assert.ok(!existsSync(path.join(dir, 'bad.png')));

  // Without a VAE the grid phase keeps the (unscaled) latents and says how to decode them.
  const noVae = run(['-c', file, '-p', 'sample', 'vae.path=null', `sample.out=${dir}/novae.png`]);
  ok(noVae, 'sample without a VAE');
  assert.deepEqual(readNpy(path.join(dir, 'novae.npy')).shape, [4, 4, 8, 8]);
  assert.match(noVae.stdout, /divided by vae\.scale_factor 0\.18215.*set vae\.path to decode/);

  const inf = run(['-c', file, '-p', 'inference']);
  ok(inf, 'inference');
  const idir = path.join(exp, 'inference-0000020');
  const npz = readNpz(path.join(idir, 'samples.npz'));
  assert.deepEqual(npz.arr_0.shape, [6, 16, 16, 3]);
  assert.equal(npz.arr_0.dtype, 'uint8');
  assert.deepEqual(npz.arr_1.shape, [6]);
  assert.ok(existsSync(path.join(idir, '000005.png')));
  // latents.npy is unscaled: decoding it with the VAE gives exactly samples.npz.
  const lat = readNpy(path.join(idir, 'latents.npy'));
  assert.deepEqual(lat.shape, [6, 4, 8, 8]);
  const { VAE } = await import('../src/vae/index.js');
  const v = await VAE.load(vae, { threads: 1 });
  try {
    const img = await v.decode(lat.data as Float32Array, 6, 8, 8);
    assert.deepEqual(toUint8NHWC(img, 6, 3, 16, 16), npz.arr_0.data);
  } finally {
    v.dispose();
  }

  const ev = run(['-c', file, '-p', 'evaluate']);
  ok(ev, 'evaluate');
  const evj = JSON.parse(readFileSync(path.join(exp, 'eval.json'), 'utf8')) as Record<string, unknown>;
  assert.ok(JSON.stringify(evj).includes('fid'), JSON.stringify(evj).slice(0, 300));
  assert.match(ev.stdout, /reference: 8 images 16x16x3 from image folder/);
});

test('encode survives kill -9: the rerun skips the complete shards and ends bitwise equal to an uninterrupted run', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'latent-kill-'));
  const images = path.join(dir, 'images');
  mkdirSync(images);
  for (let k = 0; k < 40; k++) {
    const rgb = Buffer.alloc(70 * 64 * 3).map((_, i) => (i * (k + 1) * 7 + k * 31) % 256);
    writeFileSync(path.join(images, `${String(k).padStart(2, '0')}.jpg`), await sharp(rgb, { raw: { width: 70, height: 64, channels: 3 } }).jpeg().toBuffer());
  }
  const vae = await writeTinyVae(path.join(dir, 'vae'), { naming: 'diffusers', seed: 9, config: { blockOutChannels: [32, 64], normNumGroups: 8 } });
  const file = path.join(dir, 'enc.yaml');
  writeFileSync(file, `threads: 1\ndata: {name: latents, root: ${dir}/lat, num_classes: 0}\nmodel: {in_channels: 4, input_size: 32}\n` +
    `encode: {images: ${images}, image_size: 64, shard_size: 4, flip: true}\nvae: {path: ${vae}, chunk: 2, sample_posterior: true}\n`);
  ok(run(['encode', '-c', file, `encode.out=${dir}/ref`]), 'uninterrupted encode');

  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'encode', '-c', file], { stdio: 'ignore', env: process.env });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const lat = path.join(dir, 'lat');
  const t0 = Date.now();
  while (!existsSync(path.join(lat, 'shard-00001.npy')) && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 10));
  child.kill('SIGKILL');
  await exited;
  assert.ok(!existsSync(path.join(lat, 'manifest.json')), 'killed before the end (else the test proves nothing)');
  // What a kill inside a shard write leaves behind: removed by the rerun.
  writeFileSync(path.join(lat, '.shard-00007.npy.12345.1700000000000.tmp'), 'partial');
  const rerun = run(['encode', '-c', file]);
  ok(rerun, 'encode after kill -9');
  assert.match(rerun.stdout, /resuming: \d+ shards done/);
  assert.match(rerun.stdout, /removed 1 temporary files of an interrupted run/);
  assert.deepEqual(readdirSync(lat).filter((n) => n.endsWith('.tmp')), []);
  const m = readManifest(lat);
  assert.equal(m.count, 40);
  for (const s of m.shards) {
    for (const f of [s.file, s.labels, s.flip!]) assert.ok(readFileSync(path.join(lat, f)).equals(readFileSync(path.join(dir, 'ref', f))), f);
  }
});
