// FID during training (evaluate.every): every N steps and at the end,
// evaluate.num_samples images from the EMA weights (a latent model's decoded by
// the VAE of vae.path, on the rank that drew them), scored as -p evaluate scores:
// against its reference, in evaluate.feature_space, behind its feature-accuracy
// gate. Each evaluation starts from the same labels and the same noise (a seed
// derived from the run's seed, never the training noise stream, which is saved
// and restored around it), so two evaluations differ only by the weights, and a
// resumed run logs the values an uninterrupted one does.
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import * as zlib from 'node:zlib';

import type { Config } from '../config/schema.js';
import type { DiffusionCoefs } from '../diffusion/coefs.js';
import { sample, type SamplerName } from '../diffusion/sampler.js';
import { spacedTimesteps } from '../diffusion/respace.js';
import { ConfigError, SpeedTrainError } from '../errors.js';
import {
  checkFeatureSpaceAccuracy, classifierAccuracy, evaluateFeatures, extractAllFeatures, extractFeatures, inceptionScore, INCEPTION_SPACE, isReferenceStatsFile, loadImageSet, loadReferenceStats, referenceFromFeatures, resolveFeatureSpace,
  saveReferenceStats, type FeatureSpace, type ReferenceStats,
} from '../eval/index.js';
import { referenceImages } from '../eval/real.js';
import { clipDenoisedFor, latentDecoder, unscaleLatents, type LatentDecoder } from '../generate/decode.js';
import { toUint8NHWC } from '../generate/images.js';
import type { DiTModel } from '../native.js';
import { gatherBytes, type World } from '../parallel/index.js';
import { Rng } from '../rng.js';

/** One evaluation as metrics.jsonl holds it (a line {"step", "eval": EvalLine}). */
export interface EvalLine {
  feature_space: string;
  num_samples: number;
  sampler: string;
  fid: number;
  fid_mean_term: number;
  fid_cov_term: number;
  kid_mean: number | null;
  kid_std: number | null;
  precision: number | null;
  recall: number | null;
  /** the Inception Score (mean and spread over splits) when the space is inception-v3; null otherwise */
  is_mean: number | null;
  is_std: number | null;
  /** wall time of the whole evaluation (sampling + features + metrics), and of the sampling alone */
  seconds: number;
  sample_seconds: number;
}

/** The training an evaluation is weighed against, as the run adds it to the evaluation's line in metrics.jsonl. */
export interface TrainedSince {
  /** the step of the previous evaluation (or where this session's training began) */
  since_step: number;
  /** wall time of the training since then (checkpoints and log lines included, evaluations not) */
  train_seconds: number;
}

/**
 * An evaluation's cost as the share of the training it interrupts, for the log:
 * "12.3 s = 4.1% of training since step 2000" (evaluating during training is
 * meant to stay under a tenth of it).
 */
export function evalShare(evalSeconds: number, trainSeconds: number, sinceStep: number): string {
  const share = trainSeconds > 0 ? `${((100 * evalSeconds) / trainSeconds).toFixed(1)}%` : 'n/a';
  return `${evalSeconds.toFixed(1)} s = ${share} of training since step ${sinceStep}`;
}

/** "ddpm100" -> DDPM over 100 evenly spaced steps; "ddim50" -> DDIM with the stride giving 50 steps. */
export function parseEvalSampler(spec: string): { sampler: SamplerName; steps: string } {
  const m = /^(ddpm|ddim)([1-9][0-9]*)$/.exec(spec);
  if (!m) throw new ConfigError('evaluate.sampler', `${JSON.stringify(spec)} is not valid: expected a sampler and its step count, e.g. "ddpm100" or "ddim50"`);
  return m[1] === 'ddim' ? { sampler: 'ddim', steps: `ddim${m[2]}` } : { sampler: 'ddpm', steps: m[2] };
}

/** The generators of an evaluation: labels from an Rng, x_T and the sampler's noise from the model's Philox stream at this seed. */
export const evalSeed = (runSeed: number): number => runSeed * 4 + 5;

/** Philox blocks a batch of n images draws: x_T, then one draw per step but the last (4 normals a block). */
const noiseBlocks = (n: number, per: number, samplerSteps: number): number => Math.ceil((n * per) / 4) * samplerSteps;

/**
 * The reference statistics in `space`, featurised once per run and cached in the
 * experiment folder under a name derived from what defines them (space, reference,
 * data), so a resumed run reads the same numbers back instead of recomputing them.
 */
async function referenceStats(c: Config, space: FeatureSpace, log: (m: string) => void): Promise<ReferenceStats> {
  const e = c.evaluate;
  if (e.reference !== null && !existsSync(e.reference)) throw new ConfigError('evaluate.reference', `${e.reference} does not exist`);
  if (e.reference !== null && e.reference.endsWith('.npz') && isReferenceStatsFile(e.reference)) {
    const ref = loadReferenceStats(e.reference);
    if (ref.featureSpace !== space.name) {
      throw new ConfigError('evaluate.feature_space', `'${space.name}', but the reference statistics ${e.reference} (evaluate.reference) are in '${ref.featureSpace}'`);
    }
    return ref;
  }
  const key = JSON.stringify({ space: space.name, dim: space.dim, reference: e.reference, n: e.num_reference, data: c.data, seed: c.seed, encode: c.encode.images });
  const file = path.join(c.experiment_dir, `eval-reference-${zlib.crc32(key).toString(16).padStart(8, '0')}.npz`);
  if (existsSync(file)) {
    const ref = loadReferenceStats(file);
    if (ref.featureSpace === space.name && ref.dim === space.dim) return ref;
  }
  const t0 = performance.now();
  const images = e.reference !== null ? await loadImageSet(e.reference) : await referenceImages(c, e.num_reference);
  if (images.N < 2) throw new ConfigError(e.reference !== null ? 'evaluate.reference' : 'evaluate.num_reference', `need at least 2 reference images, found ${images.N}`);
  const ref = referenceFromFeatures(await extractFeatures(space, images), images.N, space.dim, space.name, images.source);
  mkdirSync(c.experiment_dir, { recursive: true });
  saveReferenceStats(file, ref);
  log(`eval: reference ${images.N} images (${images.source}) in ${space.name}, ${((performance.now() - t0) / 1000).toFixed(1)} s, cached in ${file}`);
  return ref;
}

export class TrainingEval {
  private constructor(
    private readonly c: Config,
    private readonly w: World,
    private readonly spec: { sampler: SamplerName; steps: string },
    /** rank 0 only: the space and the reference it scores against */
    private readonly scorer: { space: FeatureSpace; ref: ReferenceStats } | null,
    /** a latent model's VAE (every rank decodes the batches it draws); null for pixel models */
    private readonly decoder: LatentDecoder | null,
  ) {}

  /** Releases the VAE of a latent model. */
  close(): void {
    this.decoder?.dispose();
  }

  /** null when evaluate.every is 0. Rank 0 resolves the feature space and the reference before the first step, so a bad one fails early. */
  static async open(c: Config, w: World, log: (m: string) => void): Promise<TrainingEval | null> {
    if (c.evaluate.every === 0) return null;
    const spec = parseEvalSampler(c.evaluate.sampler);
    let decoder: LatentDecoder | null = null;
    if (c.data.name === 'latents') {
      // The curve the SpeeD comparison needs is of latent DiTs: their samples are decoded as -p inference decodes them.
      if (!c.vae.path) {
        throw new ConfigError('vae.path', 'FID during training (evaluate.every) decodes the sampled latents to images with the VAE that encoded the data: set vae.path, or evaluate.every=0');
      }
      try {
        decoder = await latentDecoder(c, { trained: c, model: { config: { inChannels: c.model.in_channels, inputSize: c.model.input_size } } }, log);
      } catch (e) {
        throw new ConfigError('vae.path', e instanceof Error ? e.message : String(e));
      }
    } else if (c.model.in_channels !== 1 && c.model.in_channels !== 3) {
      throw new ConfigError('evaluate.every', `FID during training needs images of 1 or 3 channels; model.in_channels is ${c.model.in_channels}`);
    }
    try {
      return new TrainingEval(c, w, spec, w.isRoot ? await TrainingEval.scorer(c, log) : null, decoder);
    } catch (e) {
      decoder?.dispose();
      throw e;
    }
  }

  /** Rank 0's feature space (behind the accuracy gate) and its reference statistics. */
  private static async scorer(c: Config, log: (m: string) => void): Promise<{ space: FeatureSpace; ref: ReferenceStats }> {
    let space: FeatureSpace;
    try {
      // the Inception network (inception-v3) runs on the device the model trains on (rank 0: GPU 0 under device=cuda)
      space = await resolveFeatureSpace(c.evaluate.feature_space, { inceptionPath: c.evaluate.inception.path ?? undefined, device: c.device, threads: c.threads || undefined });
    } catch (e) {
      throw new ConfigError('evaluate.feature_space', e instanceof Error ? e.message : String(e));
    }
    // the gate of -p evaluate: a run would otherwise log a curve in a space -p evaluate refuses
    const measured = classifierAccuracy(space);
    if (measured && checkFeatureSpaceAccuracy({ ...measured, min: c.evaluate.min_feature_accuracy, allow: c.evaluate.allow_weak_features })) {
      log(`warning: feature space ${space.name} is a weak classifier (held-out accuracy ${measured.accuracy.toFixed(4)}); FID during training in it because evaluate.allow_weak_features is set`);
    }
    return { space, ref: await referenceStats(c, space, log) };
  }

  /** Evaluations run at every multiple of evaluate.every and at the last step. */
  due(step: number, totalSteps: number): boolean {
    return step % this.c.evaluate.every === 0 || step === totalSteps;
  }

  /**
   * Samples evaluate.num_samples images on every rank's share (batch k of
   * inference.per_proc_batch_size on rank k % size, with the noise one process
   * would draw for it: the result does not depend on the number of processes),
   * gathers them on rank 0 and scores them there. Returns the line on rank 0,
   * null on the others. The model's training noise stream is left as it was.
   */
  async run(model: DiTModel, coefs: DiffusionCoefs): Promise<EvalLine | null> {
    const c = this.c;
    const w = this.w;
    const t0 = performance.now();
    const { inChannels: ZC, inputSize: Z, numClasses } = model.config;
    const dec = this.decoder;
    // the images scored: the model's own, or its latents decoded (f times larger, the VAE's channels)
    const C = dec ? dec.vae.config.outChannels : ZC;
    const H = dec ? Z * dec.vae.downFactor : Z;
    const N = c.evaluate.num_samples;
    const B = c.inference.per_proc_batch_size;
    const per = C * H * H;
    const zper = ZC * Z * Z;
    const seed = evalSeed(c.seed);
    const rng = new Rng(seed);
    const labels = Int32Array.from({ length: N }, () => (numClasses > 0 ? rng.int(numClasses) : 0));
    const samplerSteps = spacedTimesteps(coefs.T, this.spec.steps).length;
    const images = w.isRoot ? new Uint8Array(N * per) : null;
    const trainingNoise = model.getNoiseState();
    try {
      const batches = Math.ceil(N / B);
      let offset = 0;
      for (let k0 = 0; k0 < batches; k0 += w.size) {
        let mine: Uint8Array = new Uint8Array(0);
        for (let k = k0; k < Math.min(batches, k0 + w.size); k++) {
          const a = k * B;
          const y = labels.slice(a, Math.min(N, a + B));
          const blocks = noiseBlocks(y.length, zper, samplerSteps);
          if (k % w.size === w.rank) {
            model.setNoiseState({ seed, offset });
            const x = await sample(model, coefs, {
              N: y.length, y, sampler: this.spec.sampler, steps: this.spec.steps, eta: c.inference.eta,
              guidanceScale: c.inference.guidance_scale, clipDenoised: clipDenoisedFor({ trained: c, model }, c.inference), useEma: true,
            });
            const drawn = model.getNoiseState().offset - offset;
            if (drawn !== blocks) {
              throw new SpeedTrainError(`eval: batch ${k} drew ${drawn} noise blocks, the split over processes assumed ${blocks}; ` +
                'the sampler changed how it draws noise (src/train/evaluation.ts must follow)');
            }
            const img = dec ? await dec.vae.decode(unscaleLatents(x, dec.scale), y.length, Z, Z, { chunk: c.vae.chunk }) : x;
            mine = toUint8NHWC(img, y.length, C, H, H);
          }
          offset += blocks;
        }
        const got = gatherBytes(mine, 0);
        if (!images) continue;
        for (let k = k0; k < Math.min(batches, k0 + w.size); k++) {
          const a = k * B;
          const part = got[k % w.size];
          if (part.length !== (Math.min(N, a + B) - a) * per) {
            throw new SpeedTrainError(`eval: rank ${k % w.size} sent ${part.length} bytes for batch ${k}, expected ${(Math.min(N, a + B) - a) * per}`);
          }
          images.set(part, a * per);
        }
      }
    } finally {
      model.setNoiseState(trainingNoise);
    }
    const sampleSeconds = (performance.now() - t0) / 1000;
    if (!images || !this.scorer) return null;
    const { space, ref } = this.scorer;
    // Inception-v3's logits give the Inception Score in the same pass; a classifier's logits are not an IS.
    const wantIs = space.name === INCEPTION_SPACE && !!space.extras?.logits;
    const all = wantIs ? await extractAllFeatures(space, { data: images, N, H, W: H, C }) : null;
    const features = all ? all.features : await extractFeatures(space, { data: images, N, H, W: H, C });
    const m = evaluateFeatures(features, N, ref, { floor: false }); // the log keeps no floor: it depends on the reference only
    const is = all?.logits ? inceptionScore(all.logits, N, space.extras!.logits!) : null;
    return {
      feature_space: space.name,
      num_samples: N,
      sampler: c.evaluate.sampler,
      fid: m.fid,
      fid_mean_term: m.fid_mean_term,
      fid_cov_term: m.fid_cov_term,
      kid_mean: m.kid_mean,
      kid_std: m.kid_std,
      precision: m.precision,
      recall: m.recall,
      is_mean: is ? is.mean : null,
      is_std: is ? is.std : null,
      seconds: (performance.now() - t0) / 1000,
      sample_seconds: sampleSeconds,
    };
  }
}
