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
export function describeWriteError(e: unknown, dir: string, neededBytes?: number): string {
  const c = code(e);
  const raw = (e as Error).message ?? String(e);
  switch (c) {
    case 'ENOSPC':
    case 'EDQUOT': {
      const free = freeBytes(dir);
      const need = neededBytes !== undefined ? `the checkpoint needs ${formatBytes(neededBytes)} (${neededBytes} bytes)` : 'more space is needed';
      const have = free !== undefined ? `, ${formatBytes(free)} (${free} bytes) free on the file system of ${dir}` : '';
      return `${c === 'EDQUOT' ? 'disk quota exceeded' : 'no space left on device'} (${c}): ${need}${have}; free some space (or set experiment_dir elsewhere) and resume`;
    }
    case 'EROFS':
      return `read-only file system (EROFS): experiment_dir must be on a writable file system`;
    case 'EACCES':
    case 'EPERM':
      return `permission denied (${c}): experiment_dir must be writable by this user`;
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
export function ensureWritableDir(dir: string, what = 'experiment_dir'): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    // A recursive mkdir on a read-only file system reports ENOENT; the
    // nearest existing folder says what is really wrong.
    const base = nearestExisting(dir);
    let why = e;
    try { accessSync(base, constants.W_OK); } catch (e2) { why = e2; }
    throw new CheckpointError(dir, `${what}: cannot create the folder: ${describeWriteError(why, base)}` +
      (why !== e ? ` (the nearest existing folder ${base} is not writable)` : ''));
  }
  // Named like every other interrupted write's temporary (.tmp-...): a kill between
  // creating and removing it leaves a file that readers already skip, and the next
  // process removes it here.
  removeDeadProbes(dir);
  const probe = path.join(dir, `.tmp-probe-${process.pid}`);
  try {
    accessSync(dir, constants.W_OK);
    writeFileSync(probe, '');
    rmSync(probe, { force: true });
  } catch (e) {
    rmSync(probe, { force: true });
    throw new CheckpointError(dir, `${what}: the folder is not writable: ${describeWriteError(e, dir)}`);
  }
}

/** Whether a process with this pid still runs (EPERM: it does, under another user). */
export function isAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

function removeDeadProbes(dir: string): void {
  let names: string[] = [];
  try { names = readdirSync(dir); } catch { return; }
  for (const n of names) {
    const m = /^\.tmp-probe-(\d+)$/.exec(n);
    if (m && Number(m[1]) !== process.pid && !isAlive(Number(m[1]))) rmSync(path.join(dir, n), { force: true });
  }
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

