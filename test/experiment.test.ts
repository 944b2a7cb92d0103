// The --quick speed-up experiment end to end (every method trains, every
// checkpoint is evaluated, report.md has the tables and speed-up lines, the
// PNGs decode), a rerun reuses finished methods, and configs that differ in
// more than the method's own keys are refused.
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { PNG } from 'pngjs';

import { useAddon } from './helpers-e2e.js';

useAddon();
const { runExperiment } = await import('../src/experiment/run.js');

const CONFIG = path.resolve('configs/experiments/speedup/base.yaml');

test('the --quick experiment runs end to end and writes the report', async () => {
  const out = mkdtempSync(path.join(tmpdir(), 'st-exp-'));
  const lines: string[] = [];
  const t0 = Date.now();
  const r = await runExperiment({ config: CONFIG, quick: true, out, overrides: ['threads=1'], log: (l) => lines.push(l) });
  assert.ok(Date.now() - t0 < 180_000, `quick experiment took ${Date.now() - t0} ms`);
  assert.deepEqual(r.methods.map((m) => m.method), ['uniform', 'speed', 'p2', 'min_snr', 'lognorm']);
  for (const m of r.methods) {
    assert.deepEqual(m.evals.map((e) => e.step), [20, 40], m.method);
    for (const e of m.evals) {
      assert.equal(e.n_samples, 4 * 6);
      for (const k of ['featnet_fid', 'pixel_fid', 'featnet_kid', 'featnet_precision', 'pixel_recall'] as const) assert.ok(Number.isFinite(e.metrics[k]), `${m.method} ${k}`);
    }
    assert.ok(existsSync(path.join(out, m.method, 'evals.json')));
    assert.ok(existsSync(path.join(out, m.method, 'metrics.jsonl')));
    // intermediate checkpoints are removed after evaluation, the last one is kept
    assert.ok(!existsSync(path.join(out, m.method, 'checkpoints', '0000020')));
    assert.ok(existsSync(path.join(out, m.method, 'checkpoints', '0000040')));
  }
  assert.match(r.featnet.space, /^featnet-vit\(featnet\.safetensors, acc \d\.\d{3}\)$/);
  const md = readFileSync(r.report, 'utf8');
  assert.match(md, /## Speed-up on FID \(feature network\)/);
  for (const m of ['uniform', 'speed', 'p2', 'min_snr', 'lognorm']) assert.match(md, new RegExp(`^- ${m}: (\\*\\*\\d+\\.\\d\\dx\\*\\*|not reached)`, 'm'));
  assert.match(md, /^- uniform: \*\*1\.00x\*\*/m);
  assert.match(md, /^\| step \| uniform \| speed \| p2 \| min_snr \| lognorm \|$/m);
  assert.match(md, /^\| 20 \| \d/m);
  assert.match(md, /^\| 40 \| \d/m);
  assert.match(md, /featnet-vit\(featnet\.safetensors, acc/);
  assert.equal(r.plots.length, 2);
  for (const p of r.plots) {
    const png = PNG.sync.read(readFileSync(p));
    assert.ok(png.width > 300 && png.height > 200, `${p}: ${png.width}x${png.height}`);
  }
  const json = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8')) as { speedups: Record<string, { method: string }[]> };
  assert.equal(json.speedups.featnet_fid.length, 5);

  // a second run reuses the feature network and the finished methods
  const again: string[] = [];
  await runExperiment({ config: CONFIG, quick: true, out, overrides: ['threads=1'], log: (l) => again.push(l) });
  assert.ok(again.some((l) => /featnet: reusing/.test(l)), again.join('\n'));
  assert.equal(again.filter((l) => /already evaluated/.test(l)).length, 5);
});

test('methods must share model, data, seed and budget', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'st-exp-cfg-'));
  const folder = path.join(dir, 'configs', 'x');
  cpSync(path.dirname(CONFIG), folder, { recursive: true });
  cpSync(path.resolve('configs/base.yaml'), path.join(dir, 'configs', 'base.yaml'));
  writeFileSync(path.join(folder, 'p2.yaml'), 'diffusion: {sampling: uniform, weighting: p2}\nseed: 7\n');
  await assert.rejects(runExperiment({ config: path.join(folder, 'base.yaml'), quick: true, out: path.join(dir, 'out'), log: () => {} }), /seed: differs between methods 'uniform' \(0\) and 'p2' \(7\)/);
  writeFileSync(path.join(folder, 'experiment.json'), JSON.stringify({ methods: ['uniform', 'nope'] }));
  await assert.rejects(runExperiment({ config: path.join(folder, 'base.yaml'), quick: true, out: path.join(dir, 'out'), log: () => {} }), /no config nope\.yaml/);
  writeFileSync(path.join(folder, 'experiment.json'), JSON.stringify({ methods: ['uniform'], baseline: 'speed' }));
  await assert.rejects(runExperiment({ config: path.join(folder, 'base.yaml'), quick: true, out: path.join(dir, 'out'), log: () => {} }), /baseline: 'speed' is not among the methods/);
});
