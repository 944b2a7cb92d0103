// Noise schedules: the betas of the forward process (IDDPM's get_named_beta_schedule), float64.

export type ScheduleName = 'linear' | 'cosine' | 'squaredcos_cap_v2' | 'quad' | 'const';

export const SCHEDULE_NAMES: readonly ScheduleName[] = ['linear', 'cosine', 'squaredcos_cap_v2', 'quad', 'const'];

export function isScheduleName(s: unknown): s is ScheduleName {
  return typeof s === 'string' && (SCHEDULE_NAMES as readonly string[]).includes(s);
}

/** numpy.linspace(a, b, n) in float64, including numpy's exact last element. */
export function linspace(a: number, b: number, n: number): Float64Array {
  const out = new Float64Array(n);
  if (n === 1) {
    out[0] = a;
    return out;
  }
  const step = (b - a) / (n - 1);
  for (let i = 0; i < n; i++) out[i] = a + i * step;
  out[n - 1] = b;
  return out;
}

/** IDDPM's cosine alpha-bar, f(u) = cos^2(((u + 0.008)/1.008) pi/2). */
function cosineAlphaBar(u: number): number {
  const c = Math.cos(((u + 0.008) / 1.008) * (Math.PI / 2));
  return c * c;
}

/**
 * Betas of the named schedule for T steps. `linear` is scaled by 1000/T so that
 * any T spans the same process as T = 1000 (as guided-diffusion does).
 */
export function betasFor(name: ScheduleName, T: number): Float64Array {
  if (!Number.isInteger(T) || T < 1) {
    throw new RangeError(`betasFor: T (number of diffusion steps) must be an integer >= 1, got ${String(T)}`);
  }
  switch (name) {
    case 'linear': {
      const s = 1000 / T;
      return linspace(s * 1e-4, s * 0.02, T);
    }
    case 'cosine':
    case 'squaredcos_cap_v2': {
      const b = new Float64Array(T);
      for (let t = 0; t < T; t++) {
        b[t] = Math.min(1 - cosineAlphaBar((t + 1) / T) / cosineAlphaBar(t / T), 0.999);
      }
      return b;
    }
    case 'quad': {
      const b = linspace(Math.sqrt(1e-4), Math.sqrt(0.02), T);
      for (let t = 0; t < T; t++) b[t] = b[t] * b[t];
      return b;
    }
    case 'const':
      return new Float64Array(T).fill(0.02);
    default:
      throw new RangeError(
        `betasFor: unknown noise schedule ${JSON.stringify(name)}; expected one of ${SCHEDULE_NAMES.join(', ')}`,
      );
  }
}
