// File-system failures said in words: a full disk, a read-only or missing
// folder become a CheckpointError naming the file or folder and, for a full
// disk, how much space the write needs and how much is free.
import { accessSync, appendFileSync, constants, mkdirSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { CheckpointError, SpeedTrainError } from '../errors.js';
import { formatBytes } from '../progress.js';

/** Bytes free to an unprivileged writer on the file system holding `dir`, or undefined where unknown. */
export function freeBytes(dir: string): number | undefined {
  try {
    const s = statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}

const code = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code;

/** Why a write failed, in words, with the space figures for a full disk. */
export function describeWriteError(e: unknown, dir: string, neededBytes?: number, key = 'experiment_dir'): string {
  const c = code(e);
  const raw = (e as Error).message ?? String(e);
  switch (c) {
    case 'ENOSPC':
    case 'EDQUOT': {
      const free = freeBytes(dir);
      const need = neededBytes !== undefined ? `the checkpoint needs ${formatBytes(neededBytes)} (${neededBytes} bytes)` : 'more space is needed';
      const have = free !== undefined ? `, ${formatBytes(free)} (${free} bytes) free on the file system of ${dir}` : '';
      return `${c === 'EDQUOT' ? 'disk quota exceeded' : 'no space left on device'} (${c}): ${need}${have}; free some space (or set ${key} elsewhere) and resume`;
    }
    case 'EROFS':
      return `read-only file system (EROFS): ${key} must be on a writable file system`;
    case 'EACCES':
    case 'EPERM':
      return `permission denied (${c}): ${key} must be writable by this user`;
    case 'ENOENT':
      return `no such file or directory (ENOENT): a parent folder is missing or was removed`;
    case 'ENOTDIR':
      return `a path component is a file, not a folder (ENOTDIR)`;
    default:
      return `cannot write (${c ?? raw})`;
  }
}

/**
 * Creates `dir` (and its parents) and proves it writable by creating and
 * removing a probe file, so that an unusable experiment_dir fails at the
 * start with the folder named, not at the first checkpoint.
 */
export function ensureWritableDir(dir: string, what = 'experiment_dir', key = what === 'checkpoint folder' ? 'experiment_dir' : what): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    // A recursive mkdir on a read-only file system reports ENOENT; the
    // nearest existing folder says what is really wrong.
    const base = nearestExisting(dir);
    let why = e;
    try { accessSync(base, constants.W_OK); } catch (e2) { why = e2; }
    throw new CheckpointError(dir, `${what}: cannot create the folder: ${describeWriteError(why, base, undefined, key)}` +
      (why !== e ? ` (the nearest existing folder ${base} is not writable)` : ''));
  }
  // Named like every other interrupted write's temporary (.tmp-...): a kill between
  // creating and removing it leaves a file that readers already skip, and the next
  // process removes it here.
  removeDeadTemporaries(dir, PROBE);
  const probe = path.join(dir, `.tmp-probe-${process.pid}`);
  try {
    accessSync(dir, constants.W_OK);
    writeFileSync(probe, '');
    rmSync(probe, { force: true });
  } catch (e) {
    rmSync(probe, { force: true });
    throw new CheckpointError(dir, `${what}: the folder is not writable: ${describeWriteError(e, dir, undefined, key)}`);
  }
}

/** Whether a process with this pid still runs (EPERM: it does, under another user). */
export function isAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

/** ensureWritableDir's probe file: .tmp-probe-<pid>. */
const PROBE = /^\.tmp-probe-(?<pid>\d+)$/;

/**
 * The temporary of an atomic file write (writeFileAtomic, the .npy/.npz stream
 * writers): .<name>.<pid>.<ms>.tmp beside the file it becomes.
 */
export const ATOMIC_TEMPORARY = /^\..+\.(?<pid>\d+)\.\d+\.tmp$/;

/**
 * Removes the files of `dir` that `pattern` matches (its `pid` group names the
 * writing process) whose writer no longer runs: what a kill -9 or a power loss
 * left behind. Temporaries of live processes (another run writing into the same
 * folder) are kept. Returns the names removed.
 */
export function removeDeadTemporaries(dir: string, pattern: RegExp): string[] {
  let names: string[] = [];
  try { names = readdirSync(dir); } catch { return []; }
  const removed: string[] = [];
  for (const n of names) {
    const pid = Number(pattern.exec(n)?.groups?.pid ?? NaN);
    if (!Number.isSafeInteger(pid) || pid === process.pid || isAlive(pid)) continue;
    try {
      rmSync(path.join(dir, n), { force: true });
      removed.push(n);
    } catch { /* a folder of that name, or removed meanwhile: not ours to force */ }
  }
  return removed;
}

function nearestExisting(dir: string): string {
  let d = path.resolve(dir);
  for (;;) {
    try {
      accessSync(d);
      return d;
    } catch {
      const up = path.dirname(d);
      if (up === d) return d;
      d = up;
    }
  }
}

/**
 * Writes (or appends to) one of a run's own files (config.yaml, metrics.jsonl):
 * a full disk or an unwritable folder is an error naming the file and why, not a
 * raw ENOSPC stack. Checkpoints have their own atomic writer.
 */
export function writeRunFile(file: string, data: string, opts: { append?: boolean } = {}): void {
  try {
    if (opts.append) appendFileSync(file, data);
    else writeFileSync(file, data);
  } catch (e) {
    throw new SpeedTrainError(`${file}: ${describeWriteError(e, path.dirname(file))}`);
  }
}

