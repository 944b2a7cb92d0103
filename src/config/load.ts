// Loads a config the way the SpeeD code base does: every base.yaml from the
// configs root down to the chosen file's folder, then the file, deep-merged in
// that order; then command-line overrides, the phase section, ${key.path}
// interpolation and schema validation. Every value remembers which file set it
// so that errors can name it.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

import { ConfigError } from '../errors.js';
import { interpolate } from './interpolate.js';
import { PHASES, SCHEMA, defaultsOf, type Config, type Phase } from './schema.js';
import { checkUnknownKeys, validateTree, crossCheck } from './validate.js';

export type Tree = Record<string, unknown>;
/** dotted key path -> where its value came from (a file, "command line", "defaults") */
export type Provenance = Map<string, string>;

export interface LoadOptions {
  /** `a.b=c` strings, applied after the files (YAML-typed values) */
  overrides?: string[];
  /** whose section overrides the globals (default "train") */
  phase?: Phase;
  /** where the recursive base.yaml chain starts; default: the nearest ancestor named "configs" */
  root?: string;
}

export interface LoadedConfig {
  config: Config;
  /** the files merged, in order */
  files: string[];
  provenance: Provenance;
  phase: Phase;
}

export const isMap = (v: unknown): v is Tree => typeof v === 'object' && v !== null && !Array.isArray(v);

/** base.yaml files from the configs root down to `file`'s folder (the file itself excluded). */
export function baseChain(file: string, root?: string): string[] {
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  let top = root ? path.resolve(root) : undefined;
  if (!top) {
    // The nearest ancestor called "configs" is the root, as in SpeeD's layout;
    // without one only the file's own folder contributes a base.yaml.
    for (let d = dir; ; d = path.dirname(d)) {
      if (path.basename(d) === 'configs') { top = d; break; }
      if (path.dirname(d) === d) break;
    }
  }
  top ??= dir;
  const rel = path.relative(top, dir);
  if (rel.startsWith('..') || path.isAbsolute(rel)) {
    throw new ConfigError('', `is not inside the configs root ${top}`, abs);
  }
  const dirs = [top];
  let cur = top;
  for (const part of rel ? rel.split(path.sep) : []) dirs.push((cur = path.join(cur, part)));
  return dirs.map((d) => path.join(d, 'base.yaml')).filter((f) => existsSync(f) && f !== abs);
}

export function readYamlFile(file: string): Tree {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError('', `cannot read config file (${(e as Error).message})`, file);
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) throw new ConfigError('', `invalid YAML: ${doc.errors[0].message}`, file);
  const data: unknown = doc.toJS();
  if (data === null || data === undefined) return {};
  if (!isMap(data)) throw new ConfigError('', `expected a YAML mapping at the top level, found ${describe(data)}`, file);
  return data;
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** Deep merge of maps (later wins; lists and scalars replace), recording provenance. */
export function mergeInto(dst: Tree, src: Tree, source: string, prov: Provenance, prefix = ''): Tree {
  for (const [k, v] of Object.entries(src)) {
    const p = prefix ? `${prefix}.${k}` : k;
    if (isMap(v)) {
      if (!isMap(dst[k])) dst[k] = {};
      mergeInto(dst[k] as Tree, v, source, prov, p);
      if (Object.keys(v).length === 0) prov.set(p, source);
    } else {
      dst[k] = v;
      for (const key of [...prov.keys()]) if (key.startsWith(p + '.')) prov.delete(key);
      prov.set(p, source);
    }
  }
  return dst;
}

/** `a.b=c` -> { a: { b: <c parsed as YAML> } } */
export function parseOverride(arg: string): Tree {
  const eq = arg.indexOf('=');
  if (eq <= 0) throw new ConfigError(arg, 'expected a command-line override of the form key.path=value', 'command line');
  const keyPath = arg.slice(0, eq).trim();
  const raw = arg.slice(eq + 1);
  if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(keyPath)) {
    throw new ConfigError(keyPath, 'expected a dotted key path like data.batch_size', 'command line');
  }
  let value: unknown;
  try {
    value = raw.trim() === '' ? '' : YAML.parse(raw);
  } catch (e) {
    throw new ConfigError(keyPath, `cannot parse value ${JSON.stringify(raw)} as YAML (${(e as Error).message})`, 'command line');
  }
  const out: Tree = {};
  let cur = out;
  const parts = keyPath.split('.');
  parts.forEach((p, i) => {
    if (i === parts.length - 1) cur[p] = value;
    else cur = (cur[p] = {}) as Tree;
  });
  return out;
}

/**
 * Moves the global keys found in phase sections out of them; those of `phase`
 * are merged over the globals, those of other phases are dropped.
 */
export function applyPhase(tree: Tree, phase: Phase, prov: Provenance): Tree {
  const out: Tree = { ...tree };
  for (const ph of PHASES) {
    const sec = tree[ph];
    if (!isMap(sec)) continue;
    const own = (SCHEMA.keys[ph] as { keys: Record<string, unknown> }).keys;
    const kept: Tree = {};
    const globals: Tree = {};
    for (const [k, v] of Object.entries(sec)) {
      if (Object.hasOwn(own, k)) kept[k] = v;
      else globals[k] = v;
    }
    out[ph] = kept;
    if (ph === phase) {
      // Re-key provenance: "sample.seed" set the global "seed" for this phase.
      const phaseProv: Provenance = new Map();
      for (const [key, src] of prov) if (key.startsWith(ph + '.')) phaseProv.set(key.slice(ph.length + 1), src);
      const tmp: Provenance = new Map();
      mergeInto(out, structuredClone(globals), '', tmp);
      for (const key of tmp.keys()) {
        for (const old of [...prov.keys()]) if (old === key || old.startsWith(key + '.')) prov.delete(old);
        prov.set(key, phaseProv.get(key) ?? `${ph}: section`);
      }
    }
  }
  return out;
}

/** Loads, merges, overrides, applies the phase, interpolates and validates. */
export function loadConfig(file: string, opts: LoadOptions = {}): LoadedConfig {
  const phase = opts.phase ?? 'train';
  const abs = path.resolve(file);
  if (!existsSync(abs)) throw new ConfigError('', 'config file not found', abs);
  const files = [...baseChain(abs, opts.root), abs];
  const prov: Provenance = new Map();
  let tree: Tree = mergeInto({}, defaultsOf(), 'defaults', prov);
  for (const f of files) mergeInto(tree, readYamlFile(f), f, prov);
  for (const o of opts.overrides ?? []) mergeInto(tree, parseOverride(o), 'command line', prov);
  checkUnknownKeys(tree, prov);
  tree = applyPhase(tree, phase, prov);
  tree = interpolate(tree, prov) as Tree;
  const config = validateTree(tree, prov) as unknown as Config;
  crossCheck(config, prov);
  return { config, files, provenance: prov, phase };
}

/** The resolved config as YAML (printed at start, saved as config.yaml). */
export function configToYaml(config: Config): string {
  return YAML.stringify(config, { lineWidth: 0 });
}
