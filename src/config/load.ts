// Loads a config the way the SpeeD code base does: every base.yaml from the
// configs root down to the chosen file's folder, then the file, deep-merged in
// that order; then command-line overrides, the phase section, ${key.path}
// interpolation and schema validation. Every value remembers which file set it
// so that errors can name it.
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

import { ConfigError } from '../errors.js';
import { interpolate } from './interpolate.js';
import { PHASES, SCHEMA, defaultsOf, type Config, type Phase } from './schema.js';
import { Problems } from './problems.js';
import { translateSpeedKeys } from './speed-compat.js';
import type { Provenance, Tree } from './tree.js';
import { checkUnknownKeys, validateTree, crossCheck } from './validate.js';

export type { Provenance, Tree } from './tree.js';

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
  /** lines for the log: SpeeD spellings that were mapped, tooling keys that were ignored */
  notes: string[];
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

/** Keys that would reach or replace a JavaScript object's prototype (`__proto__: {handleSignals: false}`). */
export const RESERVED_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);
/** A config is a few KiB; anything far larger is not a config. */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;
/** Aliases a config may expand (yaml's guard against "billion laughs" alias bombs). */
export const MAX_ALIAS_COUNT = 100;

/**
 * Drops reserved keys from a parsed tree, recording each as a problem; the
 * tree's maps are rebuilt without a prototype chain worth polluting.
 */
function dropReserved(v: unknown, at: string, file: string, problems: Problems): unknown {
  if (Array.isArray(v)) return v.map((x, i) => dropReserved(x, `${at}.${i}`, file, problems));
  if (!isMap(v)) return v;
  const out: Tree = {};
  for (const k of Object.keys(v)) {
    const p = at ? `${at}.${k}` : k;
    if (RESERVED_KEYS.has(k)) {
      problems.add(p, `key ${JSON.stringify(k)} is not allowed (a reserved JavaScript name: it would change the defaults of every object)`, file);
      continue;
    }
    out[k] = dropReserved(v[k], p, file, problems);
  }
  return out;
}

/**
 * Parses one YAML config file. Problems that leave the rest of the file usable
 * (reserved keys) go into `problems` when given; otherwise they are thrown.
 */
export function readYamlFile(file: string, problems?: Problems): Tree {
  let text: string;
  try {
    const size = statSync(file).size;
    if (size > MAX_CONFIG_BYTES) throw new ConfigError('', `is ${size} bytes: expected a config file of at most ${MAX_CONFIG_BYTES} bytes`, file);
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError('', `cannot read config file (${(e as Error).message})`, file);
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const more = doc.errors.length > 1 ? ` (and ${doc.errors.length - 1} more YAML error(s))` : '';
    throw new ConfigError('', `invalid YAML: ${doc.errors[0].message}${more}`, file);
  }
  let data: unknown;
  try {
    // Unresolved aliases (`seed: *nope`) and alias bombs throw ReferenceError here.
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (e) {
    const m = (e as Error).message;
    const why = /Excessive alias count/.test(m)
      ? `expands more than ${MAX_ALIAS_COUNT} YAML aliases (an alias bomb?): ${m}`
      : /Unresolved alias/.test(m) ? `invalid YAML: ${m}` : `invalid YAML (${m})`;
    throw new ConfigError('', why, file);
  }
  if (data === null || data === undefined) return {};
  if (!isMap(data)) throw new ConfigError('', `expected a YAML mapping at the top level, found ${describe(data)}`, file);
  const own = problems ?? new Problems();
  const clean = dropReserved(data, '', file, own) as Tree;
  if (!problems) own.throwIfAny();
  return clean;
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
    // Readers drop these already; a tree built elsewhere must not reach Object.prototype either.
    if (RESERVED_KEYS.has(k)) throw new ConfigError(p, `key ${JSON.stringify(k)} is not allowed (a reserved JavaScript name)`, source);
    if (isMap(v)) {
      // A mapping that replaces a value (`depth: {a: 1}` over the default null)
      // is this source's doing: errors about the key must name it, not the default.
      const replaces = Object.hasOwn(dst, k) && !isMap(dst[k]);
      if (!isMap(dst[k])) dst[k] = {};
      mergeInto(dst[k] as Tree, v, source, prov, p);
      if (Object.keys(v).length === 0 || replaces) prov.set(p, source);
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
  for (const part of keyPath.split('.')) {
    if (RESERVED_KEYS.has(part)) throw new ConfigError(keyPath, `key ${JSON.stringify(part)} is not allowed (a reserved JavaScript name)`, 'command line');
  }
  let value: unknown;
  const overrideProblems = new Problems();
  try {
    value = raw.trim() === '' ? '' : dropReserved(YAML.parse(raw, { maxAliasCount: MAX_ALIAS_COUNT }), keyPath, 'command line', overrideProblems);
    overrideProblems.throwIfAny();
  } catch (e) {
    if (e instanceof ConfigError) throw e;
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

/**
 * Loads, merges, overrides, maps SpeeD's spellings, applies the phase,
 * interpolates and validates. Every problem found is reported in one
 * ConfigError (a ConfigErrorList when there are several).
 */
export function loadConfig(file: string, opts: LoadOptions = {}): LoadedConfig {
  const phase = opts.phase ?? 'train';
  const abs = path.resolve(file);
  if (!existsSync(abs)) throw new ConfigError('', 'config file not found', abs);
  const files = [...baseChain(abs, opts.root), abs];
  const prov: Provenance = new Map();
  const problems = new Problems();
  let tree: Tree = mergeInto({}, defaultsOf(), 'defaults', prov);
  for (const f of files) {
    const t = problems.catch(() => readYamlFile(f, problems));
    if (t) mergeInto(tree, t, f, prov);
  }
  for (const o of opts.overrides ?? []) {
    const t = problems.catch(() => parseOverride(o));
    if (t) mergeInto(tree, t, 'command line', prov);
  }
  const compat = translateSpeedKeys(tree, prov, problems, [...files, 'command line']);
  checkUnknownKeys(tree, prov, problems);
  tree = applyPhase(tree, phase, prov);
  tree = interpolate(tree, prov, problems) as Tree;
  const config = validateTree(tree, prov, problems) as unknown as Config;
  // Relations between keys only mean something once every key has its type.
  if (problems.size === 0) crossCheck(config, prov, problems);
  problems.throwIfAny();
  const notes: string[] = [];
  if (compat.mapped.length > 0) notes.push(`config: SpeeD spellings mapped: ${compat.mapped.join('; ')}`);
  if (compat.ignored.length > 0) notes.push(`config: warning: ignored keys that only configure PyTorch tooling or that SpeeD's code never reads: ${compat.ignored.join(', ')}`);
  return { config, files, provenance: prov, phase, notes };
}

/** The resolved config as YAML (printed at start, saved as config.yaml). */
export function configToYaml(config: Config): string {
  return YAML.stringify(config, { lineWidth: 0 });
}
