// Checkpoints: <experiment_dir>/checkpoints/<step, 7 digits>/ holding
// model.safetensors, ema.safetensors, optimizer.safetensors (DiT state_dict
// names and shapes) and state.json (step, resolved config, every generator's
// state, data position). Written into a temporary directory, fsynced, then
// renamed, so a crash never leaves a half-written checkpoint under its name.
import {
  closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeSync,
} from 'node:fs';
import path from 'node:path';

import { CheckpointError } from '../errors.js';
import type { NoiseState, ParamInfo, Slot } from '../native.js';
import { asFloat32, encodeSafetensors, f32Tensor, readSafetensors, type SafeTensor } from '../io/safetensors.js';

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
}

export const STATE_FILE = 'state.json';
const FILES = ['model.safetensors', 'ema.safetensors', 'optimizer.safetensors', STATE_FILE] as const;

export const stepDirName = (step: number): string => String(step).padStart(7, '0');
export const checkpointsDir = (experimentDir: string): string => path.join(experimentDir, 'checkpoints');

function writeFileSynced(file: string, parts: readonly Uint8Array[]): void {
  const fd = openSync(file, 'w');
  try {
    for (const p of parts) {
      for (let done = 0; done < p.byteLength; ) done += writeSync(fd, p, done, Math.min(p.byteLength - done, 1 << 30));
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function fsyncDir(dir: string): void {
  // Makes the renames durable; some platforms refuse fsync on a directory.
  try {
    const fd = openSync(dir, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch { /* best effort where unsupported */ }
}

function isAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

/** Removes temporary directories left by writers that died mid-write. */
function cleanStale(root: string): void {
  for (const n of readdirSync(root)) {
    const m = /^\.(tmp|old)-\d+-(\d+)-/.exec(n);
    if (m && Number(m[2]) !== process.pid && !isAlive(Number(m[2]))) rmSync(path.join(root, n), { recursive: true, force: true });
  }
}

function slotTensors(model: CheckpointModel, slot: Slot, prefix = '', trainableOnly = false): [string, SafeTensor][] {
  return model.params()
    .filter((p) => !trainableOnly || p.trainable)
    .map((p) => [prefix + p.name, f32Tensor(model.readParam(p.name, slot), p.shape)]);
}

/** Writes a checkpoint atomically and returns its directory. */
export function writeCheckpoint(model: CheckpointModel, experimentDir: string, state: Omit<CheckpointState, 'format' | 'version' | 'noise' | 'adam_step'>): string {
  const root = checkpointsDir(experimentDir);
  mkdirSync(root, { recursive: true });
  cleanStale(root);
  const name = stepDirName(state.step);
  const tag = `${name}-${process.pid}-${Date.now()}`;
  const tmp = path.join(root, `.tmp-${tag}`);
  mkdirSync(tmp);
  const full: CheckpointState = {
    format: 'speed-train-checkpoint',
    version: 1,
    ...state,
    noise: model.getNoiseState(),
    adam_step: model.getStep(),
  };
  const meta = { format: 'pt', step: String(state.step) };
  writeFileSynced(path.join(tmp, 'model.safetensors'), encodeSafetensors(slotTensors(model, 'model'), meta));
  writeFileSynced(path.join(tmp, 'ema.safetensors'), encodeSafetensors(slotTensors(model, 'ema'), meta));
  writeFileSynced(
    path.join(tmp, 'optimizer.safetensors'),
    encodeSafetensors(
      [...slotTensors(model, 'adam_m', 'exp_avg.', true), ...slotTensors(model, 'adam_v', 'exp_avg_sq.', true)],
      { ...meta, adam_step: String(full.adam_step) },
    ),
  );
  writeFileSynced(path.join(tmp, STATE_FILE), [Buffer.from(JSON.stringify(full, null, 1) + '\n')]);
  fsyncDir(tmp);
  const final = path.join(root, name);
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

export function readState(dir: string): CheckpointState {
  const file = path.join(dir, STATE_FILE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CheckpointError(file, `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let s: CheckpointState;
  try {
    s = JSON.parse(text) as CheckpointState;
  } catch (e) {
    throw new CheckpointError(file, `invalid JSON (${(e as Error).message}); the file is truncated or damaged`);
  }
  if (s === null || typeof s !== 'object' || s.format !== 'speed-train-checkpoint') {
    throw new CheckpointError(file, 'not a speed-train checkpoint state (format field missing)');
  }
  if (s.version !== 1) throw new CheckpointError(file, `unsupported version ${String(s.version)} (expected 1)`);
  if (!Number.isInteger(s.step) || s.step < 0) throw new CheckpointError(file, `step: expected an integer >= 0, found ${JSON.stringify(s.step)}`);
  if (!s.noise || !Number.isFinite(s.noise.seed) || !Number.isFinite(s.noise.offset)) {
    throw new CheckpointError(file, `noise: expected {seed, offset}, found ${JSON.stringify(s.noise)}`);
  }
  if (!Number.isInteger(s.adam_step) || s.adam_step < 0) throw new CheckpointError(file, `adam_step: expected an integer >= 0`);
  return s;
}

/** Reads one safetensors file and checks that it holds exactly `expected` (names, F32, shapes). */
export function readTensorsFor(file: string, expected: { name: string; shape: number[] }[]): Map<string, Float32Array> {
  return checkTensors(readSafetensors(file).tensors, file, expected);
}

/** Checks tensors read from `file` against `expected` (names, shapes) and widens them to float32. */
export function checkTensors(tensors: Map<string, SafeTensor>, file: string, expected: { name: string; shape: number[] }[]): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  const want = new Set(expected.map((e) => e.name));
  const missing = expected.filter((e) => !tensors.has(e.name)).map((e) => e.name);
  if (missing.length > 0) {
    throw new CheckpointError(file, `missing ${missing.length} tensor(s) the model needs: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}`);
  }
  const extra = [...tensors.keys()].filter((n) => !want.has(n));
  if (extra.length > 0) {
    throw new CheckpointError(file, `holds ${extra.length} tensor(s) this model does not have: ${extra.slice(0, 5).join(', ')} (a checkpoint of another model?)`);
  }
  for (const e of expected) {
    const t = tensors.get(e.name)!;
    if (t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i])) {
      throw new CheckpointError(file, `tensor ${e.name}: shape [${t.shape}] differs from the model's [${e.shape}]`);
    }
    out.set(e.name, asFloat32(t, file, e.name));
  }
  return out;
}

export interface LoadWhat {
  /** load the raw weights, the EMA weights, the optimizer state (default: all) */
  model?: boolean;
  ema?: boolean;
  optimizer?: boolean;
}

/**
 * Loads a checkpoint into `model` (every file checked before anything is
 * written, so a bad checkpoint leaves the model untouched) and returns its state.
 */
export function loadCheckpoint(model: CheckpointModel, dir: string, what: LoadWhat = {}): CheckpointState {
  const { model: wModel = true, ema: wEma = true, optimizer: wOpt = true } = what;
  const state = readState(dir);
  const params = model.params();
  const trainable = params.filter((p) => p.trainable);
  const m = wModel ? readTensorsFor(path.join(dir, 'model.safetensors'), params) : undefined;
  const e = wEma ? readTensorsFor(path.join(dir, 'ema.safetensors'), params) : undefined;
  const o = wOpt
    ? readTensorsFor(path.join(dir, 'optimizer.safetensors'), [
      ...trainable.map((p) => ({ name: 'exp_avg.' + p.name, shape: p.shape })),
      ...trainable.map((p) => ({ name: 'exp_avg_sq.' + p.name, shape: p.shape })),
    ])
    : undefined;
  for (const p of params) {
    if (m) model.writeParam(p.name, 'model', m.get(p.name)!);
    if (e && (p.trainable || !m)) model.writeParam(p.name, 'ema', e.get(p.name)!);
    if (o && p.trainable) {
      model.writeParam(p.name, 'adam_m', o.get('exp_avg.' + p.name)!);
      model.writeParam(p.name, 'adam_v', o.get('exp_avg_sq.' + p.name)!);
    }
  }
  if (wOpt) {
    model.setStep(state.adam_step);
    model.setNoiseState(state.noise);
  }
  return state;
}
