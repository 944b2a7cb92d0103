// ${key.path} interpolation over a config tree. A string that is exactly one
// reference takes the referenced value with its type (so `${data.image_size}`
// stays an integer); references inside longer strings are substituted as text.
import { ConfigError } from '../errors.js';
import type { Provenance, Tree } from './load.js';

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

export function interpolate(root: Tree, prov: Provenance): unknown {
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

  const walk = (v: unknown, at: string, stack: string[]): unknown => {
    if (typeof v === 'string') {
      const whole = WHOLE.exec(v);
      if (whole) return resolveRef(whole[1], at, stack);
      return v.replace(REF, (_m, ref: string) => {
        const r = resolveRef(ref, at, stack);
        if (typeof r === 'object' && r !== null) {
          throw new ConfigError(at, `\${${ref}} is a ${Array.isArray(r) ? 'list' : 'mapping'} and cannot be part of a string`, prov.get(at));
        }
        return String(r);
      });
    }
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
