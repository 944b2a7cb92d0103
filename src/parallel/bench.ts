// `speed-train bench` under mpirun / srun: the all-reduce of each
// model's flat gradient buffer (GB/s of its size) and the data-parallel train
// step at each global batch. Every rank runs the same calls; rank 0 prints.
import { ConfigError } from '../errors.js';
import { DiTModel, presetConfig, type BenchRow, type Device } from '../native.js';
import { makeCoefs, toNativeTables } from '../diffusion/coefs.js';
import { betasFor } from '../diffusion/schedule.js';
import { Rng } from '../rng.js';
import { parallelAddon } from './native.js';
import { shardOf } from './shard.js';
import { collectiveKind } from './train.js';
import type { World } from './world.js';

export interface DistBenchOptions {
  models: string[];
  batches: number[];
  device: Device;
  threads?: number;
  iters?: number;
}

/** "DiT-S/2@32x4" -> preset, input size, channels (the bench's --models spelling). */
export function parseModelSpec(spec: string): { name: string; size: number; channels: number } {
  const m = /^([^@]+)@(\d+)x(\d+)$/.exec(spec);
  if (!m) throw new ConfigError('--models', `"${spec}": expected preset@size x channels, e.g. DiT-S/2@32x4`);
  return { name: m[1], size: Number(m[2]), channels: Number(m[3]) };
}

const row = (r: Partial<BenchRow> & Pick<BenchRow, 'model' | 'device' | 'batch' | 'what' | 'ms'>): BenchRow => ({
  imagesPerSec: 0, gflops: 0, gbps: 0, ratioToGemm: 0, activationMB: 0, calls: 0, share: 0, ...r,
});

export async function parallelBenchRows(w: World, o: DistBenchOptions): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const iters = o.iters ?? 3;
  const kind = collectiveKind(o.device);
  const tables = toNativeTables(makeCoefs(betasFor('linear', 1000)));
  for (const spec of o.models) {
    const { name, size, channels } = parseModelSpec(spec);
    const model = DiTModel.create({
      config: presetConfig(name, { inputSize: size, inChannels: channels, numClasses: 1000, classDropoutProb: 0.1, learnSigma: true }),
      device: o.device, threads: o.threads, seed: 0, ...(o.device === 'cuda' ? { cudaDevice: w.localRank } : {}),
    });
    try {
      model.setTables(tables);
      const n = model.numTrainable();
      if (kind === 'mpi') {
        const a = parallelAddon().allreduceBench('mpi', n, iters);
        rows.push(row({ model: name, device: o.device, batch: 0, what: `allreduce grad ${(n * 4 / 2 ** 20).toFixed(0)} MiB (${w.size} ranks, mpi)`, ms: a.ms, gbps: a.gbps }));
      }
      model.setCollective(kind, w.localRank);
      model.broadcastState(0);
      const per = channels * size * size;
      for (const b of o.batches) {
        const sh = shardOf(w, b);
        const rng = new Rng(1);
        const x0 = Float32Array.from({ length: sh.count * per }, () => rng.normal());
        const t = Int32Array.from({ length: sh.count }, () => rng.int(1000));
        const y = Int32Array.from({ length: sh.count }, () => rng.int(1000));
        const weight = new Float32Array(sh.count).fill(1);
        const hp = { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1, emaDecay: 0.9999, vbScale: 1,
          shardOffset: sh.offset, globalBatch: b };
        await model.trainStep({ x0, t, y, weight }, hp); // warm-up (allocates the arena)
        const t0 = performance.now();
        for (let i = 0; i < iters; i++) await model.trainStep({ x0, t, y, weight }, hp);
        const ms = (performance.now() - t0) / iters;
        rows.push(row({ model: name, device: o.device, batch: b, what: `train_step data-parallel x${w.size} (${kind})`, ms, imagesPerSec: (b * 1000) / ms }));
      }
    } finally {
      model.dispose();
    }
  }
  return rows;
}
