// The speed-up factor of the experiment: how many training steps a method needs
// to reach the baseline's final score, compared with the baseline itself.
//
//   target      = the baseline's score at its last evaluation
//   steps(c)    = the first step at which curve c reaches the target, linearly
//                 interpolated between the two evaluations that bracket the
//                 crossing (a curve already at the target at its first
//                 evaluation gives that evaluation's step: nothing earlier was
//                 measured)
//   speed-up    = steps(baseline) / steps(method), or null ("not reached")
//
// steps(baseline) is the first crossing too, not simply the last step: when the
// baseline's curve is noisy and touches its final value earlier, that earlier
// step is what it needed, and every method is measured the same way.

export interface CurvePoint {
  step: number;
  value: number;
}

/** First step at which `curve` reaches `target` (<= when lower is better, >= otherwise), interpolated; null if never. */
export function stepsToReach(curve: readonly CurvePoint[], target: number, lowerIsBetter: boolean): number | null {
  const reached = (v: number) => (lowerIsBetter ? v <= target : v >= target);
  for (let i = 0; i < curve.length; i++) {
    const p = curve[i];
    if (!Number.isFinite(p.value) || !reached(p.value)) continue;
    if (i === 0) return p.step;
    const q = curve[i - 1];
    if (!Number.isFinite(q.value)) return p.step;
    // q misses, p reaches: the crossing lies in (q.step, p.step]
    const f = (target - q.value) / (p.value - q.value);
    return q.step + Math.min(1, Math.max(0, f)) * (p.step - q.step);
  }
  return null;
}

export interface Speedup {
  /** the baseline's final score */
  target: number;
  baselineSteps: number;
  /** steps the method needed, null when it never reached the target */
  methodSteps: number | null;
  /** baselineSteps / methodSteps, null when not reached */
  factor: number | null;
}

export function speedupFactor(baseline: readonly CurvePoint[], method: readonly CurvePoint[], lowerIsBetter: boolean): Speedup {
  if (baseline.length === 0) throw new RangeError('speed-up: the baseline has no evaluations');
  for (const c of [baseline, method]) {
    for (let i = 1; i < c.length; i++) {
      if (!(c[i].step > c[i - 1].step)) throw new RangeError(`speed-up: evaluation steps must increase, found ${c[i - 1].step} then ${c[i].step}`);
    }
  }
  const target = baseline[baseline.length - 1].value;
  const baselineSteps = stepsToReach(baseline, target, lowerIsBetter);
  if (baselineSteps === null) throw new RangeError(`speed-up: the baseline's final score ${target} is not finite`);
  const methodSteps = stepsToReach(method, target, lowerIsBetter);
  return { target, baselineSteps, methodSteps, factor: methodSteps === null || methodSteps <= 0 ? null : baselineSteps / methodSteps };
}

export interface Flatness {
  /** relative change of the curve over its last `fraction` of steps: |v(end) - v(start)| / |v(start)| */
  change: number;
  /** the step the window starts at (the evaluation nearest to last step x (1 - fraction)) */
  from: number;
  to: number;
  flat: boolean;
}

/**
 * The declared plateau criterion: a speed-up factor (steps to reach the
 * baseline's score) only means something where the baseline's curve has
 * flattened; on a steep curve any method reads about 1. The curve is flat when
 * its value changed by less than `tolerance` (relative) over the last
 * `fraction` of the run. null with fewer than two evaluations.
 */
export function flatness(curve: readonly CurvePoint[], fraction: number, tolerance: number): Flatness | null {
  const pts = curve.filter((p) => Number.isFinite(p.value));
  if (pts.length < 2) return null;
  const last = pts[pts.length - 1];
  const want = last.step * (1 - fraction);
  let start = pts[0];
  for (const p of pts.slice(0, -1)) if (Math.abs(p.step - want) < Math.abs(start.step - want)) start = p;
  const change = start.value === 0 ? (last.value === 0 ? 0 : Infinity) : Math.abs(last.value - start.value) / Math.abs(start.value);
  return { change, from: start.step, to: last.step, flat: change < tolerance };
}
