// The training loop: batch -> SpeeD time steps and weights -> label dropout ->
// native train step (noise, loss, backward, clip, AdamW, EMA) -> metrics,
// progress, checkpoints. Every random decision comes from a generator whose
// state goes into the checkpoint, so a resumed run continues exactly.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { writeRunFile } from '../checkpoint/fs.js';
import { ensureWritableDir, loadForResume, stepDirName, writeCheckpoint, listCheckpoints } from '../checkpoint/index.js';
import { speedSection, type Config } from '../config/schema.js';
import { configToYaml } from '../config/load.js';
import { BatchLoader, makeDataset, type Batch, type DataPosition } from '../data/index.js';
import { ConfigError } from '../errors.js';
import type { DiTModel, OptimizerHyper } from '../native.js';
import { formatBytes, Progress } from '../progress.js';
import { Rng, type RngState } from '../rng.js';
import { EventWriter, writeMetricsLine } from '../tensorboard/index.js';
import { lossWeights, makeTimestepSampler, validateSpeedOptions } from '../speed/index.js';
import { checkOptimizerConfig, installStopSignals, signalNamed, signalNumber, skipReason, SkipGuard, type StopSignal } from './guard.js';
import { accumulate, emptyAccum, summarise, type MetricsAccum, type MetricsLine } from './metrics.js';
import { prepareFreshRun } from './fresh-run.js';
import { initFrom } from './init-from.js';
import { createModel } from './model.js';
import { abortWorld, broadcastJson, maxOverRanks, placeRows, quietStream, shardOf, sliceRows, world } from '../parallel/index.js';
import { attachCollective } from '../parallel/train.js';

export interface TrainOptions {
  config: Config;
  /** checkpoint to continue from (a directory or "latest"); default config.resume_training */
  resume?: string | null;
  /** log lines (default: stdout) */
  log?: (msg: string) => void;
  /** progress output (default: stderr) */
  progressStream?: NodeJS.WriteStream;
  /** install the SIGINT/SIGTERM/SIGHUP handlers (checkpoint, then stop); default true */
  handleSignals?: boolean;
  /** called after every step (tests) */
  onStep?: (step: number, loss: number) => void;
}

export interface TrainResult {
  step: number;
  totalSteps: number;
  /** mean loss of the last logged interval */
  finalLoss: number | null;
  checkpoint: string;
  interrupted: boolean;
  /** the signal that stopped the run (interrupted), for the exit status 128 + signo */
  signal?: StopSignal;
  /** steps of this run that were skipped (non-finite loss, gradient or update) */
  skipped: number;
  seconds: number;
}

/** The TypeScript side of a checkpoint's state (besides the native noise and Adam step). */
interface TrainState {
  rng: RngState;
  data: DataPosition;
  accum: MetricsAccum;
}

/** Learning rate at optimizer step `step` (0-based): linear warm-up, then constant (DiT). */
export function lrAt(c: Config['optimizer'], step: number): number {
  return c.warmup_steps > 0 ? c.lr * Math.min(1, (step + 1) / c.warmup_steps) : c.lr;
}

/** Drops labels to the null class with probability p (classifier-free guidance training). */
export function dropLabels(y: Int32Array, numClasses: number, p: number, rng: Rng): Int32Array {
  const out = Int32Array.from(y);
  if (numClasses === 0 || p <= 0) return out;
  for (let i = 0; i < out.length; i++) if (rng.uniform() < p) out[i] = numClasses;
  return out;
}

/** Keeps metrics.jsonl lines up to `step` (a resumed run rewrites what came after). */
function truncateMetrics(file: string, step: number): void {
  if (!existsSync(file)) return;
  const kept = readFileSync(file, 'utf8').split('\n').filter((l) => {
    if (!l.trim()) return false;
    try { return (JSON.parse(l) as MetricsLine).step <= step; } catch { return false; }
  });
  writeRunFile(file, kept.map((l) => l + '\n').join(''));
}

export async function train(opts: TrainOptions): Promise<TrainResult> {
  const c = opts.config;
  // Data parallelism (src/parallel): every rank runs this loop on its slice of the
  // global batch; only rank 0 writes files and logs.
  const w = world();
  const shard = shardOf(w, c.data.batch_size);
  const log = !w.isRoot ? () => {} : opts.log ?? ((m: string) => process.stdout.write(m + '\n'));
  const T = c.diffusion.diffusion_steps;
  const started = Date.now();

  const speed = validateSpeedOptions(speedSection(c.diffusion), T);
  checkOptimizerConfig(c.optimizer);
  const dataset = makeDataset(c, (m) => log(m));
  const { model, coefs } = createModel(c);
  let loader: BatchLoader | undefined;
  let removeSignal = () => {};
  let tb: EventWriter | undefined;
  try {
    log(`data: ${dataset.description}`);
    const [C, H] = dataset.shape;
    if (C !== model.config.inChannels || H !== model.config.inputSize) {
      throw new ConfigError('model', `the data's samples are [${dataset.shape}], the model takes [${model.config.inChannels}, ${model.config.inputSize}, ${model.config.inputSize}] (model.in_channels, model.input_size)`);
    }
    const batchesPerEpoch = Math.floor(dataset.size / c.data.batch_size);
    const totalSteps = c.max_training_steps > 0 ? c.max_training_steps : c.epochs * batchesPerEpoch;
    if (totalSteps <= 0) throw new ConfigError('max_training_steps', 'nothing to train: set max_training_steps or epochs to a value > 0');

    const exp = c.experiment_dir;
    const resumeSpec = opts.resume !== undefined ? opts.resume : c.resume_training;
    if (w.isRoot) {
      if (!resumeSpec) prepareFreshRun(exp, c.overwrite, log); // before anything of this run is written
      ensureWritableDir(exp); // an unwritable experiment_dir fails here, named
      writeRunFile(path.join(exp, 'config.yaml'), configToYaml(c));
    }
    const metricsFile = path.join(exp, 'metrics.jsonl');

    // Fresh start or resume.
    let step = 0;
    let trainRng = new Rng(c.seed * 4 + 2);
    let dataPos: DataPosition | undefined;
    let accum = emptyAccum();
    if (resumeSpec && !w.isRoot) {
      // rank 0 reads the checkpoint; its state and weights come below
    } else if (resumeSpec) {
      if (resumeSpec === 'latest' && listCheckpoints(exp).length === 0) {
        log(`resume: no checkpoint in ${exp}/checkpoints yet; starting from scratch`);
        initFrom(model, c, log);
      } else {
        // "latest" falls back past a damaged newest checkpoint (warning naming it).
        const { dir, state: st } = loadForResume(model, resumeSpec, exp, log);
        const ts = st.train as TrainState;
        step = st.step;
        trainRng = Rng.fromState(ts.rng);
        dataPos = ts.data;
        accum = ts.accum;
        truncateMetrics(metricsFile, step);
        log(`resumed from ${dir} at step ${step}`);
      }
    } else {
      initFrom(model, c, log); // rank 0's weights reach the others with the state below
      if (w.isRoot && existsSync(metricsFile)) writeRunFile(metricsFile, ''); // a fresh run starts a fresh log
    }
    if (w.distributed) {
      // Rank 0's state on every rank: a resume works on any world size.
      const st = broadcastJson({ step, rng: trainRng.state(), data: dataPos ?? null, accum });
      step = st.step;
      trainRng = Rng.fromState(st.rng);
      dataPos = st.data ?? undefined;
      accum = st.accum;
      attachCollective(model, c.device, w);
    }
    tb = c.tensorboard && w.isRoot ? new EventWriter(exp) : undefined;
    if (tb && step > 0) tb.sessionStart(step); // TensorBoard drops the older files' events from here on
    // each rank loads only its slice of every (global) batch
    loader = new BatchLoader(dataset, c.data.batch_size, c.seed, c.data.random_flip, dataPos, w.distributed ? shard : undefined);

    const sampler = makeTimestepSampler(speed, coefs);
    const wTable = lossWeights(speed, coefs);
    const N = c.data.batch_size;
    const numClasses = model.config.numClasses;
    const hpBase: Omit<OptimizerHyper, 'lr'> = {
      beta1: c.optimizer.betas[0],
      beta2: c.optimizer.betas[1],
      eps: c.optimizer.eps,
      weightDecay: c.optimizer.weight_decay,
      maxGradNorm: c.optimizer.max_grad_norm,
      emaDecay: c.ema.decay,
      vbScale: c.diffusion.rescale_learned_sigmas ? T / 1000 : 1,
    };
    log(`model: ${c.model.name} (${model.numTrainable().toLocaleString('en')} trainable parameters) on ${model.device}; ` +
      `sampling ${speed.sampling}, weighting ${speed.weighting}; ${totalSteps} steps of batch ${N}`);
    // What a user sizes the batch by: weights, Adam moments, EMA and gradients
    // (5 float32 copies) plus the activations of one step.
    log(`memory: ${formatBytes(5 * 4 * model.numTrainable())} of parameter state + ${formatBytes(model.activationBytes(N, true))} of activations ` +
      (c.recompute_activations ? '(recompute_activations: each block\'s forward re-run in backward)' : '(set recompute_activations: true to keep only block inputs)'));

    let stopRequested = false;
    let stopSignal: StopSignal | undefined;
    if (opts.handleSignals ?? true) {
      removeSignal = installStopSignals((sig) => { stopRequested = true; stopSignal = sig; }, {
        quiet: !w.isRoot,
        // one rank leaving alone would leave the others waiting in a collective
        onSecond: (sig, code) => { if (w.distributed) abortWorld(code, `second ${sig}: exiting without a checkpoint`); },
      });
    }

    // Off a TTY the log lines are the progress; a plain line only after a minute without one.
    const progress = new Progress('train', totalSteps, w.isRoot ? opts.progressStream : quietStream(), step, { plainFraction: 0, plainSeconds: 60 });
    let lastCkpt = '';
    const guard = new SkipGuard(c.max_consecutive_skips, step, () => lastCkpt || listCheckpoints(exp).at(-1) || '');
    let lastLine: MetricsLine | undefined;
    let intervalStart = Date.now();
    let intervalImages = 0;
    const save = (): string => {
      const train: TrainState = { rng: trainRng.state(), data: nextPos, accum };
      lastCkpt = w.isRoot ? writeCheckpoint(model, exp, { step, config: c, train }) : path.join(exp, 'checkpoints', stepDirName(step));
      return lastCkpt;
    };

    // Prefetch: batch k+1 loads while the native step of batch k runs.
    let nextPos: DataPosition = loader.position();
    let batch: Batch & { epoch: number } = await loader.next();
    while (step < totalSteps && !stopRequested) {
      const t = sampler.sample(N, step, trainRng);
      const weight = Float32Array.from(t, (ti) => wTable[ti]);
      // label dropout draws for the whole global batch (the same generator on every rank)
      const y = dropLabels(w.distributed ? placeRows(batch.y, shard) : batch.y, numClasses, model.config.classDropoutProb, trainRng);
      const lr = lrAt(c.optimizer, model.getStep());
      // this rank's slice of the global batch (all of it on one process)
      const mine = w.distributed
        ? { x0: batch.x, t: sliceRows(t, 1, shard), y: sliceRows(y, 1, shard), weight: sliceRows(weight, 1, shard) }
        : { x0: batch.x, t, y, weight };
      const pending = model.trainStep(mine, { ...hpBase, lr, shardOffset: shard.offset, globalBatch: shard.globalBatch });
      const posAfter = loader.position();
      const nextBatch = step + 1 < totalSteps ? loader.next() : undefined;
      nextBatch?.catch(() => {});
      const r = await pending;
      step++;
      nextPos = posAfter;
      accumulate(accum, T, t, r);
      guard.record(step, skipReason(r)); // throws after max_consecutive_skips in a row, before any checkpoint
      intervalImages += N;
      const meanLoss = r.loss.reduce((a, b) => a + b, 0) / N;
      opts.onStep?.(step, meanLoss);
      progress.tick(step, { loss: r.skipped ? 'skipped' : meanLoss, 'img/s': (intervalImages / Math.max(1e-3, (Date.now() - intervalStart) / 1000)) });
      if (step % c.log_every === 0 || step === totalSteps) {
        const sec = (Date.now() - intervalStart) / 1000;
        lastLine = summarise(accum, { step, epoch: batch.epoch, lr, imagesPerSec: intervalImages / Math.max(1e-6, sec), T });
        if (w.isRoot) {
          writeRunFile(metricsFile, JSON.stringify(lastLine) + '\n', { append: true });
          if (tb) writeMetricsLine(tb, lastLine);
        }
        progress.line(step, {
          loss: lastLine.loss ?? 'n/a', mse: lastLine.mse ?? 'n/a', vb: lastLine.vb ?? 'n/a', 'img/s': lastLine.images_per_sec, lr, grad: lastLine.grad_norm ?? 'n/a',
          ...(lastLine.skipped ? { skipped: lastLine.skipped } : {}),
        });
        accum = emptyAccum();
        intervalStart = Date.now();
        intervalImages = 0;
      }
      // Every rank stops at the same step when any rank was signalled, and with the same
      // signal (one rank may see mpirun's forwarded signal a step later than another).
      if (w.distributed) {
        const sig = signalNamed(maxOverRanks(signalNumber(stopSignal)));
        if (sig) { stopRequested = true; stopSignal = sig; }
      }
      if (c.ckpt_every > 0 && step % c.ckpt_every === 0 && step < totalSteps) save();
      if (nextBatch) batch = await nextBatch;
    }
    progress.done();
    if (!stopRequested) guard.finish(step); // a run that applied no step fails instead of checkpointing it
    if (!lastCkpt.endsWith(stepDirName(step))) save();
    log(`${stopRequested ? 'interrupted; ' : ''}checkpoint: ${lastCkpt}`);
    return {
      step,
      totalSteps,
      finalLoss: lastLine ? lastLine.loss : null,
      checkpoint: lastCkpt,
      interrupted: stopRequested,
      signal: stopSignal,
      skipped: guard.skipped.count,
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    removeSignal();
    tb?.close();
    await loader?.close();
    if (!loader) await dataset.close();
    model.dispose();
  }
}
