// Checkpoints: <experiment_dir>/checkpoints/<step, 7 digits>/ holding
// model.safetensors, ema.safetensors, optimizer.safetensors (DiT state_dict
// names and shapes) and state.json (step, resolved config, every generator's
// state, data position, and a checksum of every file). Written into a
// temporary directory, fsynced, then renamed, so a crash never leaves a
// half-written checkpoint under its name. Tensors stream one at a time in both
// directions, so memory stays bounded for any model size.
//
// Checksums: a CRC-32 of every tensor and of every file's header, recorded in
// state.json (whose own CRC-32 covers the rest of it). CRC-32 rather than a
// cryptographic hash because the threat is damage, not an attacker (who could
// rewrite state.json too): it detects every burst error up to 32 bits and any
// other corruption with probability 1 - 2^-32, names the damaged tensor, and
// zlib computes it several times faster than SHA-256, which matters at 11 GB (an
// XL/2 checkpoint); docs/checkpoints.md has the measured rates.
import {
  closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeSync,
} from 'node:fs';
import path from 'node:path';
import * as zlib from 'node:zlib';

import { CheckpointError } from '../errors.js';
import type { NoiseState, ParamInfo, Slot } from '../native.js';
import {
  SafetensorsReader, hex32, safetensorsHeader, writeSafetensorsTo, type FileDigest, type LazyTensor, type SafeDtype, asFloat32,
} from '../io/safetensors.js';
import { describeWriteError, ensureWritableDir, freeBytes, isAlive } from './fs.js';
import { Checker, checkDigests, checkStoredConfig, checkTrainState } from './state.js';

export { ensureWritableDir } from './fs.js';
export { checkStoredConfig, checkTrainState } from './state.js';

/** What checkpointing needs from a model (DiTModel satisfies it). */
export interface CheckpointModel {
  params(): ParamInfo[];
  readParam(name: string, slot?: Slot): Float32Array;
  writeParam(name: string, slot: Slot, data: Float32Array): void;
  getNoiseState(): NoiseState;
  setNoiseState(state: NoiseState): void;
  getStep(): number;
  setStep(step: number): void;
}

/** Everything besides the tensors that a resumed run needs (state.json). */
export interface CheckpointState {
  format: 'speed-train-checkpoint';
  version: 1;
  /** training steps done (including skipped ones) */
  step: number;
  /** the resolved config of the run */
  config: unknown;
  /** the native noise stream and Adam's step counter */
  noise: NoiseState;
  adam_step: number;
  /** TypeScript generators and data position, opaque here (src/train owns them) */
  train: unknown;
  /** per-file checksums (absent in checkpoints written before they existed) */
  files?: Record<string, FileDigest>;
}

export const STATE_FILE = 'state.json';
const TENSOR_FILES = ['model.safetensors', 'ema.safetensors', 'optimizer.safetensors'] as const;
type TensorFile = (typeof TENSOR_FILES)[number];
const FILES = [...TENSOR_FILES, STATE_FILE] as const;

export const stepDirName = (step: number): string => String(step).padStart(7, '0');
export const checkpointsDir = (experimentDir: string): string => path.join(experimentDir, 'checkpoints');

function fsyncDir(dir: string): void {
  // Makes the renames durable; some platforms refuse fsync on a directory.
  try {
    const fd = openSync(dir, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch { /* best effort where unsupported */ }
}

/** Removes temporary directories left by writers that died mid-write. */
function cleanStale(root: string): void {
  for (const n of readdirSync(root)) {
    const m = /^\.(tmp|old)-\d+-(\d+)-/.exec(n);
    if (m && Number(m[2]) !== process.pid && !isAlive(Number(m[2]))) rmSync(path.join(root, n), { recursive: true, force: true });
  }
}

const f32Bytes = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** One file's tensors, read from the model only when the writer reaches each. */
function slotTensors(model: CheckpointModel, slot: Slot, prefix = '', trainableOnly = false): LazyTensor[] {
  return model.params()
    .filter((p) => !trainableOnly || p.trainable)
    .map((p) => ({ name: prefix + p.name, dtype: 'F32' as SafeDtype, shape: p.shape, bytes: () => f32Bytes(model.readParam(p.name, slot)) }));
}

const tensorBytes = (ts: readonly LazyTensor[]): number => ts.reduce((s, t) => s + 4 * t.shape.reduce((a, b) => a * b, 1), 0);

/** state.json text with its own CRC-32 (of the JSON without that field) as the last field. */
function stateText(s: CheckpointState): string {
  const crc = hex32(zlib.crc32(JSON.stringify(s)));
  return JSON.stringify({ ...s, state_crc32: crc }, null, 1) + '\n';
}

export interface WriteOptions {
  /** refuse to start when the file system reports less free space than the checkpoint needs (default true) */
  checkFreeSpace?: boolean;
}

/**
 * Writes a checkpoint atomically and returns its directory. On any failure
 * (a full disk, say) the temporary directory is removed, the previous
 * checkpoints stay as they were, and the error names the file being written.
 */
export function writeCheckpoint(
  model: CheckpointModel,
  experimentDir: string,
  state: Omit<CheckpointState, 'format' | 'version' | 'noise' | 'adam_step' | 'files'>,
  opts: WriteOptions = {},
): string {
  const root = checkpointsDir(experimentDir);
  ensureWritableDir(root, 'checkpoint folder');
  cleanStale(root);
  const name = stepDirName(state.step);
  const tag = `${name}-${process.pid}-${Date.now()}`;
  const tmp = path.join(root, `.tmp-${tag}`);
  const full: CheckpointState = {
    format: 'speed-train-checkpoint',
    version: 1,
    ...state,
    noise: model.getNoiseState(),
    adam_step: model.getStep(),
  };
  const meta = { format: 'pt', step: String(state.step) };
  const plan: [TensorFile, LazyTensor[], Record<string, string>][] = [
    ['model.safetensors', slotTensors(model, 'model'), meta],
    ['ema.safetensors', slotTensors(model, 'ema'), meta],
    [
      'optimizer.safetensors',
      [...slotTensors(model, 'adam_m', 'exp_avg.', true), ...slotTensors(model, 'adam_v', 'exp_avg_sq.', true)],
      { ...meta, adam_step: String(full.adam_step) },
    ],
  ];
  // What the checkpoint occupies (headers + tensors; state.json is small): the
  // figure a user needs when the disk is full.
  const needed = plan.reduce((s, [, ts, m]) => s + safetensorsHeader(ts, m).byteLength + tensorBytes(ts), 0) + 64 * 1024;
  const free = freeBytes(root);
  if ((opts.checkFreeSpace ?? true) && free !== undefined && free < needed) {
    throw new CheckpointError(path.join(root, name), describeWriteError(Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' }), root, needed) +
      ' (checked before writing; the previous checkpoints are untouched)');
  }
  let current = tmp;
  try {
    mkdirSync(tmp);
    const files: Record<string, FileDigest> = {};
    for (const [file, tensors, m] of plan) {
      current = path.join(tmp, file);
      const fd = openSync(current, 'w');
      try {
        files[file] = writeSafetensorsTo(fd, tensors, m);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
    full.files = files;
    current = path.join(tmp, STATE_FILE);
    const fd = openSync(current, 'w');
    try {
      const text = Buffer.from(stateText(full));
      for (let done = 0; done < text.byteLength; ) done += writeSync(fd, text, done);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    fsyncDir(tmp);
    const final = path.join(root, name);
    current = final;
    if (existsSync(final)) {
      // Replacing a checkpoint of the same step: move the old one aside first,
      // so that one complete copy exists at every moment.
      const old = path.join(root, `.old-${tag}`);
      renameSync(final, old);
      renameSync(tmp, final);
      fsyncDir(root);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, final);
      fsyncDir(root);
    }
    return final;
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    if (e instanceof CheckpointError) throw e;
    if ((e as NodeJS.ErrnoException).code === undefined) throw e; // a programming error, not the file system
    throw new CheckpointError(current, `writing the checkpoint of step ${state.step} failed: ${describeWriteError(e, root, needed)}; ` +
      'the partial checkpoint was removed, earlier checkpoints are intact');
  }
}

export interface RetentionPolicy {
  /** keep the newest this many (0: keep every checkpoint) */
  keep: number;
  /** also keep those whose step is a multiple of this (0: none) */
  keepEvery: number;
  /** checkpoint directories never deleted (the one a run resumed from) */
  protect?: readonly string[];
}

/**
 * The steps a retention policy deletes from `steps`: all but the newest
 * `keep`, the multiples of `keepEvery` and `protect`. The newest is never
 * among them.
 */
export function stepsToPrune(steps: readonly number[], keep: number, keepEvery: number, protect: readonly number[] = []): number[] {
  if (keep <= 0) return [];
  const sorted = [...steps].sort((a, b) => a - b);
  const newest = new Set(sorted.slice(-Math.max(1, keep)));
  return sorted.filter((s) => !newest.has(s) && !(keepEvery > 0 && s % keepEvery === 0) && !protect.includes(s));
}

/**
 * Deletes the checkpoints `policy` does not keep; returns their directories.
 * Each is first renamed to a `.old-` folder, so a kill mid-delete leaves no
 * half-deleted step folder (the next writer removes the leftover).
 */
export function pruneCheckpoints(experimentDir: string, policy: RetentionPolicy): string[] {
  const all = listCheckpoints(experimentDir);
  const stepOf = (d: string) => Number(path.basename(d));
  const protect = (policy.protect ?? []).map((d) => path.resolve(d));
  const gone = stepsToPrune(all.map(stepOf), policy.keep, policy.keepEvery, all.filter((d) => protect.includes(path.resolve(d))).map(stepOf));
  const root = checkpointsDir(experimentDir);
  const removed: string[] = [];
  const olds: string[] = [];
  try {
    for (const step of gone) {
      const dir = path.join(root, stepDirName(step));
      const old = path.join(root, `.old-${stepDirName(step)}-${process.pid}-${Date.now()}`);
      try {
        renameSync(dir, old);
      } catch (e) {
        throw new CheckpointError(dir, `cannot delete the checkpoint (ckpt_keep): ${describeWriteError(e, root)}`);
      }
      olds.push(old);
      removed.push(dir);
    }
  } finally {
    if (olds.length > 0) fsyncDir(root);
    for (const old of olds) rmSync(old, { recursive: true, force: true });
  }
  return removed;
}

/** Step directories (complete ones: holding state.json), oldest first. */
export function listCheckpoints(experimentDir: string): string[] {
  const root = checkpointsDir(experimentDir);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((n) => /^\d{7,}$/.test(n) && existsSync(path.join(root, n, STATE_FILE)))
    .sort((a, b) => Number(a) - Number(b))
    .map((n) => path.join(root, n));
}

/** A checkpoint path from a user's spec: a directory, or "latest"/null = newest in experimentDir. */
export function resolveCheckpoint(spec: string | null | undefined, experimentDir: string): string {
  if (!spec || spec === 'latest') {
    const all = listCheckpoints(experimentDir);
    if (all.length === 0) throw new CheckpointError(checkpointsDir(experimentDir), 'no checkpoint found (train first, or name one)');
    return all[all.length - 1];
  }
  if (!existsSync(spec)) throw new CheckpointError(spec, 'checkpoint directory not found');
  if (!statSync(spec).isDirectory()) throw new CheckpointError(spec, `expected a checkpoint directory holding ${FILES.join(', ')}`);
  return spec;
}

/**
 * Runs `attempt` on the checkpoint `spec` names. For "latest" (or null) a
 * checkpoint that fails with a CheckpointError (missing file, bad checksum,
 * bad state.json) is reported through `warn` and the next older one is tried;
 * the error comes only when none is usable. A directory the user named is
 * used as it is (no silent substitute).
 */
export function useCheckpoint<T>(
  spec: string | null | undefined,
  experimentDir: string,
  attempt: (dir: string) => T,
  warn: (msg: string) => void = (m) => process.stderr.write(m + '\n'),
): { dir: string; value: T } {
  if (spec && spec !== 'latest') {
    const dir = resolveCheckpoint(spec, experimentDir);
    return { dir, value: attempt(dir) };
  }
  const all = listCheckpoints(experimentDir).reverse();
  if (all.length === 0) throw new CheckpointError(checkpointsDir(experimentDir), 'no checkpoint found (train first, or name one)');
  const bad: string[] = [];
  for (const dir of all) {
    try {
      const value = attempt(dir);
      return { dir, value };
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      bad.push(`${path.basename(dir)}: ${e.message}`);
      warn(`warning: checkpoint ${dir} is unusable, ${e.message}; ${dir === all[all.length - 1] ? 'no older checkpoint left' : 'falling back to the previous one'}`);
    }
  }
  throw new CheckpointError(checkpointsDir(experimentDir), `none of the ${all.length} checkpoint(s) is usable (newest first): ${bad.join(' | ')}`);
}

/** Reads state.json and checks every field this module reads, and its own checksum. */
export function readState(dir: string): CheckpointState {
  const file = path.join(dir, STATE_FILE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CheckpointError(file, `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(file, `invalid JSON (${(e as Error).message}); the file is truncated or damaged`);
  }
  const c = new Checker(file);
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || (raw as { format?: unknown }).format !== 'speed-train-checkpoint') {
    throw new CheckpointError(file, 'not a speed-train checkpoint state (format field missing)');
  }
  const { state_crc32: stored, ...s } = raw as CheckpointState & { state_crc32?: unknown };
  if (stored !== undefined) {
    const got = hex32(zlib.crc32(JSON.stringify(s)));
    if (stored !== got) throw new CheckpointError(file, `checksum mismatch (state_crc32 ${JSON.stringify(stored)}, computed "${got}"): the file is damaged`);
  }
  // Fields other modules may add are allowed; a damaged key name is caught by the checksum,
  // and a checkpoint that records file checksums must carry its own.
  if (s.files !== undefined && stored === undefined) c.fail('state_crc32', 'the checksum of state.json (it records file checksums, so it was written with one)', undefined);
  if (s.version !== 1) throw new CheckpointError(file, `version: expected 1, found ${JSON.stringify(s.version)}`);
  c.int(s.step, 'step');
  const noise = c.obj(s.noise, 'noise', '{seed, offset} (the noise stream)');
  c.int(noise.seed, 'noise.seed');
  c.int(noise.offset, 'noise.offset');
  c.int(s.adam_step, 'adam_step');
  if (!('config' in s)) c.fail('config', 'the resolved config of the run', undefined);
  if (!('train' in s)) c.fail('train', 'the training generators and data position', undefined);
  s.files = checkDigests(s.files, file, TENSOR_FILES);
  return s;
}

/**
 * Opens one tensor file, checks it against its digest (size, header CRC) and
 * that it holds exactly `expected` (names, shapes); reads no tensor data.
 */
function openChecked(file: string, expected: { name: string; shape: number[] }[], digest: FileDigest | undefined): SafetensorsReader {
  const r = SafetensorsReader.open(file);
  try {
    if (digest) {
      if (r.size !== digest.bytes) throw new CheckpointError(file, `size ${r.size} bytes differs from the ${digest.bytes} recorded in state.json (truncated or replaced)`);
      const h = hex32(zlib.crc32(r.headerBytes));
      if (h !== digest.header_crc32) throw new CheckpointError(file, `header checksum mismatch (recorded ${digest.header_crc32}, computed ${h}): the file is damaged`);
    }
    const want = new Set(expected.map((e) => e.name));
    const missing = expected.filter((e) => !r.get(e.name)).map((e) => e.name);
    if (missing.length > 0) {
      throw new CheckpointError(file, `missing ${missing.length} tensor(s) the model needs: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}`);
    }
    const extra = r.entries.map((e) => e.name).filter((n) => !want.has(n));
    if (extra.length > 0) {
      throw new CheckpointError(file, `holds ${extra.length} tensor(s) this model does not have: ${extra.slice(0, 5).join(', ')} (a checkpoint of another model?)`);
    }
    for (const e of expected) {
      const t = r.get(e.name)!;
      if (t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i])) {
        throw new CheckpointError(file, `tensor ${e.name}: shape [${t.shape}] differs from the model's [${e.shape}]`);
      }
      if (digest && !Object.hasOwn(digest.tensor_crc32, e.name)) throw new CheckpointError(file, `tensor ${e.name}: no checksum recorded in state.json`);
    }
    return r;
  } catch (e) {
    r.close();
    throw e;
  }
}

/** Reads one tensor as float32, verifying its checksum when one is recorded. */
function readVerified(r: SafetensorsReader, name: string, digest: FileDigest | undefined): Float32Array {
  const t = r.read(name);
  if (digest) {
    const got = hex32(zlib.crc32(t.bytes));
    const want = digest.tensor_crc32[name];
    if (got !== want) throw new CheckpointError(r.file, `tensor ${name}: checksum mismatch (recorded ${want}, computed ${got}): the file is damaged`);
  }
  // Owned, aligned F32 bytes are used in place; other dtypes widen.
  return t.dtype === 'F32' ? new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4) : asFloat32(t, r.file, name);
}

/** Checks one tensor's checksum without loading it (read in bounded pieces). */
function verifyStreamed(r: SafetensorsReader, name: string, digest: FileDigest | undefined): void {
  if (!digest) return;
  const got = hex32(r.crc32(name));
  if (got !== digest.tensor_crc32[name]) {
    throw new CheckpointError(r.file, `tensor ${name}: checksum mismatch (recorded ${digest.tensor_crc32[name]}, computed ${got}): the file is damaged`);
  }
}

/**
 * Streams the tensors of one file that holds exactly `expected` (names,
 * shapes) into `use`, one at a time, widened to float32: bounded memory for
 * weights files of any size.
 */
export function loadTensorsInto(file: string, expected: { name: string; shape: number[] }[], use: (name: string, data: Float32Array) => void): void {
  const r = openChecked(file, expected, undefined);
  try {
    for (const e of expected) use(e.name, readVerified(r, e.name, undefined));
  } finally {
    r.close();
  }
}

/** Reads one safetensors file and checks that it holds exactly `expected` (names, shapes); for small files. */
export function readTensorsFor(file: string, expected: { name: string; shape: number[] }[]): Map<string, Float32Array> {
  const r = openChecked(file, expected, undefined);
  try {
    return new Map(expected.map((e) => [e.name, readVerified(r, e.name, undefined)]));
  } finally {
    r.close();
  }
}

/**
 * Verifies every tensor checksum of a checkpoint by streaming its files,
 * without a model (for tools and tests); returns the state.
 */
export function verifyCheckpoint(dir: string): CheckpointState {
  const state = readState(dir);
  for (const f of TENSOR_FILES) {
    const file = path.join(dir, f);
    const r = SafetensorsReader.open(file);
    try {
      const d = state.files?.[f];
      if (!d) continue;
      openChecked(file, r.entries, d).close();
      for (const e of r.entries) verifyStreamed(r, e.name, d);
    } finally {
      r.close();
    }
  }
  return state;
}

export interface LoadWhat {
  /** load the raw weights, the EMA weights, the optimizer state (default: all) */
  model?: boolean;
  ema?: boolean;
  optimizer?: boolean;
  /** where a note about an unverifiable (pre-checksum) checkpoint goes (default: stderr) */
  note?: (msg: string) => void;
}

/**
 * Loads a checkpoint into `model` and returns its state. state.json, every
 * file's size, header checksum, tensor names and shapes are checked before
 * anything is written; tensors then stream in one at a time, each verified
 * against its checksum before it is written. A tensor that fails its
 * checksum stops the load with a CheckpointError naming file and tensor; the
 * model then holds a mix and must be loaded again (useCheckpoint does so from
 * an older checkpoint: a complete load overwrites every slot it touches).
 */
export function loadCheckpoint(model: CheckpointModel, dir: string, what: LoadWhat = {}): CheckpointState {
  const { model: wModel = true, ema: wEma = true, optimizer: wOpt = true } = what;
  const state = readState(dir);
  if (!state.files) {
    (what.note ?? ((m: string) => process.stderr.write(m + '\n')))(
      `note: ${dir} was written before checkpoints carried checksums; its tensors are loaded unverified`);
  }
  const params = model.params();
  const trainable = params.filter((p) => p.trainable);
  const readers: SafetensorsReader[] = [];
  const open = (f: TensorFile, expected: { name: string; shape: number[] }[]): SafetensorsReader => {
    const r = openChecked(path.join(dir, f), expected, state.files?.[f]);
    readers.push(r);
    return r;
  };
  try {
    const m = wModel ? open('model.safetensors', params) : undefined;
    const e = wEma ? open('ema.safetensors', params) : undefined;
    const o = wOpt
      ? open('optimizer.safetensors', [
        ...trainable.map((p) => ({ name: 'exp_avg.' + p.name, shape: p.shape })),
        ...trainable.map((p) => ({ name: 'exp_avg_sq.' + p.name, shape: p.shape })),
      ])
      : undefined;
    const digest = (r: SafetensorsReader) => state.files?.[path.basename(r.file) as TensorFile];
    for (const p of params) {
      if (m) model.writeParam(p.name, 'model', readVerified(m, p.name, digest(m)));
      if (e && (p.trainable || !m)) model.writeParam(p.name, 'ema', readVerified(e, p.name, digest(e)));
      else if (e) verifyStreamed(e, p.name, digest(e)); // not loaded (a fixed buffer equals the model's), still checked
      if (o && p.trainable) {
        model.writeParam(p.name, 'adam_m', readVerified(o, 'exp_avg.' + p.name, digest(o)));
        model.writeParam(p.name, 'adam_v', readVerified(o, 'exp_avg_sq.' + p.name, digest(o)));
      }
    }
  } finally {
    for (const r of readers) r.close();
  }
  if (wOpt) {
    model.setStep(state.adam_step);
    model.setNoiseState(state.noise);
  }
  return state;
}

/**
 * Resumes training: loads `spec` ("latest" falls back past damaged
 * checkpoints) into `model`, with the train section validated too.
 */
export function loadForResume(model: CheckpointModel, spec: string, experimentDir: string, warn: (msg: string) => void): { dir: string; state: CheckpointState } {
  const { dir, value } = useCheckpoint(spec, experimentDir, (d) => {
    const st = readState(d);
    checkTrainState(st.train, path.join(d, STATE_FILE));
    return loadCheckpoint(model, d, { note: warn });
  }, warn);
  return { dir, state: value };
}

/**
 * One run's checkpoint folder as the training loop uses it: resume from it, write
 * the next checkpoint, name the newest (for messages).
 */
export class RunCheckpoints {
  private newestSeen = '';
  private resumedFrom = ''; // never deleted by the retention rule during this run

  /** `retention`: ckpt_keep / ckpt_keep_every, applied after every checkpoint written. */
  constructor(readonly experimentDir: string, private readonly retention: { keep: number; keepEvery: number } = { keep: 0, keepEvery: 0 }) {}

  /** loadForResume: `spec` or "latest" (falling back past damaged ones) into `model`. */
  resume(model: CheckpointModel, spec: string, warn: (msg: string) => void): { dir: string; state: CheckpointState } {
    const r = loadForResume(model, spec, this.experimentDir, warn);
    this.resumedFrom = r.dir;
    return r;
  }

  /** Writes the checkpoint of `state.step` (the caller decides which process writes), then prunes older ones. */
  write(model: CheckpointModel, state: Parameters<typeof writeCheckpoint>[2]): string {
    this.newestSeen = writeCheckpoint(model, this.experimentDir, state);
    pruneCheckpoints(this.experimentDir, { ...this.retention, protect: this.resumedFrom ? [this.resumedFrom] : [] });
    return this.newestSeen;
  }

  /** Where the checkpoint of `step` lives (written by this process or another). */
  dirOf(step: number): string {
    return path.join(checkpointsDir(this.experimentDir), stepDirName(step));
  }

  /** The newest checkpoint: the one this process wrote last, else the newest on disk ('' when none). */
  newest(): string {
    return this.newestSeen || listCheckpoints(this.experimentDir).at(-1) || '';
  }
}
