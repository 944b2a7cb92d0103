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

export interface InferenceResult {
  dir: string;
  npz: string | null;
  count: number;
  ckpt: string;
  seconds: number;
}

export async function runInference(c: Config, opts: { ckpt?: string | null; log?: (m: string) => void; progressStream?: NodeJS.WriteStream } = {}): Promise<InferenceResult> {
  const log = opts.log ?? ((m: string) => process.stdout.write(m + '\n'));
  const started = Date.now();
  const s = c.inference;
  const g = loadForGeneration(c, opts.ckpt !== undefined ? opts.ckpt : s.ckpt);
  try {
    const { inChannels: C, inputSize: H, numClasses } = g.model.config;
    const N = s.num_samples;
    const rng = new Rng(c.seed * 4 + 3);
    const labels = Int32Array.from({ length: N }, () => (numClasses > 0 ? rng.int(numClasses) : 0));
    const dir = s.out ?? path.join(c.experiment_dir, `inference-${stepDirName(g.step)}`);
    mkdirSync(dir, { recursive: true });
    log(`inference: ${N} images from ${g.ckpt}, ${s.sampler} ${s.steps}, guidance ${s.guidance_scale}, batches of ${s.per_proc_batch_size} -> ${dir}`);
    const progress = new Progress('inference', N, opts.progressStream ?? process.stderr, 0);
    const isImage = C === 3 || C === 1;
    const imgs = new Uint8Array(isImage ? N * H * H * C : 0);
    const latents = isImage ? undefined : new Float32Array(N * C * H * H);
    const B = s.per_proc_batch_size;
    for (let a = 0; a < N; a += B) {
      const y = labels.slice(a, Math.min(N, a + B));
      const x = await generate(g, s, y, B, (d) => progress.tick(a + d));
      if (isImage) {
        const u8 = toUint8NHWC(x, y.length, C, H, H);
        imgs.set(u8, a * H * H * C);
        if (s.save_png) {
          for (let i = 0; i < y.length; i++) {
            const one = u8.subarray(i * H * H * C, (i + 1) * H * H * C);
            writeFileAtomic(path.join(dir, `${String(a + i).padStart(6, '0')}.png`), [encodePng(one, H, H, C)]);
          }
        }
      } else {
        latents!.set(x, a * C * H * H);
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
