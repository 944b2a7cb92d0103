// What the restricted unpickler builds: plain values, tensors and storages. A leaf
// module, so the unpickler and the value describer (describe.ts) share it without a circle.

export interface PtTensor {
  kind: 'tensor';
  storage: PtStorage;
  offset: number;
  size: number[];
  stride: number[];
}

/** A persistent storage reference: the zip entry `data/<key>` (or the legacy file's storage `key`), `numel` elements of `dtype`. */
export interface PtStorage {
  kind: 'storage';
  dtype: PtDtype;
  key: string;
  numel: number;
}

export type PtDtype = 'F32' | 'F64' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';
export const ITEM_BYTES: Record<PtDtype, number> = { F32: 4, F64: 8, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** What a pickled object becomes: dicts are Maps (keys in order), tuples and lists arrays. */
export type PyValue =
  | null | boolean | number | bigint | string | Uint8Array
  | PyValue[] | Map<PyValue, PyValue> | PtTensor | PtStorage | PyRecord | PyGlobal;

/** An allowed plain-data object (argparse.Namespace): its attributes. */
export interface PyRecord { kind: 'record'; type: string; attrs: Map<PyValue, PyValue> }

/** A global the pickle named that is allowed (a tensor rebuild call, a storage type). */
export interface PyGlobal { kind: 'global'; name: string }
