// speed-train convert IN.pt OUT.safetensors [--key ema]: a PyTorch state dict
// (the official DiT-XL-2-256x256.pt, or a training checkpoint that nests it
// under model / ema / state_dict) to a safetensors file this project (and
// safetensors.torch.load_file) reads. Dtypes are kept (F16 stays F16).
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';

import { CheckpointError } from '../errors.js';
import { encodeSafetensors, type SafeDtype, type SafeTensor } from '../io/safetensors.js';
import { describeValue } from './describe.js';
import { openPt } from './pt.js';
import type { PtTensor, PyValue } from './unpickle.js';

export interface ConvertOptions {
  /** top-level key of the state dict inside a checkpoint (default: ema, else model, else state_dict) */
  key?: string;
  log?: (m: string) => void;
}

export interface ConvertResult {
  out: string;
  key: string | null;
  tensors: number;
  bytes: number;
}

/** Keys under which training code stores a state dict, in the order DiT's sample.py prefers them. */
const NESTED_KEYS = ['ema', 'model', 'state_dict', 'model_state_dict', 'module'];
const SAFE: Partial<Record<PtTensor['storage']['dtype'], SafeDtype>> = { F32: 'F32', F64: 'F64', F16: 'F16', BF16: 'BF16', I64: 'I64', I32: 'I32', U8: 'U8' };

const isTensor = (v: PyValue): v is PtTensor => typeof v === 'object' && v !== null && !(v instanceof Map) && !Array.isArray(v) && (v as PtTensor).kind === 'tensor';

function isStateDict(v: PyValue | undefined): v is Map<PyValue, PyValue> {
  return v instanceof Map && v.size > 0 && [...v].every(([k, t]) => typeof k === 'string' && isTensor(t));
}

function kindOf(v: PyValue): string {
  if (isStateDict(v)) return `a state dict of ${v.size} tensors`;
  if (v instanceof Map) return `a dict of ${v.size} entries`;
  if (Array.isArray(v)) return `a list of ${v.length} item${v.length === 1 ? '' : 's'}`;
  if (isTensor(v)) return 'a tensor';
  if (v === null) return 'None';
  if (typeof v === 'object') return (v as { kind: string }).kind;
  return typeof v;
}

/** Top-level entries named in an error message; the rest are counted. */
const MAX_LISTED = 24;

/** What the unpickled object holds, for an error message: bounded whatever the file builds. */
function describeTop(root: PyValue): string {
  if (!(root instanceof Map)) return kindOf(root);
  const parts: string[] = [];
  for (const [k, v] of root) {
    if (parts.length === MAX_LISTED) { parts.push(`… ${root.size - MAX_LISTED} more`); break; }
    const name = typeof k !== 'string' ? describeValue(k, 80) : k.length > 80 ? `${k.slice(0, 80)}…` : k;
    parts.push(`${name} (${kindOf(v)})`);
  }
  return parts.join(', ');
}

/** Picks the state dict inside the unpickled object. */
export function selectStateDict(root: PyValue, file: string, key?: string): { dict: Map<PyValue, PyValue>; key: string | null; others: string[] } {
  const describe = () => describeTop(root);
  if (key !== undefined) {
    const v = root instanceof Map ? root.get(key) : undefined;
    if (!isStateDict(v)) throw new CheckpointError(file, `--key ${key}: ${v === undefined ? 'no such top-level key' : `is ${kindOf(v)}, not a state dict`}; the file holds: ${describe()}`);
    return { dict: v, key, others: [] };
  }
  if (isStateDict(root)) return { dict: root, key: null, others: [] };
  if (root instanceof Map) {
    const found = NESTED_KEYS.filter((k) => isStateDict(root.get(k)));
    if (found.length > 0) return { dict: root.get(found[0]) as Map<PyValue, PyValue>, key: found[0], others: found.slice(1) };
  }
  throw new CheckpointError(file, `no state dict found (a dict of tensors, at the top or under ${NESTED_KEYS.join('/')}); the file holds: ${describe()}; choose one with --key`);
}

function writeFileAtomic(file: string, parts: readonly Uint8Array[]): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
  try {
    const fd = openSync(tmp, 'w');
    try {
      for (const p of parts) for (let done = 0; done < p.byteLength; ) done += writeSync(fd, p, done, Math.min(p.byteLength - done, 1 << 30));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new CheckpointError(file, `cannot write (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

export function convertPt(input: string, output: string, opts: ConvertOptions = {}): ConvertResult {
  const log = opts.log ?? ((m: string) => process.stdout.write(m + '\n'));
  if (!/\.safetensors$/i.test(output)) throw new CheckpointError(output, 'the output must be a .safetensors file');
  const pt = openPt(input);
  try {
    const { dict, key, others } = selectStateDict(pt.root, input, opts.key);
    let names = [...dict.keys()] as string[];
    // DistributedDataParallel saves "module.<name>": drop the prefix when every key has it.
    const strip = names.every((n) => n.startsWith('module.'));
    const tensors: [string, SafeTensor][] = [];
    let bytes = 0;
    for (const name of names) {
      const t = dict.get(name) as PtTensor;
      const dtype = SAFE[t.storage.dtype];
      if (!dtype) throw new CheckpointError(input, `tensor ${name}: dtype ${t.storage.dtype} has no safetensors equivalent here (F32, F64, F16, BF16, I64, I32, U8)`);
      const b = pt.tensorBytes(t);
      bytes += b.byteLength;
      tensors.push([strip ? name.slice(7) : name, { dtype, shape: t.size, bytes: b }]);
    }
    names = tensors.map(([n]) => n);
    writeFileAtomic(output, encodeSafetensors(tensors, { format: 'pt', source: path.basename(input), ...(key ? { key } : {}) }));
    const dtypes = [...new Set(tensors.map(([, t]) => t.dtype))].join('/');
    log(`convert: ${input}${key ? ` [${key}]` : ''} -> ${output}: ${tensors.length} tensors, ${dtypes}, ${(bytes / 2 ** 20).toFixed(1)} MiB` +
      (strip ? '; "module." prefix removed' : '') + (others.length ? `; the file also holds ${others.join(', ')} (choose with --key)` : '') +
      (pt.format === 'legacy' ? '; read from the legacy (pre-1.6) torch.save layout' : ''));
    return { out: output, key, tensors: names.length, bytes };
  } finally {
    pt.close();
  }
}
