// Times our VAE encode/decode on the CPU the way tools/torch_vae.py --bench times
// PyTorch's: one warm-up, then `reps` runs; best wall time (the least disturbed run on
// a shared machine) and the process CPU seconds per image (all threads), so that the
// two sides compare fairly even when other jobs take the cores.
//   node --import tsx tools/vae_bench_cpu.mts WEIGHTS [--size 256] [--batch 1] [--threads 2] [--reps 1]
//     [--builtin-gemm] (the built-in GEMM even where BLAS is linked and preferred)
import { parseArgs } from 'node:util';

import { cpuForceBuiltinGemm, nativeInfo } from '../src/native.js';
import { VAE } from '../src/vae/index.js';

const { values: a, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    size: { type: 'string', default: '256' },
    batch: { type: 'string', default: '1' },
    threads: { type: 'string', default: '2' },
    reps: { type: 'string', default: '1' },
    'builtin-gemm': { type: 'boolean', default: false },
  },
});
const file = positionals[0];
if (!file) throw new Error('usage: vae_bench_cpu.mts WEIGHTS [--size S] [--batch N] [--threads T] [--reps R]');
const S = Number(a.size), n = Number(a.batch), threads = Number(a.threads), reps = Number(a.reps);
if (a['builtin-gemm']) cpuForceBuiltinGemm(true);
const vae = await VAE.load(file, { threads });
const f = vae.downFactor;
const x = Float32Array.from({ length: n * 3 * S * S }, (_, i) => Math.sin(i * 0.37));
const z = Float32Array.from({ length: n * vae.config.latentChannels * (S / f) * (S / f) }, (_, i) => Math.cos(i * 0.91));
const fl = vae.flops(S, S);
const out: Record<string, unknown> = { kind: 'ours_vae_bench', size: S, batch: n, threads, gemm: nativeInfo().gemm };
for (const [what, run, flops] of [
  ['encode', () => vae.encode(x, n, S, S, { chunk: n }), fl.encode],
  ['decode', () => vae.decode(z, n, S / f, S / f, { chunk: n }), fl.decode],
] as const) {
  await run();
  let wall = Infinity, cpu = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now(), c0 = process.cpuUsage();
    await run();
    const c = process.cpuUsage(c0);
    wall = Math.min(wall, (performance.now() - t0) / 1e3);
    cpu = Math.min(cpu, (c.user + c.system) / 1e6);
  }
  out[`${what}_images_per_s`] = n / wall;
  out[`${what}_cpu_s_per_image`] = cpu / n;
  out[`${what}_gflop_per_cpu_s`] = (flops * n) / cpu / 1e9;
}
console.log(JSON.stringify(out));
vae.dispose();
