// report.md of the experiment from hand-made runs: every metric of every
// sampler has its tables (the secondary sampler's too), the declaration comes
// first, the primary endpoint has its paired test with Holm's correction, the
// real-vs-real floor stands beside the values, the speed-up is withheld while
// the baseline's curve is still falling; and experiment-report re-renders the
// same report from report.json.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { loadConfig } from '../src/config/index.js';
import { rerenderReport, writeReport } from '../src/experiment/report.js';
import type { MethodResult } from '../src/experiment/run.js';
import { loadExperimentSpec, METRIC_KEYS } from '../src/experiment/spec.js';

const DIR = path.resolve('configs/experiments/fashion');

function runs(): MethodResult[] {
  const out: MethodResult[] = [];
  for (const seed of [0, 1, 2]) {
    for (const [method, f] of [['uniform', 1], ['speed', 0.8 + 0.05 * seed], ['p2', 1.1]] as const) {
      const evals = [1, 2, 3].map((i) => {
        const metrics: Record<string, number | null> = {};
        for (const s of ['ddpm100', 'ddim25']) {
          METRIC_KEYS.forEach((k, j) => { metrics[`${s}/${k}`] = (10 + j + seed) * f / i; });
        }
        return { step: 100 * i, metrics, n_samples: i === 3 ? 300 : 100, samples: { ddpm100: i === 3 ? 300 : 100, ddim25: i === 3 ? 300 : 100 }, seconds: { ddpm100: 1, ddim25: 1 } };
      });
      out.push({ method, seed, sampling: 'x', weighting: 'y', experiment_dir: '/nonexistent', train_seconds: 1, evals });
    }
  }
  return out;
}

test('report.md: declaration first, every metric of every sampler, primary endpoint with Holm, floors, speed-up withheld on a falling curve', async () => {
  const out = mkdtempSync(path.join(tmpdir(), 'st-report-'));
  const { spec: s0 } = loadExperimentSpec(DIR, false);
  const spec = { ...s0, methods: ['uniform', 'speed', 'p2'], seeds: [0, 1, 2] };
  const base = loadConfig(path.join(DIR, 'uniform.yaml'), { phase: 'train' }).config;
  const floors = [
    { n: 100, metrics: { featnet_fid: 0.5, pixel_kid: 0.001, class_accuracy: 0.93 }, source: 'test' },
    { n: 300, metrics: { featnet_fid: 0.25, pixel_kid: 0.0005, class_accuracy: 0.92 }, source: 'test' },
  ];
  const featnet = { file: 'featnet.safetensors', accuracy: 0.91, heldOutSize: 10000, space: 'featnet-vit(x, acc 0.910)', description: 'd' };
  const r = await writeReport(out, { spec, methods: runs(), quick: false, featnet, pixelSpace: 'pixels-8x8', reference: 'ref', base, seconds: 60, floors });
  const md = readFileSync(r.report, 'utf8');
  // the declaration precedes the result
  assert.ok(md.indexOf('## Declared before the run') < md.indexOf('## Result: the primary endpoint'));
  assert.ok(md.includes(`> ${spec.declaration}`));
  assert.match(md, /must be >= 0\.9 \(it is 0\.9100 on 10000 images\)/);
  // every metric of every sampler, the secondary sampler's pixel KID included
  for (const sm of ['ddpm100', 'ddim25']) {
    for (const t of ['FID (feature network)', 'KID (feature network)', 'precision (feature network)', 'recall (feature network)', 'FID (pixels)', 'KID (pixels)', 'precision (pixels)', 'recall (pixels)', 'class accuracy of the samples (feature network)']) {
      assert.ok(md.includes(`## ${sm}: ${t}\n`), `${sm}: ${t}`);
    }
  }
  const kid = md.slice(md.indexOf('## ddim25: KID (pixels)'));
  // pixel_kid is METRIC_KEYS[5]: seed s uniform (15 + s) / i; floor of 300 images 0.0005 at step 300
  assert.match(kid, /^\| 300 \| 5\.333 \[[^\]]+\] \| [^|]+ \| [^|]+ \| 5\.00e-4 \|$/m);
  assert.match(kid, /^\| 100 \| [^|]+ \| [^|]+ \| [^|]+ \| 0\.001 \|$/m);
  // the primary endpoint: per-seed ratios 0.8, 0.85, 0.9 for speed; 1.1 in every seed for p2; Holm over the two
  assert.match(md, /^\| speed \| [^|]+ \| 0\.849 \[0\.7\d\d, 0\.9\d\d\] \| 0\.800, 0\.850, 0\.900 \| 0\.0406 \| 0\.0406 \|$/m);
  assert.match(md, /^\| p2 \| [^|]+ \| 1\.100 \[1\.100, 1\.100\] \| 1\.100, 1\.100, 1\.100 \| [\d.e-]+ \| [\d.e-]+ \|$/m);
  const json = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8')) as { primary_endpoint: { method: string; p: number; p_holm: number }[]; floors: unknown[] };
  const sp = json.primary_endpoint.find((e) => e.method === 'speed')!;
  // two comparisons: speed has the larger p, so Holm multiplies it by 1, but never below p2's adjusted value
  assert.ok(sp.p_holm >= sp.p);
  assert.equal(json.floors.length, 2);
  // uniform's curve falls by a third over the last third: no factor is read
  assert.match(md, /\*\*Not read\*\*: uniform's mean curve changed by 33\.33% between steps 200 and 300/);
  // re-rendering from report.json gives the same markdown (but the total time line)
  writeFileSync(r.report, '');
  const again = await rerenderReport(out);
  assert.equal(readFileSync(again.report, 'utf8'), md);
});

test('experiment-report refuses a folder without a usable report.json', async () => {
  const out = mkdtempSync(path.join(tmpdir(), 'st-report-bad-'));
  await assert.rejects(rerenderReport(out), /report\.json: missing/);
  writeFileSync(path.join(out, 'report.json'), '{"spec": {}}');
  await assert.rejects(rerenderReport(out), /has no 'runs'/);
});
