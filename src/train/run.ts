// One training run's state and everything it writes to, so that the loop in
// loop.ts reads as the algorithm: where the run starts (fresh or resumed, the same
// on every rank), its generators and data position, which process writes
// (rank 0) and the sinks: checkpoints, metrics.jsonl, TensorBoard, the progress
// line, the stop signals and FID during training.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { writeRunFile } from '../checkpoint/fs.js';
import { ensureWritableDir, RunCheckpoints } from '../checkpoint/index.js';
import { configToYaml } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { DiffusionCoefs } from '../diffusion/coefs.js';
import type { DataPosition } from '../data/index.js';
import type { DiTModel, TrainStepResult } from '../native.js';
import { abortWorld, broadcastJson, maxOverRanks, quietStream, shardOf, world, type Shard, type World } from '../parallel/index.js';
import { attachCollective } from '../parallel/train.js';
import { Progress } from '../progress.js';
import { Rng, type RngState } from '../rng.js';
import { EventWriter, writeEvalScalars, writeMetricsLine } from '../tensorboard/index.js';
import { evalShare, TrainingEval, type EvalLine, type TrainedSince } from './evaluation.js';
import { prepareFreshRun, resolveResume } from './fresh-run.js';
import { installStopSignals, signalNamed, signalNumber, skipReason, SkipGuard, type StopSignal } from './guard.js';
import { initFrom } from './init-from.js';
import { accumulate, emptyAccum, summarise, type MetricsAccum, type MetricsLine } from './metrics.js';

/** The TypeScript side of a checkpoint's state (besides the native noise and Adam step). */
export interface TrainState {
  rng: RngState;
  data: DataPosition;
  accum: MetricsAccum;
}

export interface RunOptions {
  /** checkpoint to continue from (a directory or "latest"); null: a fresh run */
  resume: string | null;
  /** log lines (rank 0; default: stdout) */
  log?: (msg: string) => void;
  /** progress output (default: stderr) */
  progressStream?: NodeJS.WriteStream;
  /** install the SIGINT/SIGTERM/SIGHUP/SIGUSR2 handlers (checkpoint, then stop) */
  handleSignals: boolean;
}

/** Keeps metrics.jsonl lines up to `step` (a resumed run rewrites what came after). */
function truncateMetrics(file: string, step: number): void {
  if (!existsSync(file)) return;
  const kept = readFileSync(file, 'utf8').split('\n').filter((l) => {
    if (!l.trim()) return false;
    try { return (JSON.parse(l) as { step: number }).step <= step; } catch { return false; }
  });
  writeRunFile(file, kept.map((l) => l + '\n').join(''));
}

export class Run {
  readonly w: World;
  /** this rank's slice of every global batch */
  readonly shard: Shard;
  readonly log: (msg: string) => void;
  readonly exp: string;
  private readonly metricsFile: string;
  private readonly checkpoints: RunCheckpoints;

  /** training steps done (skipped ones included) */
  step = 0;
  /** time steps and label dropout; its state goes into every checkpoint */
  rng: Rng;
  /** where the loader starts (undefined: the beginning) */
  dataStart: DataPosition | undefined;
  /** the loader's position after the last batch a step consumed (what a checkpoint records) */
  dataPos: DataPosition | undefined;
  private accum: MetricsAccum = emptyAccum();
  private lastLine: MetricsLine | undefined;
  private intervalStart = Date.now();
  private intervalImages = 0;

  private tb: EventWriter | undefined;
  private progress: Progress | undefined;
  private guard: SkipGuard | undefined;
  private evaluator: TrainingEval | null = null;
  /** where the training time an evaluation is weighed against began: the previous evaluation's end, or this session's first step */
  private trainedSince = { step: 0, at: Date.now() };
  private removeSignals = () => {};
  private stopSignal: StopSignal | undefined;
  /** the checkpoint this run wrote last ('' before the first) */
  private lastSaved = '';
  private readonly started = Date.now();

  constructor(readonly c: Config, private readonly opts: RunOptions) {
    this.w = world();
    this.shard = shardOf(this.w, c.data.batch_size);
    this.log = !this.w.isRoot ? () => {} : opts.log ?? ((m: string) => process.stdout.write(m + '\n'));
    this.exp = c.experiment_dir;
    this.metricsFile = path.join(this.exp, 'metrics.jsonl');
    this.checkpoints = new RunCheckpoints(this.exp, { keep: c.ckpt_keep, keepEvery: c.ckpt_keep_every });
    this.rng = new Rng(c.seed * 4 + 2);
  }

  /**
   * Where the run starts: a fresh model (init_from) or a checkpoint read by rank 0,
   * then rank 0's weights and state on every rank (a resume works on any world
   * size). Rank 0 alone prepares experiment_dir and writes config.yaml.
   */
  begin(model: DiTModel): void {
    const { c, w, log } = this;
    // latest: an error naming the folder when it holds no checkpoint; auto: a fresh start then
    const spec = resolveResume(this.opts.resume, this.exp, w.isRoot ? log : () => {});
    if (w.isRoot) {
      if (!spec) prepareFreshRun(this.exp, c.overwrite, log); // before anything of this run is written
      ensureWritableDir(this.exp); // an unwritable experiment_dir fails here, named
      writeRunFile(path.join(this.exp, 'config.yaml'), configToYaml(c));
    }
    if (spec && !w.isRoot) {
      // rank 0 reads the checkpoint; its state and weights come below
    } else if (spec) {
      // "latest" falls back past a damaged newest checkpoint (warning naming it).
      const { dir, state } = this.checkpoints.resume(model, spec, log);
      const ts = state.train as TrainState;
      this.step = state.step;
      this.rng = Rng.fromState(ts.rng);
      this.dataStart = ts.data;
      this.accum = ts.accum;
      truncateMetrics(this.metricsFile, this.step);
      log(`resumed from ${dir} at step ${this.step}`);
    } else {
      initFrom(model, c, log); // rank 0's weights reach the others with the state below
      if (!spec && w.isRoot && existsSync(this.metricsFile)) writeRunFile(this.metricsFile, ''); // a fresh run starts a fresh log
    }
    if (w.distributed) {
      const st = broadcastJson({ step: this.step, rng: this.rng.state(), data: this.dataStart ?? null, accum: this.accum });
      this.step = st.step;
      this.rng = Rng.fromState(st.rng);
      this.dataStart = st.data ?? undefined;
      this.accum = st.accum;
      attachCollective(model, c.device, w);
    }
  }

  /** The sinks: TensorBoard, FID during training, the stop signals, the progress line and the skip guard. */
  async open(totalSteps: number): Promise<void> {
    const { c, w } = this;
    this.tb = c.tensorboard && w.isRoot ? new EventWriter(this.exp) : undefined;
    if (this.tb && this.step > 0) this.tb.sessionStart(this.step); // TensorBoard drops the older files' events from here on
    this.evaluator = await TrainingEval.open(c, w, this.log);
    if (this.opts.handleSignals) {
      this.removeSignals = installStopSignals((sig) => { this.stopSignal = sig; }, {
        quiet: !w.isRoot,
        // one rank leaving alone would leave the others waiting in a collective
        onSecond: (sig, code) => { if (w.distributed) abortWorld(code, `second ${sig}: exiting without a checkpoint`); },
      });
    }
    // Off a TTY the log lines are the progress; a plain line only after a minute without one.
    this.progress = new Progress('train', totalSteps, w.isRoot ? this.opts.progressStream : quietStream(), this.step, { plainFraction: 0, plainSeconds: 60 });
    this.guard = new SkipGuard(c.max_consecutive_skips, this.step, () => this.lastSaved || this.checkpoints.newest());
    this.intervalStart = Date.now();
    this.trainedSince = { step: this.step, at: Date.now() }; // the reference statistics above are set-up, not training
  }

  get stopRequested(): boolean {
    return this.stopSignal !== undefined;
  }

  /**
   * Books one finished step: its figures into the interval's means, the skip guard
   * (throws after max_consecutive_skips in a row, before any checkpoint), the
   * progress line, and every log_every steps (and at the last) a metrics line.
   */
  record(r: TrainStepResult, t: Int32Array, lr: number, epoch: number, totalSteps: number): number {
    const c = this.c;
    const N = c.data.batch_size;
    const T = c.diffusion.diffusion_steps;
    this.step++;
    accumulate(this.accum, T, t, r);
    this.guard!.record(this.step, skipReason(r));
    this.intervalImages += N;
    const meanLoss = r.loss.reduce((a, b) => a + b, 0) / N;
    this.progress!.tick(this.step, { loss: r.skipped ? 'skipped' : meanLoss, 'img/s': this.intervalImages / Math.max(1e-3, (Date.now() - this.intervalStart) / 1000) });
    if (this.step % c.log_every === 0 || this.step === totalSteps) {
      const sec = (Date.now() - this.intervalStart) / 1000;
      const l = summarise(this.accum, { step: this.step, epoch, lr, imagesPerSec: this.intervalImages / Math.max(1e-6, sec), T });
      this.lastLine = l;
      if (this.w.isRoot) {
        writeRunFile(this.metricsFile, JSON.stringify(l) + '\n', { append: true });
        if (this.tb) writeMetricsLine(this.tb, l);
      }
      this.progress!.line(this.step, {
        loss: l.loss ?? 'n/a', mse: l.mse ?? 'n/a', vb: l.vb ?? 'n/a', 'img/s': l.images_per_sec, lr, grad: l.grad_norm ?? 'n/a',
        ...(l.skipped ? { skipped: l.skipped } : {}),
      });
      this.accum = emptyAccum();
      this.intervalStart = Date.now();
      this.intervalImages = 0;
    }
    return meanLoss;
  }

  /**
   * FID during training when it is due (every evaluate.every steps and at the last):
   * every rank samples its share, rank 0 scores and logs. Its time is kept out of
   * the throughput of the interval it falls in.
   */
  async maybeEvaluate(model: DiTModel, coefs: DiffusionCoefs, totalSteps: number): Promise<void> {
    if (!this.evaluator || !this.evaluator.due(this.step, totalSteps)) return;
    const t0 = Date.now();
    const trained = { since_step: this.trainedSince.step, train_seconds: (t0 - this.trainedSince.at) / 1000 };
    const e = await this.evaluator.run(model, coefs);
    if (e) this.logEval({ ...e, ...trained });
    this.intervalStart += Date.now() - t0;
    this.trainedSince = { step: this.step, at: Date.now() };
  }

  private logEval(e: EvalLine & TrainedSince): void {
    writeRunFile(this.metricsFile, JSON.stringify({ step: this.step, eval: e }) + '\n', { append: true });
    if (this.tb) writeEvalScalars(this.tb, this.step, e);
    this.progress!.line(this.step, {
      [`FID(${e.feature_space})`]: e.fid, ...(e.kid_mean === null ? {} : { KID: e.kid_mean }), ...(e.is_mean == null ? {} : { IS: e.is_mean }), samples: e.num_samples,
      eval: evalShare(e.seconds, e.train_seconds, e.since_step),
    });
  }

  /**
   * Every rank stops at the same step when any rank was signalled, and with the
   * same signal (one rank may see mpirun's forwarded signal a step later than another).
   */
  syncStop(): void {
    if (!this.w.distributed) return;
    const sig = signalNamed(maxOverRanks(signalNumber(this.stopSignal)));
    if (sig) this.stopSignal = sig;
  }

  /** Writes the checkpoint of the current step (rank 0); returns its folder on every rank. */
  save(model: DiTModel): string {
    const train: TrainState = { rng: this.rng.state(), data: this.dataPos!, accum: this.accum };
    this.lastSaved = this.w.isRoot ? this.checkpoints.write(model, { step: this.step, config: this.c, train }) : this.checkpoints.dirOf(this.step);
    return this.lastSaved;
  }

  /** A checkpoint every ckpt_every steps (the last step has its own, written by finish). */
  maybeSave(model: DiTModel, totalSteps: number): void {
    if (this.c.ckpt_every > 0 && this.step % this.c.ckpt_every === 0 && this.step < totalSteps) this.save(model);
  }

  /** Ends the run: the final checkpoint (unless this step has one), and what train() returns. */
  finish(model: DiTModel, totalSteps: number): TrainResult {
    this.progress!.done();
    if (!this.stopRequested) this.guard!.finish(this.step); // a run that applied no step fails instead of checkpointing it
    const ckpt = this.lastSaved === this.checkpoints.dirOf(this.step) ? this.lastSaved : this.save(model);
    this.log(`${this.stopRequested ? 'interrupted; ' : ''}checkpoint: ${ckpt}`);
    return {
      step: this.step,
      totalSteps,
      finalLoss: this.lastLine ? this.lastLine.loss : null,
      checkpoint: ckpt,
      interrupted: this.stopRequested,
      signal: this.stopSignal,
      skipped: this.guard!.skipped.count,
      seconds: (Date.now() - this.started) / 1000,
    };
  }

  close(): void {
    this.removeSignals();
    this.tb?.close();
    this.evaluator?.close();
  }
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
