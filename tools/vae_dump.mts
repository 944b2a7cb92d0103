// Writes a random-weight VAE file (test/helpers/tiny-vae.ts) in the asked naming and
// dtype, runs speed-train's native VAE on it (encoder moments, decoder) and writes a dump
// for tools/torch_vae.py, which loads the SAME weight file into its own PyTorch model.
//   node --import tsx tools/vae_dump.mts --out DUMP --dir DIR [--case NAME]
//        [--naming diffusers|legacy|ldm|full] [--dtype F32|F16|BF16] [--config JSON]
//        [--size 64] [--batch 2] [--seed 1] [--threads 2] [--weights-only (write the VAE file, print its path)]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { encodeSafetensors, f32Tensor } from '../src/io/safetensors.js';
import { VAE } from '../src/vae/index.js';
import { writeTinyVae } from '../test/helpers/tiny-vae.js';

const { values: a } = parseArgs({
  options: {
    out: { type: 'string' },
    dir: { type: 'string' },
    case: { type: 'string', default: '' },
    naming: { type: 'string', default: 'diffusers' },
    dtype: { type: 'string', default: 'F32' },
    config: { type: 'string', default: '{}' },
    size: { type: 'string', default: '64' },
    batch: { type: 'string', default: '2' },
    seed: { type: 'string', default: '1' },
    threads: { type: 'string', default: '2' },
    'weights-only': { type: 'boolean', default: false },
  },
});
if (!a.out || !a.dir) throw new Error('--out and --dir are required');
const naming = a.naming === 'ldm' || a.naming === 'full' ? 'ldm' : 'diffusers';
const file = writeTinyVae(a.dir, {
  naming,
  seed: Number(a.seed),
  dtype: a.dtype as 'F32' | 'F16' | 'BF16',
  config: JSON.parse(a.config!),
  legacyAttention: a.naming === 'legacy',
  fullCheckpoint: a.naming === 'full',
});
if (a['weights-only']) {
  console.log(file);
  process.exit(0);
}
const vae = await VAE.load(file, { threads: Number(a.threads) });
const n = Number(a.batch), S = Number(a.size), f = vae.downFactor, c = vae.config;
const x = Float32Array.from({ length: n * c.inChannels * S * S }, (_, i) => Math.sin(i * 0.731 + 0.3) * 0.95);
const z = Float32Array.from({ length: n * c.latentChannels * (S / f) * (S / f) }, (_, i) => Math.cos(i * 1.37) * 1.5);
const t0 = performance.now();
const moments = await vae.encodeMoments(x, n, S, S);
const t1 = performance.now();
const decoded = await vae.decode(z, n, S / f, S / f);
const t2 = performance.now();
const cfg = {
  in_channels: c.inChannels,
  out_channels: c.outChannels,
  latent_channels: c.latentChannels,
  block_out_channels: c.blockOutChannels,
  layers_per_block: c.layersPerBlock,
  norm_num_groups: c.normNumGroups,
};
writeFileSync(
  a.out,
  Buffer.concat(
    encodeSafetensors(
      [
        ['input.images', f32Tensor(x, [n, c.inChannels, S, S])],
        ['input.z', f32Tensor(z, [n, c.latentChannels, S / f, S / f])],
        ['output.moments', f32Tensor(moments, [n, 2 * c.latentChannels, S / f, S / f])],
        ['output.decoded', f32Tensor(decoded, [n, c.outChannels, S, S])],
      ],
      { weights: file, config: JSON.stringify(cfg), case: a.case!, dtype: a.dtype! },
    ),
  ),
);
console.log(JSON.stringify({ kind: 'vae_dump', case: a.case, encode_ms: t1 - t0, decode_ms: t2 - t1 }));
vae.dispose();
