// -p inference: inference.num_samples images as PNGs plus samples.npz
// (arr_0 uint8 [N, H, W, C], arr_1 int64 labels), the layout the ADM / guided-
// diffusion FID evaluator reads. Labels are drawn uniformly from the seeded
// generator, as DiT's sample_ddp.py does. A latent model's samples are divided
// by vae.scale_factor and decoded with the VAE (vae.path) first, so the outputs
// are the same as for a pixel model; inference.save_latents also keeps the
// latents (latents.npy: UNSCALED VAE latents, i.e. divided by vae.scale_factor,
// ready for any SD VAE decoder).
import path from 'node:path';

import { ATOMIC_TEMPORARY, ensureWritableDir, removeDeadTemporaries } from '../checkpoint/fs.js';
import { stepDirName } from '../checkpoint/index.js';
import type { Config } from '../config/schema.js';
import { NpyStreamWriter, writeFileAtomic, writeNpy } from '../io/npy.js';
import { NpzStreamWriter } from '../io/npz.js';
import { Progress } from '../progress.js';
import { Rng } from '../rng.js';
import { isLatentModel, latentDecoder, unscaleLatents, type LatentDecoder } from './decode.js';
import { encodePng, toUint8NHWC } from './images.js';
import { emaWarning } from './ema-check.js';
import { loadForGeneration } from './model.js';
import { generate } from './sample.js';
import { spacedTimesteps } from '../diffusion/respace.js';
import { gatherBytes, quietStream, world } from '../parallel/index.js';
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
    if (w.isRoot) {
      // A read-only or missing parent is said in words, naming the key; the
      // temporaries of a run killed mid-write (up to the size of samples.npz) go.
      ensureWritableDir(dir, s.out ? 'inference.out' : 'experiment_dir');
      const stale = removeDeadTemporaries(dir, ATOMIC_TEMPORARY);
      if (stale.length) log(`inference: removed ${stale.length} temporary file(s) of an interrupted run in ${dir}: ${stale.slice(0, 3).join(', ')}${stale.length > 3 ? ', ...' : ''}`);
    }
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
    // Data parallelism (src/parallel): batch k runs on rank k % size with the noise
    // a single process would draw for it (every batch consumes a known number
    // of Philox blocks), so the gathered samples are bitwise those of one process.
    const per = C * H * H;
    const samplerSteps = spacedTimesteps(g.coefs.T, s.steps).length;
    const noise0 = g.model.getNoiseState();
    // Streamed to disk batch by batch (rank 0 writes, in batch order): 50k samples at
    // 256x256 are 9.8 GB, past what one typed array can hold (4 GiB), and memory
    // stays one batch per process.
    const imgBytes = isImage ? IH * IH * IC : 0;
    const latBytes = keepLatents ? per * 4 : 0;
    const npz = isImage ? path.join(dir, 'samples.npz') : null;
    const latFile = keepLatents ? path.join(dir, 'latents.npy') : null;
    let npzOut: NpzStreamWriter | null = null;
    let latOut: NpyStreamWriter | null = null;
    try {
      if (w.isRoot && npz) {
        npzOut = new NpzStreamWriter(npz);
        npzOut.begin('arr_0', 'uint8', [N, IH, IH, IC]);
      }
      if (w.isRoot && latFile) latOut = new NpyStreamWriter(latFile, 'float32', [N, C, H, H]);
      const batches = Math.ceil(N / B);
      let offset = noise0.offset;
      // one round = one batch per rank: batch k runs on rank k % size
      for (let k0 = 0; k0 < batches; k0 += w.size) {
        let mine: Uint8Array = new Uint8Array(0);
        for (let k = k0; k < Math.min(batches, k0 + w.size); k++) {
          const a = k * B;
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
            // the batch's unscaled latents (when kept), then its uint8 images
            const parts: Uint8Array[] = [];
            if (keepLatents) {
              const lat = unscaleLatents(x, c.vae.scale_factor);
              parts.push(new Uint8Array(lat.buffer, lat.byteOffset, lat.byteLength));
            }
            if (isImage) {
              const pix = dec ? await dec.vae.decode(unscaleLatents(x, dec.scale), y.length, H, H, { chunk: c.vae.chunk }) : x;
              parts.push(toUint8NHWC(pix, y.length, IC, IH, IH));
            }
            mine = concatBytes(parts);
            progress.tick(Math.min(N, a + y.length * w.size));
          }
          offset += blocks;
        }
        const got = gatherBytes(mine, 0);
        if (!w.isRoot) continue;
        for (let k = k0; k < Math.min(batches, k0 + w.size); k++) {
          const r = k % w.size;
          const a = k * B;
          const n = Math.min(N, a + B) - a;
          const buf = got[r];
          if (buf.length !== n * (latBytes + imgBytes)) {
            throw new SpeedTrainError(`inference: rank ${r} sent ${buf.length} bytes for batch ${k}, expected ${n * (latBytes + imgBytes)}`);
          }
          latOut?.write(buf.subarray(0, n * latBytes));
          if (!isImage) continue;
          const imgs = buf.subarray(n * latBytes);
          npzOut?.write(imgs);
          if (s.save_png) {
            for (let i = 0; i < n; i++) {
              const one = imgs.subarray(i * imgBytes, (i + 1) * imgBytes);
              writeFileAtomic(path.join(dir, `${String(a + i).padStart(6, '0')}.png`), [encodePng(one, IH, IH, IC)]);
            }
          }
        }
      }
      if (!w.isRoot) return { dir, npz: null, latents: null, count: 0, ckpt: g.ckpt, seconds: (Date.now() - started) / 1000 };
      progress.done();
      const labels64 = BigInt64Array.from(labels, (v) => BigInt(v));
      if (npzOut && npz) {
        npzOut.end();
        npzOut.begin('arr_1', 'int64', [N]);
        npzOut.write(new Uint8Array(labels64.buffer));
        npzOut.end();
        npzOut.commit();
        log(`samples: ${npz} (arr_0 uint8 [${N}, ${IH}, ${IH}, ${IC}], arr_1 int64 labels)`);
      }
      if (latOut && latFile) {
        latOut.commit();
        writeNpy(path.join(dir, 'labels.npy'), { dtype: 'int64', shape: [N], data: labels64 });
        log(`latents: ${latFile} (unscaled: the model's samples divided by vae.scale_factor ${c.vae.scale_factor})` +
          (isImage ? '' : '; set vae.path to decode them to images for -p evaluate'));
      }
    } finally {
      npzOut?.abort(); // nothing after a commit; the temporary file after an error
      latOut?.abort();
    }
    return { dir, npz, latents: latFile, count: N, ckpt: g.ckpt, seconds: (Date.now() - started) / 1000 };
  } finally {
    dec?.dispose();
    g.model.dispose();
  }
}
