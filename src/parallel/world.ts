// The process's place in a data-parallel run: rank, world size and
// local rank from the launcher (mpirun, srun), and the few host collectives the
// TypeScript side needs. One process without a launcher: rank 0 of 1, and MPI
// is never initialised (so nothing changes for a plain `speed-train` run).
import { Writable } from 'node:stream';

import { SpeedTrainError } from '../errors.js';
import { parallelAddon } from './native.js';

export interface World {
  rank: number;
  size: number;
  /** rank among this machine's processes: picks the CUDA device */
  localRank: number;
  /** size > 1 */
  distributed: boolean;
  /** rank 0: the only rank that writes checkpoints, metrics, logs and outputs */
  isRoot: boolean;
}

const SINGLE: World = { rank: 0, size: 1, localRank: 0, distributed: false, isRoot: true };
let current: World | undefined;

/** Which launcher variable says how many processes there are (the same ones native/src/parallel/world.cpp reads). */
export function launcherWorldSize(env: NodeJS.ProcessEnv = process.env): { size: number; from: string | null } {
  for (const k of ['OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'SLURM_STEP_NUM_TASKS']) {
    const v = env[k];
    if (v !== undefined && /^\d+$/.test(v) && Number(v) > 0) return { size: Number(v), from: `${k}=${v}` };
  }
  return { size: 1, from: null };
}

/**
 * Joins the launcher's world (MPI_Init) when it has more than one process.
 * A build without MPI refuses a multi-process launch with the reason.
 */
export function initWorld(): World {
  if (current) return current;
  const { size, from } = launcherWorldSize();
  if (size <= 1) {
    current = SINGLE;
    return current;
  }
  const d = parallelAddon();
  const info = d.info();
  if (!info.mpi) throw new SpeedTrainError(`launched as ${size} processes (${from}), but ${info.mpiReason}`);
  const w = d.init();
  if (w.size !== size) {
    throw new SpeedTrainError(`the launcher says ${size} processes (${from}) but MPI's world has ${w.size}: ` +
      'was the addon built against a different MPI than the one launching it (mpirun --version)?');
  }
  current = { rank: w.rank, size: w.size, localRank: w.localRank, distributed: true, isRoot: w.rank === 0 };
  // MPI_Finalize once the process ends normally (an MPI process that exits
  // without it is reported as failed by mpirun).
  process.once('exit', () => {
    try { d.finalize(); } catch { /* exiting anyway */ }
  });
  return current;
}

/** The world joined by initWorld (a single process when it was never called). */
export function world(): World {
  return current ?? SINGLE;
}

/** true on every rank when `flag` is true on any (one small all-reduce). */
export function anyRank(flag: boolean): boolean {
  const w = world();
  if (!w.distributed) return flag;
  return parallelAddon().allreduceMax([flag ? 1 : 0])[0] === 1;
}

/** The largest of every rank's non-negative integer `v` (v itself on one process). */
export function maxOverRanks(v: number): number {
  const w = world();
  if (!w.distributed) return v;
  return parallelAddon().allreduceMax([v])[0];
}

/** Root's JSON value on every rank (others pass anything, e.g. undefined). */
export function broadcastJson<T>(value: T, root = 0): T {
  const w = world();
  if (!w.distributed) return value;
  const d = parallelAddon();
  const bytes = w.rank === root ? new TextEncoder().encode(JSON.stringify(value ?? null)) : null;
  return JSON.parse(new TextDecoder().decode(d.broadcastBytes(bytes, root))) as T;
}

/** Every rank's bytes, in rank order, on root; [] elsewhere. */
export function gatherBytes(data: Uint8Array, root = 0): Uint8Array[] {
  const w = world();
  if (!w.distributed) return [data];
  return parallelAddon().gatherBytes(data, root);
}

export function barrier(): void {
  if (world().distributed) parallelAddon().barrier();
}

/**
 * Ends every process of the world with `code` after printing why (MPI_Abort):
 * an error on one rank must not leave the others waiting in a collective.
 */
export function abortWorld(code: number, message: string): never {
  const w = world();
  process.stderr.write(`speed-train: error on rank ${w.rank} of ${w.size}: ${message}\n` +
    `speed-train: rank ${w.rank} is aborting all ${w.size} processes (MPI_Abort)\n`);
  parallelAddon().abort(code);
  process.exit(code); // not reached: MPI_Abort ends the process
}

/** A sink for the progress bar and logs of ranks other than 0. */
export function quietStream(): NodeJS.WriteStream {
  const s = new Writable({ write: (_c, _e, cb) => cb() }) as unknown as NodeJS.WriteStream;
  (s as { isTTY: boolean }).isTTY = false;
  return s;
}
