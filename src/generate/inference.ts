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
import { spacedTimesteps } from '../diffusion/respace.js';
import { gatherBytes, quietStream, world } from '../dist/index.js';
import { SpeedTrainError } from '../errors.js';

function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export interface InferenceResult {
  dir: string;
  npz: string | null;
  /** latents.npy when written (save_latents, or a latent model without a VAE) */
  latents: string | null;
  count: number;
  ckpt: string;
  seconds: number;
}

export async function runInference(c: Config, opts: { ckpt?: string | null; log?: (m: string) => void; progressStream?: NodeJS.WriteStream } = {}): Promise<InferenceResult> {
  const w = world();
  const log = !w.isRoot ? () => {} : opts.log ?? ((m: string) => process.stdout.write(m + '\n'));
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
    if (w.isRoot) mkdirSync(dir, { recursive: true });
    const latent = isLatentModel(g);
    if (latent) dec = await latentDecoder(c, g, log); // every rank decodes its own batches
    // Image side and channels of the outputs.
    const IC = dec ? dec.vae.config.outChannels : C;
    const IH = dec ? H * dec.vae.downFactor : H;
    const isImage = IC === 3 || IC === 1;
    const keepLatents = latent && (s.save_latents || !isImage);
    log(`inference: ${N} images${w.distributed ? ` on ${w.size} processes` : ''} from ${g.ckpt}, ${s.sampler} ${s.steps}, guidance ${s.guidance_scale}, batches of ${s.per_proc_batch_size}` +
      (dec ? `, decoded by ${path.basename(dec.vae.file)} (latents / ${dec.scale})` : latent ? ' (latents: no vae.path, not decoded)' : '') + ` -> ${dir}`);
    const progress = new Progress('inference', N, w.isRoot ? (opts.progressStream ?? process.stderr) : quietStream(), 0);
    const B = s.per_proc_batch_size;
    // Data parallelism (src/dist): batch k runs on rank k % size with the noise
    // a single process would draw for it (every batch consumes a known number
    // of Philox blocks), so the gathered samples are bitwise those of one process.
    const per = C * H * H;
    const samplerSteps = spacedTimesteps(g.coefs.T, s.steps).length;
    const noise0 = g.model.getNoiseState();
    const mine: Uint8Array[] = [];
    let offset = noise0.offset;
    for (let k = 0, a = 0; a < N; k++, a += B) {
      const y = labels.slice(a, Math.min(N, a + B));
      const blocks = Math.ceil((y.length * per) / 4) * samplerSteps; // x_T, then one draw per step but the last
      if (k % w.size === w.rank) {
        g.model.setNoiseState({ seed: noise0.seed, offset });
        // per sampler step; the other ranks' batches run alongside (about size x as many images)
        const x = await generate(g, s, y, B, (d) => progress.tick(Math.min(N, a + d * w.size)));
        const after = g.model.getNoiseState().offset;
        if (after !== offset + blocks) {
          throw new SpeedTrainError(`inference: batch ${k} drew ${after - offset} noise blocks, the split over processes assumed ${blocks}; ` +
            'the sampler changed how it draws noise (src/generate/inference.ts must follow)');
        }
        // Per batch: its unscaled latents (when kept), then its uint8 images.
        if (keepLatents) {
          const lat = unscaleLatents(x, c.vae.scale_factor);
          mine.push(new Uint8Array(lat.buffer, lat.byteOffset, lat.byteLength));
        }
        if (isImage) {
          const pix = dec ? await dec.vae.decode(unscaleLatents(x, dec.scale), y.length, H, H, { chunk: c.vae.chunk }) : x;
          mine.push(toUint8NHWC(pix, y.length, IC, IH, IH));
        }
        const done = Math.min(N, a + y.length * w.size);
        progress.tick(done);
      }
      offset += blocks;
    }
    const parts = gatherBytes(concatBytes(mine), 0);
    if (!w.isRoot) return { dir, npz: null, latents: null, count: 0, ckpt: g.ckpt, seconds: (Date.now() - started) / 1000 };
    // rank r's buffer holds its batches k = r, r + size, ... in order
    const imgBytes = isImage ? IH * IH * IC : 0;
    const latBytes = keepLatents ? per * 4 : 0;
    const imgs = new Uint8Array(N * imgBytes);
    const latents = keepLatents ? new Float32Array(N * per) : undefined;
    const latU8 = latents ? new Uint8Array(latents.buffer) : undefined;
    const read = parts.map(() => 0);
    const take = (r: number, n: number): Uint8Array => {
      if (read[r] + n > parts[r].length) throw new SpeedTrainError(`inference: rank ${r} sent ${parts[r].length} bytes, fewer than its batches need`);
      const piece = parts[r].subarray(read[r], read[r] + n);
      read[r] += n;
      return piece;
    };
    for (let k = 0, a = 0; a < N; k++, a += B) {
      const r = k % w.size;
      const n = Math.min(N, a + B) - a;
      if (latU8) latU8.set(take(r, n * latBytes), a * latBytes);
      if (isImage) imgs.set(take(r, n * imgBytes), a * imgBytes);
    }
    if (isImage && s.save_png) {
      for (let i = 0; i < N; i++) {
        const one = imgs.subarray(i * imgBytes, (i + 1) * imgBytes);
        writeFileAtomic(path.join(dir, `${String(i).padStart(6, '0')}.png`), [encodePng(one, IH, IH, IC)]);
      }
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
