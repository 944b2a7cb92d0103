// Inception-v3 feature extraction on the CPU, ours against Debian's PyTorch on the same
// network, thread count and images, in one run: uint8 S x S RGB images -> resize to
// 299 -> pool3 / logits / spatial. One warm-up, then the best of `reps` runs (the least
// disturbed on a shared machine): images/s (wall) and process CPU seconds per image
// (all threads), the fair figure when other jobs take cores.
//   node --import tsx tools/inception_bench_cpu.mts [--weights FILE] [--sizes 32,256]
//     [--batch 8] [--threads 2] [--reps 2] [--builtin-gemm] [--no-torch]
// Without --weights the seeded random weights of tools/torch_inception.py are used
// (the speed does not depend on the values).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { InceptionV3 } from '../src/eval/inception.js';
import { cpuForceBuiltinGemm, nativeInfo } from '../src/native.js';

const { values: a } = parseArgs({
  options: {
    weights: { type: 'string' },
    sizes: { type: 'string', default: '32,256' },
    batch: { type: 'string', default: '8' },
    threads: { type: 'string', default: '2' },
    reps: { type: 'string', default: '2' },
    python: { type: 'string', default: '/usr/bin/python3' },
    'builtin-gemm': { type: 'boolean', default: false },
    'no-torch': { type: 'boolean', default: false },
  },
});
const n = Number(a.batch), threads = Number(a.threads), reps = Number(a.reps);
const sizes = a.sizes!.split(',').map(Number);
if (a['builtin-gemm']) cpuForceBuiltinGemm(true);

let weights = a.weights;
let scratch: string | null = null;
if (!weights) {
  scratch = mkdtempSync(path.join(tmpdir(), 'inception-bench-'));
  const r = spawnSync(a.python!, ['tools/torch_inception.py', 'weights', '--seed', '1', '--out', scratch], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tools/torch_inception.py weights failed: ${r.stderr}`);
  weights = path.join(scratch, 'inception.pt');
}
const net = await InceptionV3.load(weights, { threads });
const gflop = net.flops() / 1e9;
try {
  for (const S of sizes) {
    const data = Uint8Array.from({ length: n * S * S * 3 }, (_, i) => (i * 2654435761) >>> 24);
    const batch = { data, N: n, H: S, W: S, C: 3 };
    await net.run(batch, n);
    let wall = Infinity, cpu = Infinity;
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now(), c0 = process.cpuUsage();
      await net.run(batch, n);
      const c = process.cpuUsage(c0);
      wall = Math.min(wall, (performance.now() - t0) / 1e3);
      cpu = Math.min(cpu, (c.user + c.system) / 1e6);
    }
    const ours = { impl: 'speed-train', gemm: nativeInfo().gemm, threads, size: S, batch: n, images_per_s: n / wall, cpu_s_per_image: cpu / n, gflop_per_cpu_s: (gflop * n) / cpu };
    console.log(JSON.stringify(ours));
    if (a['no-torch']) continue;
    const r = spawnSync(a.python!, ['tools/torch_inception.py', 'bench', '--threads', String(threads), '--size', String(S), '--batch', String(n), '--iters', String(reps)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`tools/torch_inception.py bench failed: ${r.stderr}`);
    const torch = JSON.parse(r.stdout.trim().split('\n').pop()!) as { images_per_s: number; cpu_s_per_image: number };
    console.log(JSON.stringify(torch));
    console.log(JSON.stringify({ size: S, ratio_images_per_s: ours.images_per_s / torch.images_per_s, ratio_cpu: torch.cpu_s_per_image / ours.cpu_s_per_image }));
  }
} finally {
  net.dispose();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
}
