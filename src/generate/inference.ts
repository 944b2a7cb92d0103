// -p inference: inference.num_samples images as PNGs plus samples.npz
// (arr_0 uint8 [N, H, W, C], arr_1 int64 labels), the layout the ADM / guided-
// diffusion FID evaluator reads. Labels are drawn uniformly from the seeded
// generator, as DiT's sample_ddp.py does.
import { mkdirSync } from 'node:fs';
import path from 'node:path';

import { stepDirName } from '../checkpoint/index.js';
import type { Config } from '../config/schema.js';
import { writeNpy } from '../io/npy.js';
import { writeNpz } from '../io/npz.js';
import { Progress } from '../progress.js';
import { Rng } from '../rng.js';
import { encodePng, toUint8NHWC } from './images.js';
import { writeFileAtomic } from '../io/npy.js';
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
  count: number;
  ckpt: string;
  seconds: number;
}

export async function runInference(c: Config, opts: { ckpt?: string | null; log?: (m: string) => void } = {}): Promise<InferenceResult> {
  const w = world();
  const log = !w.isRoot ? () => {} : opts.log ?? ((m: string) => process.stdout.write(m + '\n'));
  const started = Date.now();
  const s = c.inference;
  const g = loadForGeneration(c, opts.ckpt !== undefined ? opts.ckpt : s.ckpt);
  try {
    const { inChannels: C, inputSize: H, numClasses } = g.model.config;
    const N = s.num_samples;
    const rng = new Rng(c.seed * 4 + 3);
    const labels = Int32Array.from({ length: N }, () => (numClasses > 0 ? rng.int(numClasses) : 0));
    const dir = s.out ?? path.join(c.experiment_dir, `inference-${stepDirName(g.step)}`);
    if (w.isRoot) mkdirSync(dir, { recursive: true });
    log(`inference: ${N} images${w.distributed ? ` on ${w.size} processes` : ''} from ${g.ckpt}, ${s.sampler} ${s.steps}, guidance ${s.guidance_scale}, batches of ${s.per_proc_batch_size} -> ${dir}`);
    const progress = new Progress('inference', N, w.isRoot ? undefined : quietStream());
    const isImage = C === 3 || C === 1;
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
        const x = await generate(g, s, y, B);
        const after = g.model.getNoiseState().offset;
        if (after !== offset + blocks) {
          throw new SpeedTrainError(`inference: batch ${k} drew ${after - offset} noise blocks, the split over processes assumed ${blocks}; ` +
            'the sampler changed how it draws noise (src/generate/inference.ts must follow)');
        }
        mine.push(isImage ? toUint8NHWC(x, y.length, C, H, H) : new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
        progress.tick(Math.min(N, a + y.length * w.size));
        if (!process.stderr.isTTY && w.isRoot) log(`inference ${Math.min(N, a + y.length * w.size)}/${N}`);
      }
      offset += blocks;
    }
    const parts = gatherBytes(concatBytes(mine), 0);
    if (!w.isRoot) return { dir, npz: null, count: 0, ckpt: g.ckpt, seconds: (Date.now() - started) / 1000 };
    // rank r's buffer holds its batches k = r, r + size, ... in order
    const bytesPer = isImage ? H * H * C : per * 4;
    const all = new Uint8Array(N * bytesPer);
    const read = parts.map(() => 0);
    for (let k = 0, a = 0; a < N; k++, a += B) {
      const r = k % w.size;
      const n = (Math.min(N, a + B) - a) * bytesPer;
      if (read[r] + n > parts[r].length) throw new SpeedTrainError(`inference: rank ${r} sent ${parts[r].length} bytes, fewer than its batches need`);
      all.set(parts[r].subarray(read[r], read[r] + n), a * bytesPer);
      read[r] += n;
    }
    const imgs = isImage ? all : new Uint8Array(0);
    const latents = isImage ? undefined : new Float32Array(all.buffer, all.byteOffset, N * per);
    if (isImage && s.save_png) {
      for (let i = 0; i < N; i++) {
        const one = imgs.subarray(i * H * H * C, (i + 1) * H * H * C);
        writeFileAtomic(path.join(dir, `${String(i).padStart(6, '0')}.png`), [encodePng(one, H, H, C)]);
      }
    }
    progress.done();
    let npz: string | null = null;
    if (isImage) {
      npz = path.join(dir, 'samples.npz');
      writeNpz(npz, {
        arr_0: { dtype: 'uint8', shape: [N, H, H, C], data: imgs },
        arr_1: { dtype: 'int64', shape: [N], data: BigInt64Array.from(labels, (v) => BigInt(v)) },
      });
      log(`samples: ${npz} (arr_0 uint8 [${N}, ${H}, ${H}, ${C}], arr_1 int64 labels)`);
    } else {
      writeNpy(path.join(dir, 'latents.npy'), { dtype: 'float32', shape: [N, C, H, H], data: latents! });
      writeNpy(path.join(dir, 'labels.npy'), { dtype: 'int64', shape: [N], data: BigInt64Array.from(labels, (v) => BigInt(v)) });
      log(`latents: ${path.join(dir, 'latents.npy')} (decode with the VAE, then evaluate)`);
    }
    return { dir, npz, count: N, ckpt: g.ckpt, seconds: (Date.now() - started) / 1000 };
  } finally {
    g.model.dispose();
  }
}
