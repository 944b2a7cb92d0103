// One-line summaries of unpickled values for error messages ("the file holds:
// model (a state dict of 130 tensors), steps (number), ..."). A pickle can
// build values that String() or JSON.stringify cannot print in bounded time or
// stack: a list nested a million deep, a cycle, or a DAG of shared lists whose
// expansion doubles per level. The summary visits at most MAX_DEPTH levels and
// MAX_ITEMS items per container, prints a container it has already printed as
// `[…]` / `{…}`, and stops at a character budget, so its cost is fixed whatever
// the file holds.
import type { PtStorage, PtTensor, PyRecord, PyValue } from './values.js';

const MAX_DEPTH = 3;
const MAX_ITEMS = 6;
const MAX_STRING = 60;

type Tagged = PtTensor | PtStorage | PyRecord | { kind: 'global'; name: string };

/** A bounded, cycle- and sharing-aware summary of `v`: at most `budget` characters (plus a closing `…`). */
export function describeValue(v: PyValue, budget = 160): string {
  let out = '';
  const seen = new Set<object>();
  const emit = (s: string) => {
    out += s.length > budget - out.length ? s.slice(0, Math.max(0, budget - out.length)) : s;
  };
  const full = () => out.length >= budget;
  const walk = (x: PyValue, depth: number): void => {
    if (full()) return;
    if (x === null) return emit('None');
    if (typeof x === 'boolean') return emit(x ? 'True' : 'False');
    if (typeof x === 'number' || typeof x === 'bigint') return emit(String(x));
    if (typeof x === 'string') return emit(JSON.stringify(x.length > MAX_STRING ? `${x.slice(0, MAX_STRING)}…` : x));
    if (x instanceof Uint8Array) return emit(`bytes(${x.length})`);
    if (Array.isArray(x) || x instanceof Map) {
      const list = Array.isArray(x);
      const n = list ? x.length : x.size;
      if (seen.has(x)) return emit(list ? '[…]' : '{…}');
      seen.add(x);
      if (depth >= MAX_DEPTH && n > 0) return emit(list ? `[${n} item${n === 1 ? '' : 's'}]` : `{${n} entr${n === 1 ? 'y' : 'ies'}}`);
      emit(list ? '[' : '{');
      let i = 0;
      for (const item of list ? x : x.entries()) {
        if (full()) return;
        if (i === MAX_ITEMS) { emit(`, … ${n - MAX_ITEMS} more`); break; }
        if (i > 0) emit(', ');
        if (list) walk(item as PyValue, depth + 1);
        else {
          const [k, val] = item as [PyValue, PyValue];
          walk(k, depth + 1);
          emit(': ');
          walk(val, depth + 1);
        }
        i++;
      }
      return emit(list ? ']' : '}');
    }
    const t = x as Tagged;
    switch (t.kind) {
      case 'tensor': return emit(`tensor ${t.storage.dtype} [${t.size.length > 8 ? `${t.size.slice(0, 8).join(', ')}, …` : t.size.join(', ')}]`);
      case 'storage': return emit(`storage ${t.dtype}[${t.numel}]`);
      case 'record': return emit(`${t.type}(${t.attrs.size} attributes)`);
      case 'global': return emit(t.name);
    }
  };
  walk(v, 0);
  return full() ? `${out}…` : out;
}
