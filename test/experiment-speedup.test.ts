// The speed-up factor on hand-made curves: interpolation, first crossing,
// "not reached", higher-is-better metrics and malformed input.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { speedupFactor, stepsToReach } from '../src/experiment/speedup.js';

const curve = (pairs: [number, number][]) => pairs.map(([step, value]) => ({ step, value }));

test('steps to reach a target: interpolated between the bracketing evaluations', () => {
  const c = curve([[100, 50], [200, 30], [300, 20], [400, 10]]);
  assert.equal(stepsToReach(c, 25, true), 250);
  assert.equal(stepsToReach(c, 30, true), 200);
  assert.equal(stepsToReach(c, 10, true), 400);
  assert.equal(stepsToReach(c, 60, true), 100); // already there at the first evaluation
  assert.equal(stepsToReach(c, 5, true), null);
  // first crossing, even if the curve goes back up afterwards
  assert.equal(stepsToReach(curve([[1, 10], [2, 4], [3, 8], [4, 5]]), 5, true), 1 + 5 / 6);
  // higher is better (precision, recall, accuracy)
  assert.ok(Math.abs(stepsToReach(curve([[10, 0.2], [20, 0.6], [30, 0.8]]), 0.7, false)! - 25) < 1e-9);
});

test('speed-up factor: baseline steps / method steps, or not reached', () => {
  const base = curve([[250, 40], [500, 30], [750, 25], [1000, 20]]);
  const fast = curve([[250, 30], [500, 20], [750, 15], [1000, 12]]);
  const s = speedupFactor(base, fast, true);
  assert.equal(s.target, 20);
  assert.equal(s.baselineSteps, 1000);
  assert.equal(s.methodSteps, 500);
  assert.equal(s.factor, 2);
  // crossing between evaluations: 250 + (30 - 20)/(30 - 10) * 250 = 375
  assert.ok(Math.abs(speedupFactor(base, curve([[250, 30], [500, 10]]), true).factor! - 1000 / 375) < 1e-12);
  // the baseline against itself is 1
  assert.equal(speedupFactor(base, base, true).factor, 1);
  // never reaches the baseline's final score
  const slow = curve([[250, 45], [500, 35], [750, 28], [1000, 21]]);
  const ns = speedupFactor(base, slow, true);
  assert.equal(ns.methodSteps, null);
  assert.equal(ns.factor, null);
  // a noisy baseline that touched its final value early: it needed only those steps
  const noisy = curve([[250, 40], [500, 19], [750, 22], [1000, 20]]);
  assert.equal(speedupFactor(noisy, noisy, true).baselineSteps, 250 + (20 / 21) * 250);
  // higher is better
  assert.ok(Math.abs(speedupFactor(curve([[1, 0.1], [2, 0.5]]), curve([[1, 0.3], [2, 0.7]]), false).factor! - 2 / 1.5) < 1e-12);
  assert.throws(() => speedupFactor([], base, true), /no evaluations/);
  assert.throws(() => speedupFactor(curve([[2, 1], [1, 0]]), base, true), /must increase/);
});
