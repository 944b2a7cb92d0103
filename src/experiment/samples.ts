// One run of the experiment (one method, one seed): train it, then draw the
// evaluation samples of every checkpoint from its EMA weights and keep them as
// <experiment_dir>/samples/<step>/<sampler>.npz (arr_0: uint8 [N, H, W, C],
// arr_1: the class labels; the layout -p inference writes and -p evaluate
// reads), listed in samples.json.
//
// Drawing the samples is the expensive part (the evaluation's forwards
// outnumber training's); scoring them is cheap. Kept apart, an interrupted
// experiment continues where it stopped, a run's samples can be scored again
// in another feature space (or with Inception by -p evaluate) without drawing
// them again, and the training and sampling can run before the feature
// network exists (`experiment --generate-only`).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';

import { listCheckpoints, stepDirName } from '../checkpoint/index.js';
import type { Config } from '../config/index.js';
import { DataError } from '../errors.js';
import type { ImageBatch } from '../eval/index.js';
import { generate, loadForGeneration, toUint8NHWC } from '../generate/index.js';
import { labelledGridPng } from '../generate/images.js';
import { writeFileAtomic } from '../io/npy.js';
import { readNpz, writeNpz } from '../io/npz.js';
import { train } from '../train/index.js';
import type { SamplerSpec } from './spec.js';
import type { MethodResult } from './types.js';

export const SAMPLES_FORMAT = 'speed-train-experiment-samples/1';

/** One sampler's images at one checkpoint. */
export interface SampleSet {
  sampler: string;
  /** relative to the run's experiment_dir */
  file: string;
  n: number;
  /** seconds to load the checkpoint and draw the images */
  seconds: number;
}

/** What samples.json records of one run: the run as the report names it, and its sample sets. */
export interface RunSamples extends Omit<MethodResult, 'evals'> {
  format: string;
  /** the samplers' settings and the run's config, hashed: samples drawn under other settings are not reused */
  samplers: string;
  config_hash: string;
  points: { step: number; sets: SampleSet[] }[];
}

export interface PlannedRun {
  method: string;
  config: Config;
  samplers: { spec: SamplerSpec; config: Config }[];
}

/** The samplers to run at checkpoint number i (1-based) of n: each at its `every`, all at the last. */
export function samplersAt<T extends { spec: SamplerSpec }>(samplers: T[], i: number, n: number): T[] {
  return samplers.filter((s) => i === n || i % s.spec.every === 0);
}

/** The checkpoint steps a run is evaluated at: every ckpt_every, and the last step. */
export function evaluationSteps(c: Config): number[] {
  const steps = Array.from({ length: Math.floor(c.max_training_steps / c.ckpt_every) }, (_, i) => (i + 1) * c.ckpt_every);
  if (c.max_training_steps % c.ckpt_every !== 0) steps.push(c.max_training_steps);
  return steps;
}

export function samplerSignature(run: PlannedRun): string {
  return run.samplers.map(({ spec: s, config: c }) =>
    `${s.name}:${s.sampler}:${s.steps}:${s.eta}:${s.every}:${s.last_num_per_class}:${c.sample.num_per_class}:${c.sample.guidance_scale}`).join();
}

/** The run's settings, hashed; `threads` is left out: training and sampling are bitwise the same for any thread count. */
export function configHash(c: Config): string {
  return createHash('sha256').update(JSON.stringify({ ...c, threads: 0 })).digest('hex').slice(0, 16);
}

/** samples.json of a run when it holds every sample set the run needs now (same settings, files present); else null. */
export function reusableSamples(run: PlannedRun): RunSamples | null {
  const exp = run.config.experiment_dir;
  const file = path.join(exp, 'samples.json');
  if (!existsSync(file)) return null;
  let prev: RunSamples;
  try {
    prev = JSON.parse(readFileSync(file, 'utf8')) as RunSamples;
  } catch {
    return null; // unreadable: drawn again (samples.json is written last, atomically)
  }
  const steps = evaluationSteps(run.config);
  const same = prev.format === SAMPLES_FORMAT && prev.samplers === samplerSignature(run) && prev.config_hash === configHash(run.config) &&
    Array.isArray(prev.points) && prev.points.map((p) => p.step).join() === steps.join() &&
    prev.points.every((p) => p.sets.every((s) => existsSync(path.join(exp, s.file))));
  return same ? prev : null;
}

/** Draws one sampler's images from a checkpoint's EMA weights: class k gets images k*K..(k+1)*K-1. */
async function drawSet(ckpt: string, sp: SamplerSpec, sampleCfg: Config, last: boolean, exp: string): Promise<{ step: number; set: SampleSet }> {
  const t0 = performance.now();
  const g = loadForGeneration(sampleCfg, ckpt);
  try {
    const { inChannels: C, inputSize: H, numClasses } = g.model.config;
    const K = last && sp.last_num_per_class > 0 ? sp.last_num_per_class : sampleCfg.sample.num_per_class;
    const labels = Int32Array.from({ length: Math.max(1, numClasses) * K }, (_, i) => Math.floor(i / K));
    // The model's noise stream starts from the same seed at every checkpoint:
    // every evaluation (and every method of a seed) samples from the same x_T.
    const x = await generate(g, { ...sampleCfg.sample, use_ema: true }, labels, sampleCfg.sample.batch_size);
    const rel = path.join('samples', stepDirName(g.step), `${sp.name}.npz`);
    mkdirSync(path.dirname(path.join(exp, rel)), { recursive: true });
    writeNpz(path.join(exp, rel), {
      arr_0: { dtype: 'uint8', shape: [labels.length, H, H, C], data: toUint8NHWC(x, labels.length, C, H, H) },
      arr_1: { dtype: 'int32', shape: [labels.length], data: labels },
    });
    return { step: g.step, set: { sampler: sp.name, file: rel, n: labels.length, seconds: (performance.now() - t0) / 1000 } };
  } finally {
    g.model.dispose();
  }
}

/**
 * Trains the run from scratch (replacing a partial earlier one) and draws every
 * checkpoint's samples, or returns the samples drawn before under the same settings.
 */
export async function runSamples(run: PlannedRun, seed: number, keepCheckpoints: boolean, log: (l: string) => void): Promise<RunSamples> {
  const prev = reusableSamples(run);
  const tag = `seed ${seed} ${run.method}`;
  if (prev) {
    log(`${tag}: samples already drawn (${path.join(run.config.experiment_dir, 'samples.json')}); reusing them`);
    return prev;
  }
  const { config } = run;
  const exp = config.experiment_dir;
  log(`${tag}: training ${config.max_training_steps} steps (sampling ${config.diffusion.sampling}, weighting ${config.diffusion.weighting})`);
  rmSync(path.join(exp, 'samples'), { recursive: true, force: true });
  const tr = await train({
    // every checkpoint is an evaluation point: none may be pruned before its samples are drawn
    config: { ...config, overwrite: true, ckpt_keep: 0 }, resume: null, handleSignals: false, log: (l) => log(`${tag}: ${l}`),
    progressStream: { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream,
  });
  if (tr.interrupted) throw new Error(`${tag}: training was interrupted`);
  const steps = evaluationSteps(config);
  const rec: RunSamples = {
    format: SAMPLES_FORMAT, method: run.method, seed, sampling: config.diffusion.sampling, weighting: config.diffusion.weighting,
    experiment_dir: exp, train_seconds: tr.seconds, samplers: samplerSignature(run), config_hash: configHash(config), points: [],
  };
  const ckpts = listCheckpoints(exp).filter((c) => steps.includes(Number(path.basename(c))));
  if (ckpts.length !== steps.length) throw new Error(`${tag}: expected checkpoints at steps ${steps.join(', ')} in ${exp}, found ${ckpts.map((c) => path.basename(c)).join(', ') || 'none'}`);
  for (const ckpt of ckpts) {
    const i = steps.indexOf(Number(path.basename(ckpt))) + 1;
    const point = { step: steps[i - 1], sets: [] as SampleSet[] };
    for (const { spec: sp, config: sampleCfg } of samplersAt(run.samplers, i, steps.length)) {
      const d = await drawSet(ckpt, sp, sampleCfg, i === steps.length, exp);
      point.step = d.step;
      point.sets.push(d.set);
    }
    rec.points.push(point);
    log(`${tag} step ${point.step}: drew ${point.sets.map((s) => `${s.n} ${s.sampler}`).join(', ')} (${point.sets.reduce((a, s) => a + s.seconds, 0).toFixed(1)} s)`);
    // Checkpoints are large; keep the last one only, unless asked.
    if (!keepCheckpoints && !ckpt.endsWith(stepDirName(config.max_training_steps))) rmSync(ckpt, { recursive: true, force: true });
  }
  writeFileAtomic(path.join(exp, 'samples.json'), [Buffer.from(JSON.stringify(rec, null, 2) + '\n')]);
  return rec;
}

/** One sample set back as images and labels, checked against what samples.json says of it. */
export function readSampleSet(exp: string, set: SampleSet): { imgs: ImageBatch; labels: Int32Array } {
  const file = path.join(exp, set.file);
  const a = readNpz(file, { keys: ['arr_0', 'arr_1'] });
  const x = a.arr_0;
  const y = a.arr_1;
  if (x.dtype !== 'uint8' || x.shape.length !== 4 || x.shape[0] !== set.n) {
    throw new DataError(`${file}[arr_0]`, `expected uint8 [${set.n}, H, W, C] as samples.json records, found ${x.dtype} [${x.shape.join(', ')}]`);
  }
  if (y.dtype !== 'int32' || y.shape.length !== 1 || y.shape[0] !== set.n) {
    throw new DataError(`${file}[arr_1]`, `expected int32 [${set.n}] labels, found ${y.dtype} [${y.shape.join(', ')}]`);
  }
  const [N, H, W, C] = x.shape;
  return { imgs: { data: x.data as Uint8Array, N, H, W, C }, labels: y.data as Int32Array };
}

/**
 * One labelled grid per method of the first seed: `perClass` samples of each
 * class (a row each) at the last checkpoint, drawn by `sampler`, so a reader
 * sees what the scores are about. Returns the PNG files written in `out`.
 */
export async function writeSampleGrids(out: string, runs: RunSamples[], sampler: string, perClass = 8): Promise<string[]> {
  const files: string[] = [];
  const seed = runs[0]?.seed;
  for (const r of runs.filter((x) => x.seed === seed)) {
    const last = r.points[r.points.length - 1];
    const set = last?.sets.find((s) => s.sampler === sampler);
    if (!set) continue;
    const { imgs, labels } = readSampleSet(r.experiment_dir, set);
    const classes = Math.max(...labels) + 1;
    const per = imgs.H * imgs.W * imgs.C;
    const cols = Math.min(perClass, ...Array.from({ length: classes }, (_, k) => labels.filter((y) => y === k).length));
    if (!(cols > 0) || (imgs.C !== 1 && imgs.C !== 3)) continue;
    const pick = new Uint8Array(classes * cols * per);
    for (let k = 0; k < classes; k++) {
      const idx = labels.indexOf(k);
      pick.set(imgs.data.subarray(idx * per, (idx + cols) * per), k * cols * per);
    }
    const g = await labelledGridPng(pick, classes, cols, imgs.H, imgs.W, imgs.C, Array.from({ length: classes }, (_, k) => `class ${k}`), 2, 2);
    const file = path.join(out, `samples-${r.method}.png`);
    writeFileAtomic(file, [g.png]);
    files.push(file);
  }
  return files;
}
