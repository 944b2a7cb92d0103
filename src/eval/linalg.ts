// Dense float64 linear algebra for the metrics: symmetric eigendecomposition
// (Householder tridiagonalisation + implicit QL, after EISPACK tred2/tql2 as in
// JAMA), the symmetric PSD square root, and a few matrix helpers. Matrices are
// square, row-major Float64Array of length n*n.

export interface SymEig {
  /** eigenvalues, ascending */
  values: Float64Array;
  /** eigenvectors as ROWS: vectors[j*n .. j*n+n) is the unit eigenvector of values[j]; null when not requested */
  vectors: Float64Array | null;
}

function checkSquare(a: Float64Array, n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || a.length !== n * n) {
    throw new RangeError(`${what}: expected an ${n}x${n} matrix (${n * n} values), got ${a.length}`);
  }
}

/**
 * Eigendecomposition of the symmetric matrix `a` (n×n, only read, never
 * modified). O(n³); n = 512 takes about a second. The input is symmetrised
 * ((A + Aᵀ)/2) first, so rounding asymmetry in callers does no harm.
 */
export function symEig(a: Float64Array, n: number, wantVectors = true): SymEig {
  checkSquare(a, n, 'symEig');
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) V[i * n + j] = 0.5 * (a[i * n + j] + a[j * n + i]);
    if (!Number.isFinite(V[i * n + i])) throw new RangeError('symEig: matrix holds non-finite values');
  }
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  if (n === 0) return { values: d, vectors: wantVectors ? V : null };
  tred2(V, d, e, n, wantVectors);
  // tql2 rotates columns of V; rotating rows of Vᵀ is the same work with contiguous memory.
  let W: Float64Array | null = null;
  if (wantVectors) {
    W = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) W[j * n + i] = V[i * n + j];
  }
  tql2(W, d, e, n);
  // Sort ascending (tql2 leaves them nearly sorted).
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => d[x] - d[y]);
  const values = new Float64Array(n);
  for (let j = 0; j < n; j++) values[j] = d[order[j]];
  let vectors: Float64Array | null = null;
  if (W) {
    vectors = new Float64Array(n * n);
    for (let j = 0; j < n; j++) vectors.set(W.subarray(order[j] * n, order[j] * n + n), j * n);
  }
  return { values, vectors };
}

// Householder reduction to tridiagonal form: d = diagonal, e = sub-diagonal (e[0] = 0).
// With accumulate, V ends as the orthogonal transform; otherwise V is scratch.
function tred2(V: Float64Array, d: Float64Array, e: Float64Array, n: number, accumulate: boolean): void {
  for (let j = 0; j < n; j++) d[j] = V[(n - 1) * n + j];
  for (let i = n - 1; i > 0; i--) {
    let scale = 0;
    let h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k]);
    if (scale === 0) {
      e[i] = d[i - 1];
      for (let j = 0; j < i; j++) {
        d[j] = V[(i - 1) * n + j];
        V[i * n + j] = 0;
        V[j * n + i] = 0;
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      let f = d[i - 1];
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (let j = 0; j < i; j++) e[j] = 0;
      for (let j = 0; j < i; j++) {
        f = d[j];
        V[j * n + i] = f;
        g = e[j] + V[j * n + j] * f;
        for (let k = j + 1; k <= i - 1; k++) {
          const vkj = V[k * n + j];
          g += vkj * d[k];
          e[k] += vkj * f;
        }
        e[j] = g;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j] -= hh * d[j];
      for (let j = 0; j < i; j++) {
        f = d[j];
        g = e[j];
        for (let k = j; k <= i - 1; k++) V[k * n + j] -= f * e[k] + g * d[k];
        d[j] = V[(i - 1) * n + j];
        V[i * n + j] = 0;
      }
    }
    d[i] = h;
  }
  if (accumulate) {
    for (let i = 0; i < n - 1; i++) {
      V[(n - 1) * n + i] = V[i * n + i];
      V[i * n + i] = 1;
      const h = d[i + 1];
      if (h !== 0) {
        for (let k = 0; k <= i; k++) d[k] = V[k * n + i + 1] / h;
        for (let j = 0; j <= i; j++) {
          let g = 0;
          for (let k = 0; k <= i; k++) g += V[k * n + i + 1] * V[k * n + j];
          for (let k = 0; k <= i; k++) V[k * n + j] -= g * d[k];
        }
      }
      for (let k = 0; k <= i; k++) V[k * n + i + 1] = 0;
    }
    for (let j = 0; j < n; j++) {
      d[j] = V[(n - 1) * n + j];
      V[(n - 1) * n + j] = 0;
    }
    V[(n - 1) * n + (n - 1)] = 1;
  } else {
    // Without accumulation the diagonal sits on V's diagonal (tred2 leaves d = h there).
    for (let j = 0; j < n; j++) d[j] = V[j * n + j];
  }
  e[0] = 0;
}

// Implicit QL on the tridiagonal (d, e). W, when given, holds eigenvector rows to rotate.
function tql2(W: Float64Array | null, d: Float64Array, e: Float64Array, n: number): void {
  for (let i = 1; i < n; i++) e[i - 1] = e[i];
  e[n - 1] = 0;
  let f = 0;
  let tst1 = 0;
  const eps = 2 ** -52;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]) + Math.abs(e[l]));
    let m = l;
    while (m < n) {
      if (Math.abs(e[m]) <= eps * tst1) break;
      m++;
    }
    if (m === n) m = n - 1; // e[n-1] = 0, so this only guards rounding
    if (m > l) {
      let iter = 0;
      do {
        if (++iter > 60 * n + 100) throw new Error('symEig: QL iteration did not converge');
        let g = d[l];
        let p = (d[l + 1] - g) / (2 * e[l]);
        let r = Math.hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const dl1 = d[l + 1];
        let h = g - d[l];
        for (let i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        let c = 1;
        let c2 = c;
        let c3 = c;
        const el1 = e[l + 1];
        let s = 0;
        let s2 = 0;
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = Math.hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          if (W) {
            const a0 = i * n;
            const b0 = (i + 1) * n;
            for (let k = 0; k < n; k++) {
              const wb = W[b0 + k];
              const wa = W[a0 + k];
              W[b0 + k] = s * wa + c * wb;
              W[a0 + k] = c * wa - s * wb;
            }
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]) / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0;
  }
}

/** Σ_j f(λ_j) v_j v_jᵀ for eigen-rows `vectors`: a spectral function of a symmetric matrix. */
export function spectralApply(eig: SymEig, n: number, f: (lambda: number) => number): Float64Array {
  const V = eig.vectors;
  if (!V) throw new Error('spectralApply needs eigenvectors');
  const out = new Float64Array(n * n);
  const scaled = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    const fl = f(eig.values[j]);
    if (fl === 0) continue;
    const vj = V.subarray(j * n, j * n + n);
    for (let b = 0; b < n; b++) scaled[b] = fl * vj[b];
    // out += fl · v_j v_jᵀ, row by row (contiguous)
    for (let a = 0; a < n; a++) {
      const va = vj[a];
      if (va === 0) continue;
      const row = a * n;
      for (let b = 0; b < n; b++) out[row + b] += va * scaled[b];
    }
  }
  return out;
}

/**
 * Square root of a symmetric positive semi-definite matrix through its
 * eigendecomposition. Eigenvalues that are negative only by rounding
 * (≥ -tol · max|λ|) are clamped to zero; clearly negative ones are an error.
 */
export function sqrtmPsd(a: Float64Array, n: number, tol = 1e-8): Float64Array {
  const eig = symEig(a, n, true);
  checkPsd(eig.values, tol, 'sqrtmPsd');
  return spectralApply(eig, n, (l) => Math.sqrt(Math.max(l, 0)));
}

/** Throws when eigenvalues are negative beyond rounding (relative tolerance `tol`). */
export function checkPsd(values: Float64Array, tol: number, what: string): void {
  let maxAbs = 0;
  for (const v of values) maxAbs = Math.max(maxAbs, Math.abs(v));
  const min = values.length ? values[0] : 0;
  if (min < -tol * Math.max(maxAbs, 1e-300)) {
    throw new RangeError(`${what}: matrix is not positive semi-definite (eigenvalue ${min.toExponential(3)}, largest |λ| ${maxAbs.toExponential(3)})`);
  }
}

/** C = A·B for n×n row-major matrices (i-k-j order, so the inner loop is contiguous). */
export function matmul(a: Float64Array, b: Float64Array, n: number): Float64Array {
  checkSquare(a, n, 'matmul');
  checkSquare(b, n, 'matmul');
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ci = i * n;
    for (let k = 0; k < n; k++) {
      const aik = a[ci + k];
      if (aik === 0) continue;
      const bk = k * n;
      for (let j = 0; j < n; j++) c[ci + j] += aik * b[bk + j];
    }
  }
  return c;
}

export function transpose(a: Float64Array, n: number): Float64Array {
  const t = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) t[j * n + i] = a[i * n + j];
  return t;
}

export function trace(a: Float64Array, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[i * n + i];
  return s;
}

export function identity(n: number): Float64Array {
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++) m[i * n + i] = 1;
  return m;
}

/** (A + Aᵀ)/2, to remove rounding asymmetry before a symmetric routine. */
export function symmetrize(a: Float64Array, n: number): Float64Array {
  const s = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) s[i * n + j] = 0.5 * (a[i * n + j] + a[j * n + i]);
  return s;
}

/** Largest |a_ij - b_ij|. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`maxAbsDiff: lengths ${a.length} and ${b.length} differ`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
