// Which storages an unpickled checkpoint refers to, and how much of each its
// tensors reach: a reader keeps only that part of a storage in memory.
import { ITEM_BYTES, type PtDtype, type PtStorage, type PtTensor, type PyRecord, type PyValue } from './unpickle.js';

/** How the file's tensors use one storage key. */
export interface StorageUse {
  dtype: PtDtype;
  numel: number;
  /** bytes from the storage's start that some tensor reaches */
  need: number;
  /** another reference to this key gives another dtype or element count */
  mixed: boolean;
}

const isTagged = (v: PyValue, kind: string): boolean => typeof v === 'object' && v !== null && !(v instanceof Map) && !Array.isArray(v) && !(v instanceof Uint8Array) && (v as { kind: string }).kind === kind;

/** Bytes from the start of its storage that tensor `t` reaches (0 for an empty tensor; at most the storage). */
export function tensorNeed(t: PtTensor): number {
  const item = ITEM_BYTES[t.storage.dtype];
  const all = t.storage.numel * item;
  if (t.size.some((d) => d === 0)) return 0;
  let last = t.offset;
  for (let d = 0; d < t.size.length; d++) last += (t.size[d] - 1) * t.stride[d];
  const need = (last + 1) * item;
  return Number.isSafeInteger(need) && need <= all ? need : all;
}

/** Every storage key the object refers to (through tensors or bare), walked without recursion. */
export function storageUses(root: PyValue): Map<string, StorageUse> {
  const uses = new Map<string, StorageUse>();
  const seen = new Set<object>();
  const note = (st: PtStorage, need: number) => {
    const u = uses.get(st.key);
    if (!u) uses.set(st.key, { dtype: st.dtype, numel: st.numel, need, mixed: false });
    else {
      u.need = Math.max(u.need, need);
      if (u.dtype !== st.dtype || u.numel !== st.numel) u.mixed = true;
    }
  };
  const todo: PyValue[] = [root];
  while (todo.length > 0) {
    const v = todo.pop()!;
    if (typeof v !== 'object' || v === null || v instanceof Uint8Array || seen.has(v)) continue;
    seen.add(v);
    if (Array.isArray(v)) for (const x of v) todo.push(x);
    else if (v instanceof Map) for (const [k, x] of v) todo.push(k, x);
    else if (isTagged(v, 'tensor')) note((v as PtTensor).storage, tensorNeed(v as PtTensor));
    else if (isTagged(v, 'storage')) note(v as PtStorage, 0);
    else if (isTagged(v, 'record')) todo.push((v as PyRecord).attrs);
  }
  return uses;
}

