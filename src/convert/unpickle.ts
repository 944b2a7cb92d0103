// A restricted unpickler for PyTorch state dicts (pickle protocols 2-5).
//
// A pickle is a program: GLOBAL names any Python callable and REDUCE calls it,
// so loading an untrusted .pt with Python's pickle can run code
// (`os.system`). This reader executes nothing. It knows the opcodes a state
// dict uses and a short list of callables whose effect it reproduces as data:
// collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter
// and the torch.*Storage types of the persistent ids; argparse.Namespace is
// kept as a plain record (DiT's train.py stores its args). Any other GLOBAL,
// and any opcode outside that set, is refused with a message naming it.
//
// A hostile pickle is also bounded in what it costs: the reader charges every
// object it builds (and every memo entry and container item) against an
// estimate of the memory it takes, refuses integers longer than a state dict
// holds, and never recurses or spreads over anything whose depth or length the
// file controls.
import { CheckpointError } from '../errors.js';
import { describeValue } from './describe.js';

/** A tensor as the pickle describes it: a view (offset, size, stride in elements) of a storage. */
export { ITEM_BYTES } from './values.js';
export type { PtDtype, PtStorage, PtTensor, PyRecord, PyValue } from './values.js';
import type { PtDtype, PtStorage, PtTensor, PyGlobal, PyRecord, PyValue } from './values.js';

const STORAGES: Record<string, PtDtype> = {
  FloatStorage: 'F32', DoubleStorage: 'F64', HalfStorage: 'F16', BFloat16Storage: 'BF16',
  LongStorage: 'I64', IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8', ByteStorage: 'U8', BoolStorage: 'BOOL',
};
const ALLOWED = new Set([
  'collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_tensor', 'torch._utils._rebuild_parameter', 'argparse.Namespace',
  ...Object.keys(STORAGES).map((s) => `torch.${s}`),
]);

/**
 * Limits that keep a hostile pickle bounded. A state dict is far below them: DiT-XL/2's
 * 675 tensors build ~7,000 objects and ~1 MiB; a training checkpoint with Adam moments
 * a few times that.
 */
export const PICKLE_LIMITS = {
  /** estimated JS heap bytes of everything the pickle builds (created, even if dropped later) */
  heapBytes: 128 * 2 ** 20,
  /** memo table entries (BINPUT / MEMOIZE) */
  memo: 1 << 20,
  /** values on the stack at once */
  stack: 1 << 20,
  /** bytes of one LONG1 / LONG4 integer: the legacy format's magic number takes 10 */
  longBytes: 16,
};
/**
 * What V8 spends on each kind of value (measured with node --expose-gc, rounded
 * up): an empty Map ~200 bytes, a tuple 48 + 8 per item, a list's first append
 * ~136 more (its backing store), a Map entry ~48.
 */
const COST = { map: 200, array: 48, item: 8, firstAppend: 136, entry: 48, string: 32, number: 16, object: 64 };

const isTensorLike = (v: unknown): v is PtTensor => typeof v === 'object' && v !== null && (v as PtTensor).kind === 'tensor';

class Mark {}
const MARK = new Mark();

const intOf = (v: PyValue | Mark, what: string, file: string): number => {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'bigint' && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  throw new CheckpointError(file, `pickle: ${what}: expected an integer, found ${typeof v}`);
};

/**
 * Decodes a little-endian two's-complement integer (LONG1/LONG4) in one pass:
 * the bytes become one hex string that BigInt parses, linear in the length.
 */
export function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let hex = '';
  for (let i = b.length - 1; i >= 0; i--) hex += (b[i] < 16 ? '0' : '') + b[i].toString(16);
  let v = BigInt(`0x${hex}`);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** The pickle ended before its STOP: the reader of a legacy file then reads more of the file and tries again. */
export class PickleTruncatedError extends CheckpointError {
  override name = 'PickleTruncatedError';
}

/** A text argument in an error message, cut to a readable length. */
const quoted = (s: string) => JSON.stringify(s.length > 60 ? `${s.slice(0, 60)}…` : s);

/**
 * Interprets `data` (a pickle) and returns the object it builds. `file` names
 * the archive in errors.
 */
export function unpickle(data: Uint8Array, file: string): PyValue {
  return unpickleAt(data, 0, file).value;
}

/**
 * Interprets the pickle that starts at byte `start` of `data`; returns the
 * object and the byte after its STOP (a legacy torch.save file is several
 * pickles in a row).
 */
export function unpickleAt(data: Uint8Array, start: number, file: string): { value: PyValue; end: number } {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const dec = new TextDecoder('utf-8', { fatal: false });
  let pos = start;
  const stack: (PyValue | Mark)[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  let heap = 0;

  const fail = (msg: string): never => {
    throw new CheckpointError(file, `pickle byte ${pos}: ${msg}`);
  };
  const need = (n: number) => {
    if (n < 0 || pos + n > data.length) throw new PickleTruncatedError(file, `pickle byte ${pos}: truncated (needs ${n} more bytes)`);
  };
  const u8 = () => { need(1); return data[pos++]; };
  const u16 = () => { need(2); const v = dv.getUint16(pos, true); pos += 2; return v; };
  const u32 = () => { need(4); const v = dv.getUint32(pos, true); pos += 4; return v; };
  const i32 = () => { need(4); const v = dv.getInt32(pos, true); pos += 4; return v; };
  const u64 = () => {
    need(8);
    const v = dv.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(data.length)) fail(`length ${v} exceeds the pickle's ${data.length} bytes`);
    return Number(v);
  };
  const bytes = (n: number) => { need(n); const b = data.subarray(pos, pos + n); pos += n; return b; };
  const line = () => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) throw new PickleTruncatedError(file, `pickle byte ${pos}: truncated (a text argument has no newline)`);
    const s = dec.decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  /** Counts `bytes` of estimated heap against the pickle's budget. */
  const charge = (bytes: number) => {
    heap += bytes;
    if (heap > PICKLE_LIMITS.heapBytes) fail(`the objects it builds take more than ${PICKLE_LIMITS.heapBytes / 2 ** 20} MiB: not a state dict`);
  };
  const push = (v: PyValue | Mark) => {
    if (stack.length >= PICKLE_LIMITS.stack) fail(`more than ${PICKLE_LIMITS.stack} values on the stack: not a state dict`);
    stack.push(v);
  };
  /** Pushes a value built here (not one taken from the memo or the stack), charging its cost. */
  const pushNew = (v: PyValue, cost: number) => {
    charge(cost);
    push(v);
  };
  const memoize = (k: number) => {
    if (!Number.isSafeInteger(k) || k < 0) fail('memo key is not a non-negative integer');
    if (!memo.has(k)) {
      if (memo.size >= PICKLE_LIMITS.memo) fail(`more than ${PICKLE_LIMITS.memo} memo entries: not a state dict`);
      charge(COST.entry);
    }
    memo.set(k, top());
  };
  const pop = (): PyValue => {
    if (stack.length === 0) fail('stack underflow');
    const v = stack.pop()!;
    if (v instanceof Mark) fail('unexpected MARK');
    return v as PyValue;
  };
  const top = (): PyValue => {
    if (stack.length === 0) fail('stack underflow');
    const v = stack[stack.length - 1];
    if (v instanceof Mark) fail('unexpected MARK');
    return v as PyValue;
  };
  const popMark = (): PyValue[] => {
    const m = marks.pop();
    if (m === undefined) fail('no MARK to pop to');
    const out = stack.splice(m!);
    out.shift(); // the MARK itself
    return out as PyValue[];
  };
  const long = (n: number) => {
    if (n > PICKLE_LIMITS.longBytes) fail(`an integer of ${n} bytes: a state dict holds none longer than ${PICKLE_LIMITS.longBytes}`);
    const v = decodeLong(bytes(n));
    return typeof v === 'bigint' ? pushNew(v, COST.object) : push(v);
  };
  const str = (b: Uint8Array) => pushNew(dec.decode(b), COST.string + b.length);
  const blob = (b: Uint8Array) => pushNew(b.slice(), COST.object + b.length);
  const asMap = (v: PyValue, op: string): Map<PyValue, PyValue> => {
    if (v instanceof Map) return v;
    if (typeof v === 'object' && v !== null && (v as PyRecord).kind === 'record') return (v as PyRecord).attrs;
    return fail(`${op} on something that is not a dict`);
  };
  const global = (mod: string, name: string): PyGlobal => {
    const full = `${mod}.${name}`;
    if (!ALLOWED.has(full)) {
      const f = full.length > 120 ? `${full.slice(0, 120)}…` : full;
      fail(`refusing to load ${f}: a .pt may only hold tensors, dicts, lists and numbers (this pickle would run ${f}; it is not a plain state dict)`);
    }
    return { kind: 'global', name: full };
  };
  const call = (fn: PyValue, args: PyValue, op: string): PyValue => {
    if (typeof fn !== 'object' || fn === null || (fn as PyGlobal).kind !== 'global') fail(`${op} of something that is not an allowed callable`);
    if (!Array.isArray(args)) fail(`${op}: arguments are not a tuple`);
    const name = (fn as PyGlobal).name;
    const a = args as PyValue[];
    switch (name) {
      case 'collections.OrderedDict':
        if (a.length > 0) fail('collections.OrderedDict with arguments');
        charge(COST.map);
        return new Map();
      case 'argparse.Namespace':
        charge(COST.map + COST.object);
        return { kind: 'record', type: name, attrs: new Map() };
      case 'torch._utils._rebuild_tensor': // torch < 0.4: (storage, storage_offset, size, stride)
      case 'torch._utils._rebuild_tensor_v2': {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if (a.length < 4) fail(`${name} with ${a.length} arguments (expected at least 4)`);
        const st = a[0] as PtStorage;
        if (typeof st !== 'object' || st === null || st.kind !== 'storage') fail(`${name}: argument 0 is not a storage`);
        const size = a[2];
        const stride = a[3];
        if (!Array.isArray(size) || !Array.isArray(stride) || size.length !== stride.length) fail(`${name}: size and stride must be tuples of one length`);
        const t: PtTensor = {
          kind: 'tensor', storage: st, offset: intOf(a[1], 'storage offset', file),
          size: (size as PyValue[]).map((v) => intOf(v, 'size', file)), stride: (stride as PyValue[]).map((v) => intOf(v, 'stride', file)),
        };
        if (t.offset < 0 || t.size.some((d) => d < 0) || t.stride.some((d) => d < 0)) fail(`${name}: negative offset, size or stride`);
        charge(COST.object + 2 * COST.array + 2 * COST.item * t.size.length);
        return t;
      }
      case 'torch._utils._rebuild_parameter':
        if (a.length < 1 || !isTensorLike(a[0])) fail(`${name}: argument 0 is not a tensor`);
        return a[0];
      default:
        return fail(`${op} of ${name}: only its use as a storage type is allowed`);
    }
  };

  need(2);
  if (data[start] !== 0x80) fail('not a pickle of protocol 2 or later (torch.save writes protocol 2)');
  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: { const p = u8(); if (p < 2 || p > 5) fail(`unsupported pickle protocol ${p}`); break; } // PROTO
      case 0x95: u64(); break; // FRAME: a length hint
      case 0x2e: { // STOP
        if (stack.length !== 1 || marks.length > 0) fail('STOP with an unbalanced stack');
        return { value: stack[0] as PyValue, end: pos };
      }
      case 0x28: marks.push(stack.length); push(MARK); break; // MARK
      case 0x7d: pushNew(new Map(), COST.map); break; // EMPTY_DICT
      case 0x5d: pushNew([], COST.array); break; // EMPTY_LIST
      case 0x29: pushNew([], COST.array); break; // EMPTY_TUPLE
      case 0x8f: pushNew([], COST.array); break; // EMPTY_SET (as a list)
      case 0x74: case 0x6c: { const t = popMark(); pushNew(t, COST.array + COST.item * t.length); break; } // TUPLE, LIST (MARK removed)
      case 0x64: { // DICT
        const t = popMark();
        const m = new Map<PyValue, PyValue>();
        charge(COST.map + COST.entry * (t.length >> 1));
        for (let i = 0; i + 1 < t.length; i += 2) m.set(t[i], t[i + 1]);
        push(m); break;
      }
      case 0x85: { const a = pop(); pushNew([a], COST.array + COST.item); break; } // TUPLE1
      case 0x86: { const b = pop(); const a = pop(); pushNew([a, b], COST.array + 2 * COST.item); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); pushNew([a, b, c], COST.array + 3 * COST.item); break; } // TUPLE3
      case 0x61: { // APPEND
        const v = pop();
        const l = top(); if (!Array.isArray(l)) fail('APPEND to a non-list');
        charge(2 * COST.item + ((l as PyValue[]).length === 0 ? COST.firstAppend : 0)); // a growing list holds up to 2x its items
        (l as PyValue[]).push(v); break;
      }
      case 0x65: case 0x90: { // APPENDS, ADDITEMS
        const vs = popMark();
        const l = top(); if (!Array.isArray(l)) fail('APPENDS to a non-list');
        charge(2 * COST.item * vs.length + ((l as PyValue[]).length === 0 ? COST.firstAppend : 0));
        // One by one: a spread passes every item as an argument, and the file sets how many.
        for (const v of vs) (l as PyValue[]).push(v);
        break;
      }
      case 0x73: { const v = pop(); const k = pop(); const m = asMap(top(), 'SETITEM'); charge(COST.entry); m.set(k, v); break; }
      case 0x75: { // SETITEMS
        const kv = popMark();
        const m = asMap(top(), 'SETITEMS');
        charge(COST.entry * (kv.length >> 1));
        for (let i = 0; i + 1 < kv.length; i += 2) m.set(kv[i], kv[i + 1]);
        break;
      }
      case 0x71: memoize(u8()); break; // BINPUT
      case 0x72: memoize(u32()); break; // LONG_BINPUT
      case 0x94: memoize(memo.size); break; // MEMOIZE
      case 0x70: { const s = line(); if (!/^\d{1,15}$/.test(s)) fail(`PUT ${quoted(s)}: not a memo key`); memoize(Number(s)); break; } // PUT
      case 0x68: case 0x6a: case 0x67: { // BINGET, LONG_BINGET, GET
        const k = op === 0x68 ? u8() : op === 0x6a ? u32() : Number(line());
        if (!memo.has(k)) fail(`memo key ${Number.isNaN(k) ? 'that is not a number' : k} is not set`);
        push(memo.get(k)!); break;
      }
      case 0x4a: push(i32()); break; // BININT
      case 0x4b: push(u8()); break; // BININT1
      case 0x4d: push(u16()); break; // BININT2
      case 0x8a: long(u8()); break; // LONG1
      case 0x8b: long(u32()); break; // LONG4
      case 0x49: { // INT (text; also True/False as 01/00)
        const s = line();
        if (s === '01') push(true); else if (s === '00') push(false);
        else { const v = Number(s); if (!/^-?\d{1,17}$/.test(s) || !Number.isSafeInteger(v)) fail(`INT ${quoted(s)}: not an integer a state dict holds`); push(v); }
        break;
      }
      case 0x47: { need(8); pushNew(dv.getFloat64(pos, false), COST.number); pos += 8; break; } // BINFLOAT (big-endian)
      case 0x88: push(true); break; // NEWTRUE
      case 0x89: push(false); break; // NEWFALSE
      case 0x4e: push(null); break; // NONE
      case 0x8c: str(bytes(u8())); break; // SHORT_BINUNICODE
      case 0x58: str(bytes(u32())); break; // BINUNICODE
      case 0x8d: str(bytes(u64())); break; // BINUNICODE8
      case 0x55: str(bytes(u8())); break; // SHORT_BINSTRING
      case 0x54: { const n = i32(); if (n < 0) fail('negative BINSTRING length'); str(bytes(n)); break; }
      case 0x43: blob(bytes(u8())); break; // SHORT_BINBYTES
      case 0x42: blob(bytes(u32())); break; // BINBYTES
      case 0x8e: blob(bytes(u64())); break; // BINBYTES8
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: push(top()); break; // DUP
      case 0x63: { const mod = line(); const name = line(); pushNew(global(mod, name), COST.object); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop(); const mod = pop();
        if (typeof mod !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        pushNew(global(mod as string, name as string), COST.object); break;
      }
      case 0x52: { const args = pop(); const fn = pop(); push(call(fn, args, 'REDUCE')); break; } // REDUCE (call charges what it builds)
      case 0x81: { const args = pop(); const cls = pop(); push(call(cls, args, 'NEWOBJ')); break; } // NEWOBJ
      case 0x62: { // BUILD: set state on the object below
        const state = pop();
        const obj = top();
        if (obj instanceof Map) {
          // OrderedDict state: {'_metadata': ...} from state_dict(); kept out of the items.
          break;
        }
        if (typeof obj === 'object' && obj !== null && (obj as PyRecord).kind === 'record') {
          if (state instanceof Map) {
            charge(COST.entry * state.size);
            for (const [k, v] of state) (obj as PyRecord).attrs.set(k, v);
          }
          break;
        }
        if (isTensorLike(obj)) break; // tensor state (requires_grad etc.): irrelevant for the values
        fail('BUILD on an object that is not a dict, a record or a tensor');
        break;
      }
      case 0x51: { // BINPERSID: ('storage', storage_type, key, location, numel[, view_metadata])
        const pid = pop();
        if (!Array.isArray(pid) || pid.length < 5 || pid.length > 6 || pid[0] !== 'storage') fail('persistent id is not a ("storage", type, key, location, numel) tuple');
        const [, type, key, , numel, view] = pid as PyValue[];
        // The legacy format's sixth item describes a view into another storage (torch < 0.4); torch >= 0.4 writes None.
        if (view !== undefined && view !== null) fail('persistent id of a storage view (the view metadata of torch < 0.4) is not supported');
        const t = type as PyGlobal;
        if (typeof t !== 'object' || t === null || t.kind !== 'global' || !t.name.startsWith('torch.') || !(t.name.slice(6) in STORAGES)) {
          fail('persistent id names no torch storage type');
        }
        if (typeof key !== 'string' || key.length > 64 || !/^[0-9A-Za-z_.-]+$/.test(key)) fail(`storage key ${describeValue(key as PyValue)} is not a plain name`);
        const st: PtStorage = { kind: 'storage', dtype: STORAGES[t.name.slice(6)], key: key as string, numel: intOf(numel as PyValue, 'storage numel', file) };
        if (st.numel < 0) fail('negative storage size');
        pushNew(st, COST.object); break;
      }
      case 0x50: fail('PERSID (text persistent ids) is not used by torch.save'); break;
      case 0x82: case 0x83: case 0x84: fail('EXT opcodes (the copyreg extension registry) are refused'); break;
      case 0x69: case 0x6f: case 0x92: fail(`opcode ${op === 0x69 ? 'INST' : op === 0x6f ? 'OBJ' : 'NEWOBJ_EX'} (builds arbitrary objects) is refused`); break;
      default:
        fail(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')} (${JSON.stringify(String.fromCharCode(op))})`);
    }
  }
}
