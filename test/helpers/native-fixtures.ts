// Shared fixtures for the tests of the native addon: a small model config,
// IDDPM tables of the linear schedule (IDDPM's, computed here in float64
// independently of src/diffusion), default hyper-parameters, random data.
import type { DiffusionTables, ModelConfig, OptimizerHyper } from '../../src/native.js';
import { seededUniform } from './naive-dit.js';

/** input 8, patch 2, C 3, D 32, depth 2, heads 4, 5 classes (+ null row). */
export const SMALL: ModelConfig = {
  inputSize: 8,
  patchSize: 2,
  inChannels: 3,
  hiddenSize: 32,
  depth: 2,
  numHeads: 4,
  mlpRatio: 4,
  numClasses: 5,
  classDropoutProb: 0.1,
  learnSigma: true,
};

export const HYPER: OptimizerHyper = {
  lr: 1e-3,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0,
  maxGradNorm: 1,
  emaDecay: 0.99,
  vbScale: 1,
};

export function linearTables(T: number): DiffusionTables {
  const s = 1000 / T;
  const beta = Float64Array.from({ length: T }, (_, i) => s * 1e-4 + ((s * 0.02 - s * 1e-4) * i) / (T - 1));
  const abar = new Float64Array(T);
  let prod = 1;
  for (let i = 0; i < T; i++) abar[i] = prod *= 1 - beta[i];
  const prev = (i: number) => (i === 0 ? 1 : abar[i - 1]);
  const postVar = beta.map((b, i) => (b * (1 - prev(i))) / (1 - abar[i]));
  const postLogVar = postVar.map((v, i) => Math.log(i === 0 ? postVar[1] : v));
  return {
    sqrtAbar: abar.map(Math.sqrt),
    sqrt1mAbar: abar.map((a) => Math.sqrt(1 - a)),
    sqrtRecipAbar: abar.map((a) => Math.sqrt(1 / a)),
    sqrtRecipm1Abar: abar.map((a) => Math.sqrt(1 / a - 1)),
    coef1: beta.map((b, i) => (b * Math.sqrt(prev(i))) / (1 - abar[i])),
    coef2: beta.map((b, i) => ((1 - prev(i)) * Math.sqrt(1 - b)) / (1 - abar[i])),
    logBeta: beta.map(Math.log),
    postLogVar,
  };
}

/** n uniform values in [-a, a) from a fixed seed. */
export function uniformF32(n: number, a: number, seed: number): Float32Array {
  const r = seededUniform(seed);
  return Float32Array.from({ length: n }, () => (2 * r() - 1) * a);
}

/** max |a - b| / max |b|: a norm-wise relative error. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}
