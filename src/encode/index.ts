// speed-train encode: an image folder -> ADM centre crop -> VAE encoder ->
// latent shards + manifest.json (the layout src/data/latent-shards.ts reads).
//
// Resumable after a kill (even kill -9): the image list is sorted and fixed by
// encode-plan.json (written first; a restart with other settings or other
// images is refused, naming what differs); shard k always covers images
// [k * shard_size, (k + 1) * shard_size); each shard's files are written
// atomically (temporary file, fsync, rename), the latents file last, so a
// shard whose latents file exists is complete and a restart skips it; the
// manifest is written last of all.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';

import type { Config } from '../config/schema.js';
import { DecodePool } from '../data/decode-pool.js';
import type { DecodeOptions } from '../data/image-sample.js';
import { imageLimits, scanImageFolder } from '../data/index.js';
import { flipSample } from '../data/types.js';
import { MANIFEST, MANIFEST_FORMAT, type LatentManifest, type ShardEntry } from '../data/latent-shards.js';
import { ConfigError, DataError } from '../errors.js';
import { readNpyHeader, writeFileAtomic, writeNpy } from '../io/npy.js';
import { Progress } from '../progress.js';
import { configuredVaePath, loadConfiguredVae } from '../vae/configured.js';
import { checkVaeFile } from '../vae/weights.js';
import { ATOMIC_TEMPORARY, ensureWritableDir, removeDeadTemporaries } from '../checkpoint/fs.js';

/** What encode needs from a VAE (src/vae's VAE class provides it). */
export interface LatentEncoder {
  readonly file: string;
  readonly sha256: string;
  readonly downFactor: number;
  readonly config: { latentChannels: number };
  encode(images: Float32Array, n: number, H: number, W: number, opts?: { sample?: boolean; seed?: number; offset?: number; chunk?: number }): Promise<Float32Array>;
}

export interface EncodeResult {
  out: string;
  manifest: LatentManifest;
  /** images encoded by this run (not counting resumed shards) */
  encoded: number;
  skipped: number;
  seconds: number;
}

export const PLAN = 'encode-plan.json';
export const shardName = (k: number, kind: '' | '-labels' | '-flip' = ''): string => `shard-${String(k).padStart(5, '0')}${kind}.npy`;

export interface EncodeOptions {
  /** the VAE; by default loaded from vae.path */
  vae?: LatentEncoder;
  log?: (m: string) => void;
  progressStream?: NodeJS.WriteStream;
}

export async function runEncode(c: Config, opts: EncodeOptions = {}): Promise<EncodeResult> {
  const log = opts.log ?? ((m: string) => process.stdout.write(m + '\n'));
  const started = Date.now();
  const e = c.encode;
  if (!e.images) throw new ConfigError('encode.images', 'not set: the folder of images to encode (class subfolders, or flat for unconditional)');
  const out = path.resolve(e.out ?? c.data.root ?? '');
  if (!e.out && !c.data.root) throw new ConfigError('encode.out', 'not set (nor data.root): the folder to write the latent shards to');
  if (out.endsWith('.npy')) throw new ConfigError(e.out ? 'encode.out' : 'data.root', `${out} is a file name; the shards go into a folder`);
  const images = path.resolve(e.images);
  const S = e.image_size;

  // What fails in a second is checked before the scan, which reads every image header
  // (minutes on ImageNet): the output folder is writable, vae.path names a safetensors
  // file. The images come before the VAE (hundreds of MB) is loaded.
  ensureWritableDir(out, e.out ? 'encode.out' : 'data.root');
  if (!opts.vae) checkVaeFile(configuredVaePath(c));
  log(`encode: scanning ${images} (every header is read and checked; ImageNet: a few minutes)`);
  const scan = scanImageFolder({
    root: images, imageSize: S, channels: 3, numClasses: c.data.num_classes, centerCrop: true,
    skipBadFiles: c.data.skip_bad_files, limits: imageLimits(c), rootKey: 'encode.images', warn: (m) => log(m),
  });
  const own = opts.vae ? null : await loadConfiguredVae(c, log);
  const vae: LatentEncoder = opts.vae ?? own!;
  let pool: DecodePool | null = null;
  try {
    const f = vae.downFactor;
    if (S % f !== 0) throw new ConfigError('encode.image_size', `${S} is not a multiple of the VAE's down factor ${f}`);
    const zc = vae.config.latentChannels;
    const h = S / f;
    const shape: [number, number, number] = [zc, h, h];

    const N = scan.files.length;
    const listHash = createHash('sha256');
    scan.files.forEach((file, i) => listHash.update(`${path.relative(images, file)}\t${scan.labels[i]}\n`));
    const plan = {
      format: MANIFEST_FORMAT, source: images, images: N, files_sha256: listHash.digest('hex'),
      vae_sha256: vae.sha256, image_size: S, shape, flip: e.flip, shard_size: e.shard_size,
      sample_posterior: c.vae.sample_posterior, seed: c.vae.sample_posterior ? c.seed : null, latent_scale: c.vae.scale_factor,
    };
    // Temporary files of a write that a kill interrupted (those of a live encode into
    // the same folder stay).
    const stale = removeDeadTemporaries(out, ATOMIC_TEMPORARY);
    if (stale.length) log(`encode: removed ${stale.length} temporary files of an interrupted run`);
    const planFile = path.join(out, PLAN);
    if (existsSync(planFile)) {
      let old: Record<string, unknown>;
      try {
        old = JSON.parse(readFileSync(planFile, 'utf8')) as Record<string, unknown>;
      } catch (err) {
        throw new DataError(planFile, `unreadable (${(err as Error).message}); delete it to start this folder over`);
      }
      const diff = Object.keys(plan).filter((k) => JSON.stringify(old[k]) !== JSON.stringify((plan as Record<string, unknown>)[k]));
      if (diff.length) {
        throw new DataError(planFile, `this folder holds an encoding with other settings or images (${diff.map((k) => `${k}: ${JSON.stringify(old[k])} now ${JSON.stringify((plan as Record<string, unknown>)[k])}`).join('; ')}); use another encode.out or delete the folder`);
      }
    } else {
      writeFileAtomic(planFile, [Buffer.from(JSON.stringify(plan, null, 1) + '\n')]);
    }

    const K = Math.ceil(N / e.shard_size);
    const shards: ShardEntry[] = [];
    const entry = (k: number, count: number): ShardEntry => ({
      file: shardName(k), labels: shardName(k, '-labels'), flip: e.flip ? shardName(k, '-flip') : null,
      count, first_image: k * e.shard_size, skipped: Math.min(N, (k + 1) * e.shard_size) - k * e.shard_size - count,
    });
    let resumedImages = 0;
    const todo: number[] = [];
    for (let k = 0; k < K; k++) {
      const file = path.join(out, shardName(k));
      if (existsSync(file)) {
        const hd = readNpyHeader(file);
        shards[k] = entry(k, hd.shape[0]);
        resumedImages += Math.min(N, (k + 1) * e.shard_size) - k * e.shard_size;
      } else todo.push(k);
    }
    log(`encode: ${N} images in ${Math.max(1, scan.classes.length)} classes from ${images} -> ${out}: ${K} shards of ${e.shard_size}, ` +
      `[${shape}] latents (${S}x${S} crops, VAE ${path.basename(vae.file)} sha256 ${vae.sha256.slice(0, 12)}…, ` +
      `${c.vae.sample_posterior ? 'posterior samples' : 'posterior means'}${e.flip ? ', + flipped copies' : ''})` +
      (resumedImages ? `; resuming: ${K - todo.length} shards done` : ''));

    const progress = new Progress('encode', N, opts.progressStream, resumedImages);
    const B = c.vae.chunk;
    const per = 3 * S * S;
    let encoded = 0;
    let skipped = 0;
    let processed = 0; // images of this run's shard ranges handled (encoded or skipped)
    const t0 = Date.now();
    // Decoding and cropping run in worker threads (encode.workers), a batch ahead of the VAE.
    pool = new DecodePool(e.workers > 0 ? e.workers : Math.max(1, Math.min(8, availableParallelism() - 1)));
    const dopts: DecodeOptions = { size: S, channels: 3, centerCrop: true, limits: imageLimits(c) };
    const decodeRange = async (a: number, b: number): Promise<{ idx: number[]; x: Float32Array }> => {
      const r = await pool!.decode(scan.files.slice(a, b), dopts);
      const bad = new Set<number>();
      for (const f of r.bad) {
        if (!c.data.skip_bad_files) throw new DataError(f.file, `${f.reason} (set data.skip_bad_files: true to skip such files)`);
        log(`warning: skipping ${f.file}: ${f.reason}`);
        bad.add(f.i);
      }
      if (bad.size === 0) return { idx: Array.from({ length: b - a }, (_, j) => a + j), x: r.x };
      const idx: number[] = [];
      const x = new Float32Array((b - a - bad.size) * per);
      for (let j = 0; j < b - a; j++) {
        if (bad.has(j)) continue;
        x.set(r.x.subarray(j * per, (j + 1) * per), idx.length * per);
        idx.push(a + j);
      }
      return { idx, x };
    };
    const seed = c.seed;
    for (const k of todo) {
      const a0 = k * e.shard_size;
      const a1 = Math.min(N, a0 + e.shard_size);
      const lat: Float32Array[] = [];
      const flat: Float32Array[] = [];
      const labels: number[] = [];
      let next = decodeRange(a0, Math.min(a1, a0 + B));
      for (let a = a0; a < a1; a += B) {
        const batch = await next;
        // Decode the next batch while this one is in the VAE.
        if (a + B < a1) {
          next = decodeRange(a + B, Math.min(a1, a + 2 * B));
          next.catch(() => {}); // surfaces when awaited
        }
        const n = batch.idx.length;
        skipped += Math.min(a1, a + B) - a - n;
        if (n > 0) {
          // eps of image i (sample_posterior) starts at Philox block i * latent size / 4 of
          // (seed): the same for any batch size or restart. A skipped image leaves a gap, so
          // each contiguous run of images is one call.
          const runs: [number, number][] = [];
          for (let j = 0; j < n; j++) {
            if (j > 0 && batch.idx[j] === batch.idx[j - 1] + 1) runs[runs.length - 1][1] = j + 1;
            else runs.push([j, j + 1]);
          }
          const encodeAll = async (x: Float32Array, s: number) => {
            const z = new Float32Array(n * zc * h * h);
            for (const [r0, r1] of runs) {
              const o = { sample: c.vae.sample_posterior, seed: s, offset: Math.floor((batch.idx[r0] * zc * h * h) / 4), chunk: B };
              z.set(await vae.encode(x.subarray(r0 * per, r1 * per), r1 - r0, S, S, o), r0 * zc * h * h);
            }
            return z;
          };
          lat.push(await encodeAll(batch.x, seed));
          if (e.flip) {
            for (let j = 0; j < n; j++) flipSample(batch.x, j * per, 3, S, S);
            flat.push(await encodeAll(batch.x, seed + 1));
          }
          for (const i of batch.idx) labels.push(scan.labels[i]);
          encoded += n;
        }
        processed += Math.min(a1, a + B) - a;
        progress.tick(resumedImages + processed, { 'img/s': encoded / Math.max(1e-3, (Date.now() - t0) / 1000) });
      }
      const count = labels.length;
      const join = (parts: Float32Array[]) => {
        const all = new Float32Array(count * zc * h * h);
        let o = 0;
        for (const p of parts) { all.set(p, o); o += p.length; }
        return all;
      };
      for (const p of lat) for (let q = 0; q < p.length; q++) if (!Number.isFinite(p[q])) throw new DataError(vae.file, `the VAE produced a non-finite latent in shard ${k} (images ${a0}..${a1 - 1})`);
      writeNpy(path.join(out, shardName(k, '-labels')), { dtype: 'int64', shape: [count], data: BigInt64Array.from(labels, (v) => BigInt(v)) });
      if (e.flip) writeNpy(path.join(out, shardName(k, '-flip')), { dtype: 'float32', shape: [count, zc, h, h], data: join(flat) });
      writeNpy(path.join(out, shardName(k)), { dtype: 'float32', shape: [count, zc, h, h], data: join(lat) }); // last: marks the shard complete
      shards[k] = entry(k, count);
      progress.line(resumedImages + processed, { shard: `${k + 1}/${K}`, 'img/s': encoded / Math.max(1e-3, (Date.now() - t0) / 1000), skipped });
    }
    progress.done();
    const total = shards.reduce((s, x) => s + x.count, 0);
    if (total === 0) throw new DataError(images, 'no image could be encoded');
    const manifest: LatentManifest = {
      format: MANIFEST_FORMAT, version: 1, count: total, shape, dtype: 'float32', latent_scale: c.vae.scale_factor,
      vae: { file: vae.file, sha256: vae.sha256, down_factor: f, sample_posterior: c.vae.sample_posterior, seed: plan.seed },
      image_size: S, crop: 'adm_center_crop', flip: e.flip, source: images, classes: scan.classes,
      num_classes: scan.classes.length, skipped: scan.skipped + shards.reduce((s, x) => s + x.skipped, 0), shards, created: new Date().toISOString(),
    };
    writeFileAtomic(path.join(out, MANIFEST), [Buffer.from(JSON.stringify(manifest, null, 1) + '\n')]);
    const sec = (Date.now() - started) / 1000;
    log(`encoded ${encoded} images in ${sec.toFixed(1)} s (${(encoded / Math.max(1e-3, (Date.now() - t0) / 1000)).toFixed(1)} images/s)` +
      `${resumedImages ? `, ${total - encoded} from earlier runs` : ''}; ${manifest.skipped} skipped; manifest ${path.join(out, MANIFEST)}`);
    return { out, manifest, encoded, skipped: manifest.skipped, seconds: sec };
  } finally {
    await pool?.close();
    own?.dispose();
  }
}
