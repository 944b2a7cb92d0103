// -p inference: inference.num_samples images as PNGs plus samples.npz
// (arr_0 uint8 [N, H, W, C], arr_1 int64 labels), the layout the ADM / guided-
// diffusion FID evaluator reads. Labels are drawn uniformly from the seeded
// generator, as DiT's sample_ddp.py does. A latent model's samples are divided
// by vae.scale_factor and decoded with the VAE (vae.path) first, so the outputs
// are the same as for a pixel model; inference.save_latents also keeps the
// latents (latents.npy: UNSCALED VAE latents, i.e. divided by vae.scale_factor,
// ready for any SD VAE decoder).
import { mkdirSync } from 'node:fs';
import path from 'node:path';

import { stepDirName } from '../checkpoint/index.js';
import type { Config } from '../config/schema.js';
import { writeFileAtomic, writeNpy } from '../io/npy.js';
import { writeNpz } from '../io/npz.js';
import { Progress } from '../progress.js';
import { Rng } from '../rng.js';
import { isLatentModel, latentDecoder, unscaleLatents, type LatentDecoder } from './decode.js';
import { encodePng, toUint8NHWC } from './images.js';
import { emaWarning } from './ema-check.js';
import { loadForGeneration } from './model.js';
import { generate } from './sample.js';

export interface InferenceResult {
  dir: string;
  npz: string | null;
  /** latents.npy when written (save_latents, or a latent model without a VAE) */
  latents: string | null;
  count: number;
  ckpt: string;
  seconds: number;
}

export async function runInference(c: Config, opts: { ckpt?: string | null; log?: (m: string) => void } = {}): Promise<InferenceResult> {
  const log = opts.log ?? ((m: string) => process.stdout.write(m + '\n'));
  const started = Date.now();
  const s = c.inference;
  const g = loadForGeneration(c, opts.ckpt !== undefined ? opts.ckpt : s.ckpt, log);
  let dec: LatentDecoder | null = null;
  try {
    const emaNote = emaWarning(g.trained, g.step, s.use_ema);
    if (emaNote) log(emaNote);
    const { inChannels: C, inputSize: H, numClasses } = g.model.config;
    const N = s.num_samples;
    const rng = new Rng(c.seed * 4 + 3);
    const labels = Int32Array.from({ length: N }, () => (numClasses > 0 ? rng.int(numClasses) : 0));
    const dir = s.out ?? path.join(c.experiment_dir, `inference-${stepDirName(g.step)}`);
    mkdirSync(dir, { recursive: true });
    const latent = isLatentModel(g);
    if (latent) dec = await latentDecoder(c, g, log);
    // Image side and channels of the outputs.
    const IC = dec ? dec.vae.config.outChannels : C;
    const IH = dec ? H * dec.vae.downFactor : H;
    const isImage = IC === 3 || IC === 1;
    const keepLatents = latent && (s.save_latents || !isImage);
    log(`inference: ${N} images from ${g.ckpt}, ${s.sampler} ${s.steps}, guidance ${s.guidance_scale}, batches of ${s.per_proc_batch_size}` +
      (dec ? `, decoded by ${path.basename(dec.vae.file)} (latents / ${dec.scale})` : latent ? ' (latents: no vae.path, not decoded)' : '') + ` -> ${dir}`);
    const progress = new Progress('inference', N);
    const imgs = new Uint8Array(isImage ? N * IH * IH * IC : 0);
    const latents = keepLatents ? new Float32Array(N * C * H * H) : undefined;
    const B = s.per_proc_batch_size;
    for (let a = 0; a < N; a += B) {
      const y = labels.slice(a, Math.min(N, a + B));
      const x = await generate(g, s, y, B);
      if (latents) latents.set(unscaleLatents(x, c.vae.scale_factor), a * C * H * H);
      if (isImage) {
        const pix = dec ? await dec.vae.decode(unscaleLatents(x, dec.scale), y.length, H, H, { chunk: c.vae.chunk }) : x;
        const u8 = toUint8NHWC(pix, y.length, IC, IH, IH);
        imgs.set(u8, a * IH * IH * IC);
        if (s.save_png) {
          for (let i = 0; i < y.length; i++) {
            const one = u8.subarray(i * IH * IH * IC, (i + 1) * IH * IH * IC);
            writeFileAtomic(path.join(dir, `${String(a + i).padStart(6, '0')}.png`), [encodePng(one, IH, IH, IC)]);
          }
        }
      }
      progress.tick(a + y.length);
      if (!process.stderr.isTTY) log(`inference ${a + y.length}/${N}${dec ? ' (sampled and decoded)' : ''}`);
    }
    progress.done();
    let npz: string | null = null;
    if (isImage) {
      npz = path.join(dir, 'samples.npz');
      writeNpz(npz, {
        arr_0: { dtype: 'uint8', shape: [N, IH, IH, IC], data: imgs },
        arr_1: { dtype: 'int64', shape: [N], data: BigInt64Array.from(labels, (v) => BigInt(v)) },
      });
      log(`samples: ${npz} (arr_0 uint8 [${N}, ${IH}, ${IH}, ${IC}], arr_1 int64 labels)`);
    }
    let latFile: string | null = null;
    if (latents) {
      latFile = path.join(dir, 'latents.npy');
      writeNpy(latFile, { dtype: 'float32', shape: [N, C, H, H], data: latents });
      writeNpy(path.join(dir, 'labels.npy'), { dtype: 'int64', shape: [N], data: BigInt64Array.from(labels, (v) => BigInt(v)) });
      log(`latents: ${latFile} (unscaled: the model's samples divided by vae.scale_factor ${c.vae.scale_factor})` +
        (isImage ? '' : '; set vae.path to decode them to images for -p evaluate'));
    }
    return { dir, npz, latents: latFile, count: N, ckpt: g.ckpt, seconds: (Date.now() - started) / 1000 };
  } finally {
    dec?.dispose();
    g.model.dispose();
  }
}
