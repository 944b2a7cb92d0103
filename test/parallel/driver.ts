// Run by test/parallel.test.ts as one process or under `mpirun -np 2`: a tiny DiT,
// global batch 8, 5 steps through DiTModel.trainStep with the data-parallel
// hook; rank 0 writes per-step losses, grad norms, the gradient and the final
// weights as JSON. Usage: driver.ts split|same|throw|nan|eval OUT.json [CONFIG]
//   split: rank r trains on samples [4r, 4r + 4) of the global batch
//   same:  every rank trains on samples [0, 4) (shard offset 0): the average
//          of identical gradients is exact, so 2 ranks == 1 process bitwise
//   throw: rank 1 throws at step 3; the error path must end every rank
//   nan:   as split, but global sample 6 (rank 1's slice) of step 2 holds a
//          NaN: the step must be skipped on every rank, as on one process
//   eval:  as same, then one FID-during-training evaluation with the evaluate.*
//          and inference.* keys of CONFIG: its samples are split over the ranks and
//          must score exactly as on one process; the line goes into "eval"
import { writeFileSync } from 'node:fs';

import { makeCoefs, toNativeTables } from '../../src/diffusion/coefs.js';
import { betasFor } from '../../src/diffusion/schedule.js';
import { abortWorld, parallelAddon, initWorld, shardOf } from '../../src/parallel/index.js';
import { DiTModel, presetConfig } from '../../src/native.js';
import { Rng } from '../../src/rng.js';
import { loadConfig } from '../../src/config/index.js';
import { TrainingEval, type EvalLine } from '../../src/train/evaluation.js';

const [mode, out, configFile] = process.argv.slice(2);
const w = initWorld();
const G = 8;
const cfg = presetConfig('DiT-Ti/4', { inputSize: 8, inChannels: 3, numClasses: 4, classDropoutProb: 0.1, learnSigma: true });
cfg.depth = 2;
cfg.hiddenSize = 32;
cfg.numHeads = 2;
const model = DiTModel.create({ config: cfg, device: 'cpu', threads: 1, seed: 5 });
const coefs = makeCoefs(betasFor('linear', 100));
model.setTables(toNativeTables(coefs));
if (w.distributed) {
  model.setCollective('mpi');
  model.broadcastState(0);
}
const per = 3 * 8 * 8;
const rng = new Rng(11);
const steps: { loss: number[]; gradNorm: number; skipped: boolean; grad: number[] }[] = [];
const hp = { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1, emaDecay: 0.9, vbScale: 0.1 };
const trainable = model.params().filter((p) => p.trainable);
const flat = (slot: 'model' | 'grad' | 'ema') => trainable.flatMap((p) => Array.from(model.readParam(p.name, slot)));

async function main(): Promise<void> {
  for (let s = 0; s < 5; s++) {
    // the global batch, identical on every rank
    const x0 = Float32Array.from({ length: G * per }, () => rng.uniform() * 2 - 1);
    const t = Int32Array.from({ length: G }, () => rng.int(100));
    const y = Int32Array.from({ length: G }, () => rng.int(5));
    const weight = Float32Array.from({ length: G }, () => 0.5 + rng.uniform());
    if (mode === 'throw' && w.rank === 1 && s === 3) throw new Error('injected failure at step 3');
    if (mode === 'nan' && s === 2) x0[6 * per + 5] = NaN;
    const sh = mode === 'same' || mode === 'eval' ? { offset: 0, count: G / 2, globalBatch: G } : shardOf(w, G);
    const rows = <A extends Float32Array | Int32Array>(a: A, k: number) => a.subarray(sh.offset * k, (sh.offset + sh.count) * k) as A;
    const r = await model.trainStep(
      { x0: rows(x0, per), t: rows(t, 1), y: rows(y, 1), weight: rows(weight, 1) },
      { ...hp, shardOffset: sh.offset, globalBatch: sh.globalBatch },
    );
    steps.push({ loss: Array.from(r.loss), gradNorm: r.gradNorm, skipped: r.skipped, grad: flat('grad') });
  }
  if (w.distributed) {
    // every rank must hold the same weights: a hash of their bits, min == max
    const bits = new Uint32Array(Float32Array.from(flat('model')).buffer);
    let h = 0;
    for (let i = 0; i < bits.length; i++) h = (Math.imul(h, 31) + bits[i]) >>> 0;
    const [hi, negLo] = parallelAddon().allreduceMax([h, -h]);
    if (hi !== -negLo) throw new Error(`ranks hold different weights (hashes ${-negLo} .. ${hi})`);
  }
  let evalLine: EvalLine | null = null;
  if (mode === 'eval') {
    const ev = await TrainingEval.open(loadConfig(configFile, { phase: 'train' }).config, w, () => {});
    evalLine = await ev!.run(model, coefs);
  }
  if (w.isRoot) {
    writeFileSync(out, JSON.stringify({ size: w.size, steps, weights: flat('model'), ema: flat('ema'), noise: model.getNoiseState(), step: model.getStep(), eval: evalLine }));
  }
  model.dispose();
}

main().catch((e: unknown) => {
  const msg = e instanceof Error ? e.message : String(e);
  if (w.distributed) abortWorld(1, msg);
  process.stderr.write(`driver: ${msg}\n`);
  process.exitCode = 1;
});
