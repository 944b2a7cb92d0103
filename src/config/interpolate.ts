// ${key.path} interpolation over a config tree. A string that is exactly one
// reference takes the referenced value with its type (so `${data.image_size}`
// stays an integer); references inside longer strings are substituted as text.
import { ConfigError } from '../errors.js';
import type { Provenance, Tree } from './tree.js';
import type { Problems } from './problems.js';

const REF = /\$\{([^}]*)\}/g;
const WHOLE = /^\$\{([^}]*)\}$/;

function lookup(root: Tree, ref: string): { found: boolean; value: unknown } {
  let cur: unknown = root;
  for (const part of ref.split('.')) {
    if (typeof cur !== 'object' || cur === null || Array.isArray(cur) || !Object.hasOwn(cur, part)) {
      return { found: false, value: undefined };
    }
    cur = (cur as Tree)[part];
  }
  return { found: true, value: cur };
}

/**
 * Resolves every reference. With `problems`, a bad reference is recorded and
 * its string left as it is, so the other problems are found in the same run.
 */
export function interpolate(root: Tree, prov: Provenance, problems?: Problems): unknown {
  const done = new Map<string, unknown>();

  const resolveRef = (ref: string, from: string, stack: string[]): unknown => {
    const key = ref.trim();
    if (stack.includes(key)) {
      throw new ConfigError(from, `circular interpolation: ${[...stack, key].join(' -> ')}`, prov.get(from));
    }
    if (done.has(key)) return done.get(key);
    const { found, value } = lookup(root, key);
    if (!found) throw new ConfigError(from, `\${${key}} refers to a key that does not exist`, prov.get(from));
    const v = walk(value, key, [...stack, key]);
    done.set(key, v);
    return v;
  };

  const resolveString = (v: string, at: string, stack: string[]): unknown => {
    const whole = WHOLE.exec(v);
    if (whole) return resolveRef(whole[1], at, stack);
    return v.replace(REF, (_m, ref: string) => {
      const r = resolveRef(ref, at, stack);
      if (typeof r === 'object' && r !== null) {
        throw new ConfigError(at, `\${${ref}} is a ${Array.isArray(r) ? 'list' : 'mapping'} and cannot be part of a string`, prov.get(at));
      }
      return String(r);
    });
  };

  const walk = (v: unknown, at: string, stack: string[]): unknown => {
    if (typeof v === 'string' && problems && stack.length <= 1) {
      // Top of a chain: record its error here, once.
      const r = problems.catch(() => ({ v: resolveString(v, at, stack) }));
      return r ? r.v : v;
    }
    if (typeof v === 'string') return resolveString(v, at, stack);
    if (Array.isArray(v)) return v.map((x, i) => walk(x, `${at}.${i}`, stack));
    if (typeof v === 'object' && v !== null) {
      const out: Tree = {};
      for (const [k, x] of Object.entries(v)) out[k] = walk(x, at ? `${at}.${k}` : k, at ? stack : [k]);
      return out;
    }
    return v;
  };
  return walk(root, '', []);
}
