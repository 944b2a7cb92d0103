// Squared distances between two feature sets, a block of rows at a time,
// through the addon's Gram matrix a·bᵀ (one BLAS / built-in GEMM per block:
// native/src/napi/gram.cpp): |a|² + |b|² - 2 a·b in float32, as ADM's
// evaluator computes them. Precision and recall over 50k Inception features
// need three 50k x 50k x 2048 products: minutes this way, hours as scalar loops.
import { addonExport, call, NativeError } from '../native.js';

/**
 * Work (points x points x dims) from which precision/recall and KID take their
 * distances or dot products from the addon's GEMM (float32, as ADM's evaluator)
 * instead of exact float64 loops: small sets stay exact and reproducible to the
 * last bit by anyone.
 */
export const NATIVE_MIN_WORK = 1 << 27;

type GramFn = (a: Float32Array, b: Float32Array, dims: { n: number; m: number; d: number; threads: number }) => Float32Array;

let gramFn: GramFn | null | undefined;

/** The addon's gramF32, or null when no addon with it is loaded (callers keep to exact loops). */
export function nativeGram(): GramFn | null {
  if (gramFn === undefined) {
    try {
      const f = addonExport('gramF32');
      gramFn = typeof f === 'function' ? (f as GramFn) : null;
    } catch {
      gramFn = null;
    }
  }
  return gramFn;
}

/** Result entries per block: [rows, m] float32 (64 MiB). */
const BLOCK_ENTRIES = 1 << 24;

export class GramDistances {
  readonly rowsPerBlock: number;
  readonly #x: Float32Array;
  readonly #y: Float32Array;
  readonly #xn: Float64Array;
  readonly #yn: Float64Array;

  constructor(
    x: ArrayLike<number>,
    readonly nx: number,
    y: ArrayLike<number> | null,
    readonly ny: number,
    readonly d: number,
    readonly gram: GramFn,
  ) {
    this.#x = x instanceof Float32Array ? x : Float32Array.from(x);
    this.#y = y === null ? this.#x : y instanceof Float32Array ? y : Float32Array.from(y);
    this.#xn = norms2(this.#x, nx, d);
    this.#yn = y === null ? this.#xn : norms2(this.#y, ny, d);
    this.rowsPerBlock = Math.max(1, Math.min(nx, Math.floor(BLOCK_ENTRIES / ny)));
  }

  /** Squared distances of x's rows [i0, i0 + rows) to every row of y, [rows, ny] row-major (>= 0). */
  block(i0: number, rows: number): Float32Array {
    const { d, ny } = this;
    const g = call(() => this.gram(this.#x.subarray(i0 * d, (i0 + rows) * d), this.#y, { n: rows, m: ny, d, threads: 0 }));
    if (g.length !== rows * ny) throw new NativeError(`gramF32 returned ${g.length} values, expected ${rows * ny}`);
    const yn = this.#yn;
    for (let r = 0; r < rows; r++) {
      const xi = this.#xn[i0 + r];
      const o = r * ny;
      for (let j = 0; j < ny; j++) {
        const v = xi + yn[j] - 2 * g[o + j];
        g[o + j] = v > 0 ? v : 0;
      }
    }
    return g;
  }
}

function norms2(x: Float32Array, n: number, d: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = i * d; k < (i + 1) * d; k++) s += x[k] * x[k];
    out[i] = s;
  }
  return out;
}
