// Guards of the training loop against runs that cannot make progress or that are
// stopped from outside: why a step was skipped, the stop after too many skipped
// steps in a row, and the signals that end a run with a checkpoint.
import { constants } from 'node:os';

import type { Config } from '../config/schema.js';
import { ConfigError, SpeedTrainError } from '../errors.js';

/** Why the native step skipped an update (nothing was written in every case). */
export type SkipReason = 'loss' | 'gradient' | 'update';
export const SKIP_REASONS: readonly SkipReason[] = ['loss', 'gradient', 'update'];

/**
 * The reason of a skipped step, from what the step returns: a non-finite loss, else a
 * non-finite gradient norm, else the update itself would have stored a non-finite
 * parameter, moment or EMA value (the native check pass); null for an applied step.
 */
export function skipReason(r: { loss: ArrayLike<number>; gradNorm: number; skipped: boolean }): SkipReason | null {
  if (!r.skipped) return null;
  for (let i = 0; i < r.loss.length; i++) if (!Number.isFinite(r.loss[i])) return 'loss';
  return Number.isFinite(r.gradNorm) ? 'update' : 'gradient';
}

/** A run stopped because it made no progress (every recent step was skipped). */
export class NoProgressError extends SpeedTrainError {
  override name = 'NoProgressError';
}

const HINTS: Record<SkipReason, string> = {
  loss: 'the loss was not finite: look for huge or non-finite values in the data (data.latent_scale, the .npy) or a diverged model',
  gradient: 'the gradient was not finite: lower optimizer.lr, set optimizer.max_grad_norm, or check the data',
  update: 'loss and gradient were finite but the AdamW update would have written Inf/NaN into the weights: optimizer.lr or optimizer.weight_decay is too large',
};

export interface SkipSummary {
  count: number;
  byReason: Record<SkipReason, number>;
}

/**
 * Counts skipped steps. `record` throws NoProgressError once `maxConsecutive` steps in
 * a row were skipped (0: never); `finish` throws when a run skipped every one of its
 * steps, so that it cannot end with exit status 0 and a made-up loss.
 */
export class SkipGuard {
  private consecutive = 0;
  private readonly run: SkipSummary = { count: 0, byReason: { loss: 0, gradient: 0, update: 0 } };
  private readonly streak: Record<SkipReason, number> = { loss: 0, gradient: 0, update: 0 };
  private applied = 0;
  private lastApplied: number;

  constructor(
    private readonly maxConsecutive: number,
    /** step the run starts from (the weights of that step are the last good ones until an update is applied) */
    startStep: number,
    /** the checkpoint the user would fall back to (for the message) */
    private readonly lastCheckpoint: () => string,
  ) {
    this.lastApplied = startStep;
  }

  get skipped(): SkipSummary {
    return { count: this.run.count, byReason: { ...this.run.byReason } };
  }

  record(step: number, reason: SkipReason | null): void {
    if (reason === null) {
      this.consecutive = 0;
      for (const k of SKIP_REASONS) this.streak[k] = 0;
      this.applied++;
      this.lastApplied = step;
      return;
    }
    this.consecutive++;
    this.streak[reason]++;
    this.run.count++;
    this.run.byReason[reason]++;
    if (this.maxConsecutive > 0 && this.consecutive >= this.maxConsecutive) {
      throw new NoProgressError(`training stopped at step ${step}: the last ${this.consecutive} steps were all skipped ` +
        `(max_consecutive_skips = ${this.maxConsecutive}); ${this.why(this.streak)}. ${this.state()}`);
    }
  }

  /** At the end of a run: an error when no step of it was applied. */
  finish(step: number): void {
    if (this.applied === 0 && this.run.count > 0) {
      throw new NoProgressError(`training made no progress: all ${this.run.count} steps of this run (to step ${step}) were skipped; ` +
        `${this.why(this.run.byReason)}. ${this.state()}`);
    }
  }

  private why(counts: Record<SkipReason, number>): string {
    return SKIP_REASONS.filter((k) => counts[k] > 0).map((k) => `${counts[k]} because ${HINTS[k]}`).join('; ');
  }

  private state(): string {
    const ck = this.lastCheckpoint();
    return `The weights are those of step ${this.lastApplied} (no update was applied since); ` +
      (ck ? `the last checkpoint is ${ck}; ` : '') + 'no checkpoint was written for this state';
  }
}

/**
 * Optimizer settings the schema's ranges cannot express: Adam betas must be < 1 (the
 * bias correction divides by 1 - beta^t). The schema bounds lr and weight_decay by 1.
 */
export function checkOptimizerConfig(o: Config['optimizer']): void {
  o.betas.forEach((b, i) => {
    if (!(b < 1)) throw new ConfigError('optimizer.betas', `element ${i}: ${b} is out of range: expected a value in [0, 1) (the bias correction divides by 1 - beta^t, 0 for beta = 1)`);
  });
}

/** Signals that stop training like Ctrl-C: a checkpoint after the current step, then exit 128 + signo. */
// SIGTERM: Slurm, Kubernetes and mpirun stop a job with it; SIGUSR2: OpenMPI's
// mpirun forwards it to every rank (it turns SIGINT/SIGTERM into a kill of the job).
export const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR2'] as const;
export type StopSignal = (typeof STOP_SIGNALS)[number];

/** The exit status of a process stopped by `sig` (the shell's convention): SIGINT 130, SIGTERM 143, SIGHUP 129. */
export function signalExitCode(sig: StopSignal): number {
  return 128 + constants.signals[sig];
}

/** The stop signal with number `signo` (signalNumber's inverse), or undefined. */
export function signalNamed(signo: number): StopSignal | undefined {
  return STOP_SIGNALS.find((s) => constants.signals[s] === signo);
}
export const signalNumber = (sig: StopSignal | undefined): number => (sig ? constants.signals[sig] : 0);

let consoleGuarded = false;
let hungUp = false;

/**
 * Makes a closed console harmless: a write to stdout/stderr whose reader is gone
 * (`| tee` or `| head` ended by the same Ctrl-C, `head -1` done reading) fails with
 * EPIPE, and an unhandled stream error would end the process before its
 * checkpoint. Those writes are dropped; the run still logs to metrics.jsonl. After
 * SIGHUP every console write error is dropped (a hung-up terminal answers EIO).
 * Other errors stay fatal. Idempotent.
 */
export function ignoreClosedConsole(): void {
  if (consoleGuarded) return;
  consoleGuarded = true;
  for (const st of [process.stdout, process.stderr]) {
    st.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE' || hungUp) return;
      throw e;
    });
  }
}

/**
 * Installs handlers for STOP_SIGNALS: the first one calls `onStop(sig)` (the loop then
 * checkpoints after the step in flight); a second one exits at once with 128 + signo.
 * Checkpoints are written atomically (temporary directory, then rename) by synchronous
 * code, so no handler runs in the middle of a write and an exit between writes leaves
 * every finished checkpoint intact. Returns the function that removes the handlers.
 */
export function installStopSignals(
  onStop: (sig: StopSignal) => void,
  opts: { quiet?: boolean; onSecond?: (sig: StopSignal, code: number) => void } = {},
): () => void {
  ignoreClosedConsole();
  let first: StopSignal | undefined;
  const say = (s: string) => {
    if (opts.quiet) return;
    try { process.stderr.write(s); } catch { /* a closed console must not stop the checkpoint */ }
  };
  const handlers = STOP_SIGNALS.map((sig) => {
    const h = () => {
      if (first) {
        say(`\nsecond signal (${sig}): exiting without a checkpoint\n`);
        opts.onSecond?.(sig, signalExitCode(sig)); // several processes: end them all
        process.exit(signalExitCode(sig));
      }
      first = sig;
      if (sig === 'SIGHUP') hungUp = true;
      say(`\n${sig === 'SIGINT' ? 'Ctrl-C' : sig}: writing a checkpoint after this step (send it again to quit at once)\n`);
      onStop(sig);
    };
    process.on(sig, h);
    return [sig, h] as const;
  });
  return () => { for (const [sig, h] of handlers) process.off(sig, h); };
}
