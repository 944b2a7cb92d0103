// Respacing (DDIM respacing, IDDPM's respace.py): sample with a subset of the training steps, as
// guided-diffusion's space_timesteps / SpacedDiffusion do.
import { makeCoefs, type DiffusionCoefs } from './coefs.js';

/** Python's round(): halves go to the even neighbour. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

function badSpec(spec: string, T: number, why: string): RangeError {
  return new RangeError(`timestep respacing ${JSON.stringify(spec)} for T = ${T}: ${why}`);
}

/**
 * The kept step indices (ascending) for a respacing spec:
 *   ""            all T steps;
 *   "250"         250 evenly spaced steps (rounded) over 0..T-1;
 *   "10,15,20"    T split into 3 near-equal sections (the first T % 3 one step
 *                 longer), with 10, 15 and 20 evenly spaced steps in them;
 *   "ddimN"       range(0, T, stride) for the smallest integer stride giving
 *                 exactly N steps (an error when no stride does).
 */
export function spacedTimesteps(T: number, spec: string): number[] {
  if (!Number.isInteger(T) || T < 1) throw new RangeError(`spacedTimesteps: T must be an integer >= 1, got ${String(T)}`);
  const s = spec.trim();
  if (s === '') return Array.from({ length: T }, (_, i) => i);
  if (s.startsWith('ddim')) {
    const rest = s.slice(4);
    if (!/^\d+$/.test(rest)) throw badSpec(spec, T, 'expected "ddimN" with N a positive integer');
    const want = Number(rest);
    if (want === T) return Array.from({ length: T }, (_, i) => i);
    for (let stride = 1; stride < T; stride++) {
      if (Math.ceil(T / stride) === want) {
        const out: number[] = [];
        for (let t = 0; t < T; t += stride) out.push(t);
        return out;
      }
    }
    throw badSpec(spec, T, `no integer stride gives exactly ${want} steps`);
  }
  const parts = s.split(',').map((p) => p.trim());
  const counts = parts.map((p) => {
    if (!/^\d+$/.test(p)) throw badSpec(spec, T, `expected "N", "N1,N2,..." or "ddimN" with non-negative integers, got ${JSON.stringify(p)}`);
    return Number(p);
  });
  if (counts.reduce((a, b) => a + b, 0) < 1) throw badSpec(spec, T, 'keeps no step at all');
  if (counts.length > T) throw badSpec(spec, T, `${counts.length} sections are more than the ${T} steps`);
  const sizePer = Math.floor(T / counts.length);
  const extra = T % counts.length;
  const steps = new Set<number>();
  let start = 0;
  counts.forEach((count, i) => {
    const size = sizePer + (i < extra ? 1 : 0);
    if (size < count) throw badSpec(spec, T, `cannot take ${count} steps from section ${i} of ${size} steps`);
    const frac = count <= 1 ? 1 : (size - 1) / (count - 1);
    // Accumulate the float index exactly as the reference does (same rounding).
    let cur = 0;
    for (let j = 0; j < count; j++) {
      steps.add(start + roundHalfEven(cur));
      cur += frac;
    }
    start += size;
  });
  return [...steps].sort((a, b) => a - b);
}

/**
 * The diffusion over the kept steps: beta'_i = 1 - abar[kept_i] / abar[kept_{i-1}]
 * (abar before the first kept step is 1). `timestepMap[i]` is the original index
 * the network must be called with at respaced step i.
 */
export function respace(coefs: DiffusionCoefs, kept: readonly number[]): { coefs: DiffusionCoefs; timestepMap: Int32Array } {
  if (kept.length < 1) throw new RangeError('respace: no step kept');
  const betas = new Float64Array(kept.length);
  const map = new Int32Array(kept.length);
  let last = 1;
  let prevT = -1;
  kept.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= coefs.T || t <= prevT) {
      throw new RangeError(`respace: kept steps must be strictly increasing integers in [0, ${coefs.T}), got ${t} at ${i}`);
    }
    betas[i] = 1 - coefs.abar[t] / last;
    last = coefs.abar[t];
    map[i] = t;
    prevT = t;
  });
  return { coefs: makeCoefs(betas), timestepMap: map };
}
