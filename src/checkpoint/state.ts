// Validation of state.json: every field a resumed run or a sampler reads is
// checked here, so a damaged file is a CheckpointError naming state.json, the
// field and what was expected, never a TypeError deep inside the trainer.
import { CheckpointError, ConfigError } from '../errors.js';
import { defaultsOf } from '../config/schema.js';
import { validateTree } from '../config/validate.js';
import type { FileDigest } from '../io/safetensors.js';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function show(v: unknown): string {
  if (v === undefined) return 'nothing (field missing)';
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? s.slice(0, 77) + '...' : s;
}

class Checker {
  constructor(readonly file: string) {}
  fail(field: string, expected: string, found: unknown): never {
    throw new CheckpointError(this.file, `${field}: expected ${expected}, found ${show(found)}`);
  }
  obj(v: unknown, field: string, what = 'an object'): Obj {
    if (!isObj(v)) this.fail(field, what, v);
    return v;
  }
  int(v: unknown, field: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) this.fail(field, `an integer in [${min}, ${max}]`, v);
    return v;
  }
  num(v: unknown, field: string): number {
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(field, 'a finite number', v);
    return v;
  }
  nums(v: unknown, field: string, integer = false): number[] {
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!integer || (Number.isSafeInteger(x) && x >= 0)))) {
      this.fail(field, `a list of ${integer ? 'non-negative integers' : 'finite numbers'}`, v);
    }
    return v as number[];
  }
  /** xoshiro128** state as Rng.state() writes it */
  rng(v: unknown, field: string): void {
    const o = this.obj(v, field, '{algo: "xoshiro128**", s: [4 uint32], spare}');
    if (o.algo !== 'xoshiro128**') this.fail(`${field}.algo`, '"xoshiro128**"', o.algo);
    if (!Array.isArray(o.s) || o.s.length !== 4 || !o.s.every((w) => Number.isInteger(w) && w >= 0 && w < 2 ** 32)) {
      this.fail(`${field}.s`, 'four unsigned 32-bit integers', o.s);
    }
    if ((o.s as number[]).every((w) => w === 0)) this.fail(`${field}.s`, 'not all zero', o.s);
    if (o.spare !== null && (typeof o.spare !== 'number' || !Number.isFinite(o.spare))) this.fail(`${field}.spare`, 'null or a finite number', o.spare);
  }
}

/** The train section (src/train's TrainState: generator, data position, metrics accumulator). */
export function checkTrainState(v: unknown, file: string): void {
  const c = new Checker(file);
  const t = c.obj(v, 'train', '{rng, data, accum} (the training generators and data position)');
  c.rng(t.rng, 'train.rng');
  const d = c.obj(t.data, 'train.data', '{epoch, batch, rng} (the data position)');
  c.int(d.epoch, 'train.data.epoch');
  c.int(d.batch, 'train.data.batch');
  c.rng(d.rng, 'train.data.rng');
  const a = c.obj(t.accum, 'train.accum', 'the metrics accumulator {steps, samples, loss, ...}');
  for (const k of ['steps', 'samples', 'skipped']) c.int(a[k], `train.accum.${k}`);
  for (const k of ['loss', 'mse', 'vb', 'gradNorm']) c.num(a[k], `train.accum.${k}`);
  const h = c.nums(a.tHist, 'train.accum.tHist', true);
  const b = c.nums(a.bucketLoss, 'train.accum.bucketLoss');
  if (h.length === 0 || b.length !== h.length) c.fail('train.accum.bucketLoss', `a list as long as train.accum.tHist (${h.length} > 0)`, b);
}

/**
 * The run's config: the model and diffusion sections (what the weights belong
 * to) are validated against the schema, keys added since the checkpoint was
 * written taking their defaults. Returns the config with those sections normalised.
 */
export function checkStoredConfig(v: unknown, file: string): Obj {
  const c = new Checker(file);
  const stored = c.obj(v, 'config', 'the resolved config of the run (a mapping)');
  // Plain defaults: a stored config is already resolved and is never interpolated.
  const defaults = defaultsOf(undefined, { follow: false }) as Obj;
  const tree: Obj = { ...defaults };
  for (const sec of ['model', 'diffusion']) {
    const s = c.obj(stored[sec], `config.${sec}`, `a mapping (the ${sec} section of the run's config)`);
    tree[sec] = { ...(defaults[sec] as Obj), ...s };
  }
  let valid: Obj;
  try {
    valid = validateTree(tree, new Map());
  } catch (e) {
    if (e instanceof ConfigError) throw new CheckpointError(file, `config.${e.message}`);
    throw e;
  }
  return { ...stored, model: valid.model, diffusion: valid.diffusion };
}

/** The per-file digests written since checksums were introduced (absent in older checkpoints). */
export function checkDigests(v: unknown, file: string, names: readonly string[]): Record<string, FileDigest> | undefined {
  if (v === undefined) return undefined;
  const c = new Checker(file);
  const o = c.obj(v, 'files', 'an object {file name: {bytes, header_crc32, tensor_crc32}}');
  const hex = /^[0-9a-f]{8}$/;
  const out: Record<string, FileDigest> = {};
  for (const n of names) {
    const d = c.obj(o[n], `files.${n}`, '{bytes, header_crc32, tensor_crc32}');
    const bytes = c.int(d.bytes, `files.${n}.bytes`);
    if (typeof d.header_crc32 !== 'string' || !hex.test(d.header_crc32)) c.fail(`files.${n}.header_crc32`, '8 hex digits', d.header_crc32);
    const t = c.obj(d.tensor_crc32, `files.${n}.tensor_crc32`, 'an object {tensor: 8 hex digits}');
    for (const [k, s] of Object.entries(t)) if (typeof s !== 'string' || !hex.test(s)) c.fail(`files.${n}.tensor_crc32.${k}`, '8 hex digits', s);
    out[n] = { bytes, header_crc32: d.header_crc32 as string, tensor_crc32: t as Record<string, string> };
  }
  return out;
}

export { Checker };
