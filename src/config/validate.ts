// Schema validation: unknown keys (with a did-you-mean), types and ranges.
// Every error names the file that set the value and the dotted key path.
import { homedir } from 'node:os';
import path from 'node:path';

import { ConfigError } from '../errors.js';
import type { Provenance, Tree } from './tree.js';
import { Problems } from './problems.js';
import { nodeAt, PHASES, SCHEMA, type Config, type Leaf, type Section } from './schema.js';

const isMap = (v: unknown): v is Tree => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Levenshtein distance (small strings only). */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length];
}

/** Every dotted leaf path of the schema. */
function allPaths(node: Section, prefix = ''): string[] {
  return Object.entries(node.keys).flatMap(([k, v]) => {
    const p = prefix ? `${prefix}.${k}` : k;
    return v.kind === 'section' ? [p, ...allPaths(v, p)] : [p];
  });
}

/**
 * Names other trainers (DiT's train.py, diffusers, SpeeD's runner) give to our
 * keys, so that a near miss of one (`lerning_rate`) finds ours.
 */
const ALIASES: Record<string, string> = {
  learning_rate: 'optimizer.lr', lr: 'optimizer.lr', ema_decay: 'ema.decay',
  global_batch_size: 'data.batch_size', train_batch_size: 'data.batch_size',
  max_steps: 'max_training_steps', train_steps: 'max_training_steps', total_steps: 'max_training_steps', num_train_steps: 'max_training_steps',
  results_dir: 'experiment_dir', output_dir: 'experiment_dir', data_path: 'data.root', data_dir: 'data.root',
  grad_clip: 'optimizer.max_grad_norm', warmup: 'optimizer.warmup_steps', cfg_scale: 'sample.guidance_scale',
  num_sampling_steps: 'sample.steps', global_seed: 'seed', ckpt_every_steps: 'ckpt_every',
};

/**
 * Keys speed-train itself once had, and the key that holds each now. A config
 * that still writes the old one is refused with the new name (silently mapping
 * it would leave two spellings of one key in circulation).
 */
export const RENAMED: Readonly<Record<string, { to: string; why: string }>> = {
  'eval.every': { to: 'evaluate.every', why: 'FID during training moved into the evaluate: section' },
  'eval.num_samples': { to: 'evaluate.num_samples', why: 'FID during training moved into the evaluate: section' },
  'eval.sampler': { to: 'evaluate.sampler', why: 'FID during training moved into the evaluate: section' },
  'eval.feature_space': { to: 'evaluate.feature_space', why: 'one feature space for -p evaluate and FID during training' },
};

/** The old key paths under `p` (itself included) that `v` sets, each with its message. */
function renamedUnder(p: string, v: unknown): { path: string; message: string }[] {
  const hit = RENAMED[p];
  if (hit) return [{ path: p, message: `renamed to ${hit.to} (${hit.why})` }];
  if (!isMap(v)) return [];
  const inside = Object.keys(RENAMED).filter((k) => k.startsWith(p + '.'));
  if (inside.length === 0) return [];
  const out: { path: string; message: string }[] = [];
  for (const [k, x] of Object.entries(v)) {
    const q = `${p}.${k}`;
    const found = renamedUnder(q, x);
    if (found.length > 0) out.push(...found);
    else out.push({ path: q, message: `unknown key: the section ${p}: is gone (its keys were ${inside.map((o) => `${o} -> ${RENAMED[o].to}`).join(', ')})` });
  }
  // `eval: {}` sets nothing, yet is the old section all the same
  if (out.length === 0) out.push({ path: p, message: `unknown key: the section ${p}: is gone (its keys were ${inside.map((o) => `${o} -> ${RENAMED[o].to}`).join(', ')})` });
  return out;
}

/** Sections whose keys only matter for one phase or command: named after the training keys. */
const SIDE = /^(sample|inference|evaluate|encode)\./;

/** The paths `names` name, training keys first (`data.batch_size` before `sample.batch_size`). */
function mention(paths: string[]): string {
  const main = paths.filter((q) => !SIDE.test(q));
  const side = paths.filter((q) => SIDE.test(q));
  if (main.length === 0) return ` (did you mean ${side.join(' or ')}?)`;
  return ` (did you mean ${main.join(' or ')}?${side.length ? ` For another phase: ${side.join(', ')})` : ')'}`;
}

/**
 * A did-you-mean for `key` (an unknown key under `prefix`, or with `keys`
 * false a bad enum value): the nearest candidate of its own section; else,
 * for keys, the same name in another section, or a near miss of any key's
 * name or of another trainer's name for it (`lerning_rate` -> optimizer.lr).
 */
export function suggest(key: string, candidates: string[], prefix: string, keys = true): string {
  let best = '';
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(key.toLowerCase(), c.toLowerCase());
    if (d < bestD) { bestD = d; best = c; }
  }
  if (best && bestD <= Math.max(2, Math.floor(key.length / 3))) return ` (did you mean ${prefix ? prefix + '.' : ''}${best}?)`;
  if (keys) {
    const paths = allPaths(SCHEMA).filter((p) => nodeAt(p.split('.'))?.kind !== 'section');
    // The key exists elsewhere in the schema: `batch_size` at the top -> data.batch_size.
    const exact = paths.filter((p) => p.endsWith('.' + key) || p === key);
    if (exact.length > 0) return mention(exact);
    if (Object.hasOwn(ALIASES, key.toLowerCase())) return mention([ALIASES[key.toLowerCase()]]);
    // A near miss of a key of any section, or of an alias.
    const limit = Math.max(1, Math.floor(key.length / 4));
    const near = new Map<string, number>();
    const consider = (name: string, target: string) => {
      const d = editDistance(key.toLowerCase(), name.toLowerCase());
      if (d <= limit && d <= (near.get(target) ?? Infinity)) near.set(target, d);
    };
    for (const p of paths) consider(p.slice(p.lastIndexOf('.') + 1), p);
    for (const [a, target] of Object.entries(ALIASES)) consider(a, target);
    if (near.size > 0) {
      const dMin = Math.min(...near.values());
      return mention([...near].filter(([, d]) => d === dMin).map(([p]) => p));
    }
  }
  return ` (expected one of: ${candidates.join(', ')})`;
}

/**
 * Where the value at `p` came from: its own entry, else (a section) every
 * source that set a key below it, so an unknown section names its file too.
 */
export function sourceOf(p: string, prov: Provenance): string | undefined {
  if (prov.has(p)) return prov.get(p);
  const below = new Set<string>();
  for (const [k, src] of prov) if (k.startsWith(p + '.')) below.add(src);
  return below.size > 0 ? [...below].join(', ') : undefined;
}

/**
 * Records every key the schema does not know (phase sections may hold global
 * keys too) and removes it from the tree, so that validation can go on and
 * report the remaining problems in the same run.
 */
export function checkUnknownKeys(tree: Tree, prov: Provenance, problems?: Problems): void {
  const sink = problems ?? new Problems();
  const walk = (t: Tree, node: Section, prefix: string, extra?: Section) => {
    for (const [k, v] of Object.entries(t)) {
      const p = prefix ? `${prefix}.${k}` : k;
      let child = Object.hasOwn(node.keys, k) ? node.keys[k] : undefined;
      if (!child && extra && Object.hasOwn(extra.keys, k) && !(PHASES as readonly string[]).includes(k)) child = extra.keys[k];
      if (!child) {
        // Under a phase section the key path is that of the global key it overrides.
        const inPhase = extra !== undefined;
        const renamed = renamedUnder(inPhase ? k : p, v);
        if (renamed.length > 0) {
          for (const r of renamed) {
            const at = inPhase ? `${prefix}.${r.path}` : r.path;
            sink.add(at, r.message, sourceOf(at, prov));
          }
          delete t[k];
          continue;
        }
        const cands = [...Object.keys(node.keys), ...(extra ? Object.keys(extra.keys).filter((x) => !(PHASES as readonly string[]).includes(x)) : [])];
        sink.add(p, `unknown key${suggest(k, cands, prefix)}`, sourceOf(p, prov));
        delete t[k];
        continue;
      }
      if (child.kind === 'section') {
        if (!isMap(v)) {
          sink.add(p, `expected a mapping (section "${child.doc}"), found ${describeValue(v)}`, sourceOf(p, prov));
          t[k] = {};
          continue;
        }
        const isPhase = prefix === '' && (PHASES as readonly string[]).includes(k);
        walk(v, child, p, isPhase ? SCHEMA : undefined);
      }
    }
  };
  walk(tree, SCHEMA, '');
  if (!problems) sink.throwIfAny();
}

function describeValue(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return `a list ${JSON.stringify(v)}`;
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function fail(p: string, prov: Provenance, msg: string): never {
  throw new ConfigError(p, msg, prov.get(p) ?? nearestSource(p, prov));
}

function nearestSource(p: string, prov: Provenance): string | undefined {
  for (let q = p; q.includes('.'); ) {
    q = q.slice(0, q.lastIndexOf('.'));
    if (prov.has(q)) return prov.get(q);
  }
  return undefined;
}

function checkRange(p: string, prov: Provenance, v: number, leaf: { min?: number; max?: number; exclusiveMin?: boolean }): void {
  if (!Number.isFinite(v)) fail(p, prov, `expected a finite number, found ${v}`);
  if (leaf.min !== undefined && (leaf.exclusiveMin ? v <= leaf.min : v < leaf.min)) {
    fail(p, prov, `${v} is out of range: expected ${leaf.exclusiveMin ? '>' : '>='} ${leaf.min}${leaf.max !== undefined ? ` and <= ${leaf.max}` : ''}`);
  }
  if (leaf.max !== undefined && v > leaf.max) fail(p, prov, `${v} is out of range: expected <= ${leaf.max}`);
}

function validateLeaf(v: unknown, leaf: Leaf, p: string, prov: Provenance): unknown {
  // SpeeD's configs write 50_000: YAML 1.1 (PyYAML, OmegaConf) reads a number, YAML 1.2 a string.
  if ((leaf.kind === 'int' || leaf.kind === 'number') && typeof v === 'string' && /^[-+]?[0-9]+(_[0-9]+)+$/.test(v)) {
    v = Number(v.replace(/_/g, ''));
  }
  const nullable = 'nullable' in leaf && leaf.nullable;
  if (v === null || v === undefined) {
    if (nullable) return null;
    fail(p, prov, `expected ${expectation(leaf)}, found null`);
  }
  switch (leaf.kind) {
    case 'int':
      if (typeof v !== 'number' || !Number.isInteger(v)) fail(p, prov, `expected an integer, found ${describeValue(v)}`);
      checkRange(p, prov, v, leaf);
      return v;
    case 'number':
      if (typeof v !== 'number') fail(p, prov, `expected a number, found ${describeValue(v)}`);
      checkRange(p, prov, v, leaf);
      return v;
    case 'bool':
      if (typeof v !== 'boolean') fail(p, prov, `expected true or false, found ${describeValue(v)}`);
      return v;
    case 'string':
      if (typeof v !== 'string') fail(p, prov, `expected a string, found ${describeValue(v)}`);
      if (leaf.pattern && !leaf.pattern.test(v)) fail(p, prov, `${JSON.stringify(v)} is not valid: expected ${leaf.patternDoc}`);
      return v;
    case 'enum':
      // a value like `3` in YAML arrives as a number; an enum of digit strings takes it
      if (typeof v === 'number' && leaf.values.includes(String(v))) return String(v);
      if (typeof v !== 'string' || !leaf.values.includes(v)) {
        const hint = typeof v === 'string' ? suggest(v, [...leaf.values], '', false).replace('(expected one of: ', '(one of: ') : '';
        fail(p, prov, `expected one of ${leaf.values.join(', ')}, found ${describeValue(v)}${hint.startsWith(' (did') ? hint : ''}`);
      }
      return v;
    case 'numbers':
    case 'ints': {
      if (!Array.isArray(v)) fail(p, prov, `expected a list of ${leaf.kind === 'ints' ? 'integers' : 'numbers'}, found ${describeValue(v)}`);
      if (leaf.kind === 'numbers' && leaf.length !== undefined && v.length !== leaf.length) {
        fail(p, prov, `expected a list of ${leaf.length} numbers, found ${v.length}`);
      }
      v.forEach((x, i) => {
        if (typeof x !== 'number' || (leaf.kind === 'ints' && !Number.isInteger(x))) {
          fail(p, prov, `element ${i}: expected ${leaf.kind === 'ints' ? 'an integer' : 'a number'}, found ${describeValue(x)}`);
        }
        checkRange(`${p}`, prov, x, leaf);
      });
      return [...v];
    }
    case 'steps': {
      const s = typeof v === 'number' ? String(v) : v;
      if (typeof s !== 'string' || !/^(ddim[1-9][0-9]*|[1-9][0-9]*(,[1-9][0-9]*)*)$/.test(s.replace(/\s+/g, ''))) {
        fail(p, prov, `expected a respacing like "250", "10,15,20" or "ddim50", found ${describeValue(v)}`);
      }
      return s.replace(/\s+/g, '');
    }
  }
}

function expectation(leaf: Leaf): string {
  switch (leaf.kind) {
    case 'int': return 'an integer';
    case 'number': return 'a number';
    case 'bool': return 'true or false';
    case 'string': return 'a string';
    case 'enum': return `one of ${leaf.values.join(', ')}`;
    case 'numbers': return 'a list of numbers';
    case 'ints': return 'a list of integers';
    case 'steps': return 'a respacing like "250" or "ddim50"';
  }
}

/**
 * Checks every leaf's type and range; returns the normalised tree. A bad leaf
 * is recorded (when `problems` is given) and takes the schema's default so the
 * rest can still be checked.
 */
export function validateTree(tree: Tree, prov: Provenance, problems?: Problems): Tree {
  const sink = problems ?? new Problems();
  const walk = (t: Tree, node: Section, prefix: string): Tree => {
    const out: Tree = {};
    for (const [k, child] of Object.entries(node.keys)) {
      const p = prefix ? `${prefix}.${k}` : k;
      const v = t[k];
      if (child.kind === 'section') out[k] = walk(isMap(v) ? v : {}, child, p);
      else {
        const ok = sink.catch(() => ({ v: validateLeaf(v, child, p, prov) }));
        out[k] = ok ? ok.v : child.default;
      }
    }
    for (const k of Object.keys(t)) {
      if (!Object.hasOwn(node.keys, k)) {
        const p = prefix ? `${prefix}.${k}` : k;
        sink.add(p, `unknown key${suggest(k, Object.keys(node.keys), prefix)}`, sourceOf(p, prov));
      }
    }
    return out;
  };
  const out = walk(tree, SCHEMA, '');
  if (!problems) sink.throwIfAny();
  return out;
}

/** Folders a run must not write into, nor (the first group) anywhere below. */
const SYSTEM_TREES = ['/etc', '/bin', '/sbin', '/boot', '/proc', '/sys', '/dev'];
const SYSTEM_FOLDERS = ['/', '/usr', '/var', '/opt', '/home', '/root', '/srv', '/run', '/dev/shm'];
/** Below a system tree, yet meant for files: /dev/shm is the shared-memory scratch space (a RAM disk). */
const SCRATCH_TREES = ['/dev/shm'];

/**
 * Why `dir` (resolved against the working directory) is no place for a run's
 * config.yaml, checkpoints/ and metrics, or null. A run there would scatter
 * files among the system's or the user's own (and overwrite=true would delete
 * what it takes for an earlier run's output).
 */
export function systemFolderReason(dir: string, home: string = homedir()): string | null {
  const abs = path.resolve(dir);
  if (abs === path.parse(abs).root) return 'the file-system root';
  if (home && abs === path.resolve(home)) return 'your home folder itself';
  if (SYSTEM_FOLDERS.includes(abs)) return 'a system folder';
  if (SCRATCH_TREES.some((t) => abs.startsWith(t + '/'))) return null;
  for (const t of SYSTEM_TREES) if (abs === t || abs.startsWith(t + '/')) return `inside the system folder ${t}`;
  if (/^\/lib(32|64|x32)?(\/|$)/.test(abs)) return `inside the system folder ${abs.split('/').slice(0, 2).join('/')}`;
  return null;
}

/** Constraints between keys (each one checked, every failure recorded). */
export function crossCheck(c: Config, prov: Provenance, problems?: Problems): void {
  const sink = problems ?? new Problems();
  const check = (fn: () => void) => sink.catch(fn);
  check(() => {
    const why = systemFolderReason(c.experiment_dir);
    if (why) fail('experiment_dir', prov, `${JSON.stringify(c.experiment_dir)} is ${why} (${path.resolve(c.experiment_dir)}): a run writes config.yaml, metrics.jsonl and checkpoints/ into experiment_dir; give it a folder of its own, e.g. results/run`);
  });
  check(() => {
    if (c.diffusion.tau !== null && c.diffusion.tau > c.diffusion.diffusion_steps) {
      fail('diffusion.tau', prov, `${c.diffusion.tau} is out of range: expected 1 <= tau <= diffusion.diffusion_steps (${c.diffusion.diffusion_steps})`);
    }
  });
  check(() => {
    if (['image_folder', 'latents'].includes(c.data.name) && !c.data.root) {
      fail('data.root', prov, `data.name is ${c.data.name}: expected the path of the ${c.data.name === 'latents' ? 'latents .npy file' : 'image folder'}, found null`);
    }
  });
  if (c.data.name !== 'latents') {
    check(() => {
      if (c.model.input_size !== c.data.image_size) {
        fail('model.input_size', prov, `${c.model.input_size} differs from data.image_size (${c.data.image_size}); the model sees the images as they are`);
      }
    });
    check(() => {
      if (c.model.in_channels !== c.data.channels) {
        fail('model.in_channels', prov, `${c.model.in_channels} differs from data.channels (${c.data.channels})`);
      }
    });
  }
  check(() => {
    if (c.model.num_classes > 0 && c.data.num_classes > c.model.num_classes) {
      fail('data.num_classes', prov, `${c.data.num_classes} exceeds model.num_classes (${c.model.num_classes})`);
    }
  });
  check(() => {
    const patch = Number(c.model.name.split('/')[1]);
    if (c.model.input_size % patch !== 0) {
      fail('model.input_size', prov, `${c.model.input_size} is not divisible by the patch size ${patch} of ${c.model.name}`);
    }
  });
  check(() => {
    for (const cls of c.sample.sample_classes ?? []) {
      if (c.model.num_classes > 0 && cls >= c.model.num_classes) {
        fail('sample.sample_classes', prov, `class ${cls} is outside [0, model.num_classes = ${c.model.num_classes})`);
      }
    }
  });
  if (!problems) sink.throwIfAny();
}
