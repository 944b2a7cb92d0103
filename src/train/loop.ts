// The training loop, as DiT's train.py reads: a batch -> SpeeD time steps and
// their loss weights -> label dropout -> the native train step (noise, loss,
// backward, clip, AdamW, EMA) -> log -> maybe checkpoint / evaluate. Run (run.ts)
// holds the run's state and sinks; every random decision comes from a generator
// whose state goes into the checkpoint, so a resumed run continues exactly.
import type { Config } from '../config/schema.js';
import { BatchLoader, makeDataset, type Batch } from '../data/index.js';
import { ConfigError } from '../errors.js';
import type { OptimizerHyper } from '../native.js';
import { placeRows, sliceRows } from '../parallel/index.js';
import { formatBytes } from '../progress.js';
import type { Rng } from '../rng.js';
import { lossWeights, makeTimestepSampler, speedOptions } from '../speed/index.js';
import { checkOptimizerConfig } from './guard.js';
import { createModel } from './model.js';
import { Run, type TrainResult } from './run.js';

export type { TrainResult } from './run.js';

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

export async function train(opts: TrainOptions): Promise<TrainResult> {
  const c = opts.config;
  const T = c.diffusion.diffusion_steps;
  const speed = speedOptions(c.diffusion, T);
  checkOptimizerConfig(c.optimizer);
  // Data parallelism (src/parallel): every rank runs this loop on its slice of the
  // global batch; only rank 0 writes files and logs.
  const run = new Run(c, {
    resume: opts.resume !== undefined ? opts.resume : c.resume_training,
    log: opts.log, progressStream: opts.progressStream, handleSignals: opts.handleSignals ?? true,
  });
  const dataset = makeDataset(c, (m) => run.log(m));
  const { model, coefs } = createModel(c);
  let loader: BatchLoader | undefined;
  try {
    run.log(`data: ${dataset.description}`);
    const [C, H] = dataset.shape;
    if (C !== model.config.inChannels || H !== model.config.inputSize) {
      throw new ConfigError('model', `the data's samples are [${dataset.shape}], the model takes [${model.config.inChannels}, ${model.config.inputSize}, ${model.config.inputSize}] (model.in_channels, model.input_size)`);
    }
    const N = c.data.batch_size;
    const totalSteps = c.max_training_steps > 0 ? c.max_training_steps : c.epochs * Math.floor(dataset.size / N);
    if (totalSteps <= 0) throw new ConfigError('max_training_steps', 'nothing to train: set max_training_steps or epochs to a value > 0');

    run.begin(model); // fresh or resumed, the same on every rank
    // each rank loads only its slice of every (global) batch
    const shard = run.w.distributed ? run.shard : undefined;
    loader = new BatchLoader(dataset, N, c.seed, c.data.random_flip, run.dataStart, shard);
    const sampler = makeTimestepSampler(speed, coefs);
    const wTable = lossWeights(speed, coefs);
    const hp = optimizerHyper(c);
    run.log(`model: ${c.model.name} (${model.numTrainable().toLocaleString('en')} trainable parameters) on ${model.device}; ` +
      `sampling ${speed.sampling}, weighting ${speed.weighting}; ${totalSteps} steps of batch ${N}`);
    // What a user sizes the batch by: weights, Adam moments, EMA and gradients
    // (5 float32 copies) plus the activations of one step.
    run.log(`memory: ${formatBytes(5 * 4 * model.numTrainable())} of parameter state + ${formatBytes(model.activationBytes(N, true))} of activations ` +
      (c.recompute_activations ? '(recompute_activations: each block\'s forward re-run in backward)' : '(set recompute_activations: true to keep only block inputs)'));
    await run.open(totalSteps);

    // Prefetch: batch k+1 loads while the native step of batch k runs.
    run.dataPos = loader.position();
    let batch: Batch & { epoch: number } = await loader.next();
    while (run.step < totalSteps && !run.stopRequested) {
      const t = sampler.sample(N, run.step, run.rng);
      const weight = Float32Array.from(t, (ti) => wTable[ti]);
      // label dropout draws for the whole global batch (the same generator on every rank)
      const y = dropLabels(shard ? placeRows(batch.y, shard) : batch.y, model.config.numClasses, model.config.classDropoutProb, run.rng);
      const lr = lrAt(c.optimizer, model.getStep());
      const mine = shard // this rank's slice of the global batch
        ? { x0: batch.x, t: sliceRows(t, 1, shard), y: sliceRows(y, 1, shard), weight: sliceRows(weight, 1, shard) }
        : { x0: batch.x, t, y, weight };
      const pending = model.trainStep(mine, { ...hp, lr, shardOffset: run.shard.offset, globalBatch: run.shard.globalBatch });
      const posAfter = loader.position();
      const nextBatch = run.step + 1 < totalSteps ? loader.next() : undefined;
      nextBatch?.catch(() => {});
      const r = await pending;
      run.dataPos = posAfter;
      const meanLoss = run.record(r, t, lr, batch.epoch, totalSteps);
      opts.onStep?.(run.step, meanLoss);
      await run.maybeEvaluate(model, coefs, totalSteps);
      run.syncStop();
      run.maybeSave(model, totalSteps);
      if (nextBatch) batch = await nextBatch;
    }
    return run.finish(model, totalSteps);
  } finally {
    run.close();
    await loader?.close();
    if (!loader) await dataset.close();
    model.dispose();
  }
}

/** AdamW, clipping, EMA and the vb term's scale: everything of a step but the learning rate. */
function optimizerHyper(c: Config): Omit<OptimizerHyper, 'lr'> {
  return {
    beta1: c.optimizer.betas[0],
    beta2: c.optimizer.betas[1],
    eps: c.optimizer.eps,
    weightDecay: c.optimizer.weight_decay,
    maxGradNorm: c.optimizer.max_grad_norm,
    emaDecay: c.ema.decay,
    vbScale: c.diffusion.rescale_learned_sigmas ? c.diffusion.diffusion_steps / 1000 : 1,
  };
}
