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
const { runExperiment, planRuns } = await import('../src/experiment/run.js');
const { reusableSamples } = await import('../src/experiment/samples.js');
const { loadExperimentSpec } = await import('../src/experiment/spec.js');

const CONFIG = path.resolve('configs/experiments/speedup/base.yaml');

test('the --quick experiment runs end to end and writes the report', async () => {
  const out = mkdtempSync(path.join(tmpdir(), 'st-exp-'));
  const lines: string[] = [];
  const t0 = Date.now();
  // --generate-only trains and draws every run's samples, and scores nothing
  const g = await runExperiment({ config: CONFIG, quick: true, out, overrides: ['threads=1'], generateOnly: true, log: (l) => lines.push(l) });
  assert.equal(g.featnet, null);
  assert.equal(g.report, '');
  assert.ok(!existsSync(path.join(out, 'featnet.safetensors')));
  assert.ok(!existsSync(path.join(out, 'report.md')));
  const kept = JSON.parse(readFileSync(path.join(out, 'seed-1', 'speed', 'samples.json'), 'utf8')) as { points: { step: number; sets: { sampler: string; file: string; n: number }[] }[] };
  assert.deepEqual(kept.points.map((p) => [p.step, p.sets.map((s) => `${s.sampler}:${s.n}`).join()]), [[20, 'ddpm10:24,ddim5:24'], [40, 'ddpm10:24,ddim5:24']]);
  for (const p of kept.points) for (const s of p.sets) assert.ok(existsSync(path.join(out, 'seed-1', 'speed', s.file)), s.file);
  // then the same command without it scores the kept samples: nothing is trained again
  const r = await runExperiment({ config: CONFIG, quick: true, out, overrides: ['threads=1'], log: (l) => lines.push(l) });
  assert.ok(Date.now() - t0 < 180_000, `quick experiment took ${Date.now() - t0} ms`);
  assert.equal(lines.filter((l) => /samples already drawn/.test(l)).length, 21);
  assert.equal(lines.filter((l) => /: training \d+ steps/.test(l)).length, 21);
  const METHODS = ['uniform', 'speed', 'speed_sampling', 'speed_weighting', 'p2', 'min_snr', 'lognorm'];
  const SEEDS = [0, 1, 2];
  assert.deepEqual(r.methods.map((m) => `${m.seed}/${m.method}`), SEEDS.flatMap((s) => METHODS.map((m) => `${s}/${m}`)));
  for (const m of r.methods) {
    assert.deepEqual(m.evals.map((e) => e.step), [20, 40], m.method);
    for (const e of m.evals) {
      assert.equal(e.n_samples, 4 * 6);
      assert.deepEqual(e.samples, { ddpm10: 24, ddim5: 24 });
      for (const sm of ['ddpm10', 'ddim5']) {
        for (const k of ['featnet_fid', 'pixel_fid', 'featnet_kid', 'featnet_precision', 'pixel_recall']) assert.ok(Number.isFinite(e.metrics[`${sm}/${k}`]), `${m.method} ${sm}/${k}`);
      }
    }
    const dir = path.join(out, `seed-${m.seed}`, m.method);
    assert.equal(m.experiment_dir, dir);
    assert.ok(existsSync(path.join(dir, 'evals.json')));
    assert.ok(existsSync(path.join(dir, 'metrics.jsonl')));
    // intermediate checkpoints are removed after evaluation, the last one is kept
    assert.ok(!existsSync(path.join(dir, 'checkpoints', '0000020')));
    assert.ok(existsSync(path.join(dir, 'checkpoints', '0000040')));
  }
  // the seeds differ (model init, noise, time steps), the data do not
  const u = r.methods.filter((m) => m.method === 'uniform');
  assert.notEqual(u[0].evals[1].metrics['ddim5/pixel_fid'], u[1].evals[1].metrics['ddim5/pixel_fid']);
  assert.match(r.featnet!.space, /^featnet-vit\(featnet\.safetensors, acc \d\.\d{3}\)$/);
  const md = readFileSync(r.report, 'utf8');
  assert.match(md, /## Speed-up on ddpm10: FID \(feature network\), at uniform's last evaluation/);
  // a factor only where uniform's curve has flattened by the declared criterion; otherwise the report says so
  if (/\*\*Not read\*\*: uniform's mean curve changed by \d+\.\d\d% between steps 20 and 40/.test(md)) {
    assert.doesNotMatch(md, /^- speed: \*\*/m);
  } else {
    for (const m of METHODS) assert.match(md, new RegExp(`^- ${m}: (\\*\\*\\d+\\.\\d\\dx\\*\\* \\[\\d+\\.\\d\\d, \\d+\\.\\d\\d\\]|not reached in [123] of 3 seeds)`, 'm'));
    assert.match(md, /^- uniform: \*\*1\.00x\*\* \[1\.00, 1\.00\]/m);
  }
  // the primary endpoint: every method against uniform with its Holm-adjusted p
  for (const m of METHODS.slice(1)) assert.match(md, new RegExp(`^\\| ${m} \\| [^|]+ \\| [^|]+ \\| [^|]+ \\| [^|]+ \\| [^|]+ \\|$`, 'm'));
  assert.match(md, /## ddpm10: KID \(pixels\)/);
  assert.match(md, /^\| step \| uniform \| speed \| speed_sampling \| speed_weighting \| p2 \| min_snr \| lognorm \|$/m);
  assert.match(md, /^\| S \| uniform \| speed /m);
  assert.match(md, /## ddim5: FID \(pixels\)/);
  assert.match(md, /Student-t over the 3 seeds/);
  assert.match(md, /featnet-vit\(featnet\.safetensors, acc/);
  assert.equal(r.plots.length, 4);
  // a grid of samples per method (first seed, primary sampler, last checkpoint), shown in the report
  assert.match(md, /## Samples\n\nSeed 0, ddpm10, step 40/);
  for (const m of METHODS) {
    assert.match(md, new RegExp(`!\\[samples-${m}\\]\\(samples-${m}\\.png\\)`));
    const png = PNG.sync.read(readFileSync(path.join(out, `samples-${m}.png`)));
    assert.ok(png.height > 4 * 8 * 2 && png.width > 6 * 8 * 2, `samples-${m}.png: ${png.width}x${png.height}`);
  }
  for (const p of r.plots) {
    const png = PNG.sync.read(readFileSync(p));
    assert.ok(png.width > 300 && png.height > 200, `${p}: ${png.width}x${png.height}`);
  }
  type Agg = { step: number; per_seed: (number | null)[]; n: number; ci: { mean: number; lo: number | null; hi: number | null } | null };
  const json = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8')) as {
    curves: Record<string, { methods: Record<string, { values: Agg[]; equal_step_ratio: Agg[]; speedup: Agg[]; method_steps: Agg[] }> }>; runs: unknown[];
  };
  assert.equal(json.runs.length, 21);
  const fid = json.curves['ddpm10/featnet_fid'];
  assert.deepEqual(Object.keys(fid.methods), METHODS);
  // per-seed values are those of the runs; the mean is their mean
  const sp = fid.methods.speed;
  const seedVals = r.methods.filter((m) => m.method === 'speed').map((m) => m.evals[0].metrics['ddpm10/featnet_fid']!);
  assert.deepEqual(sp.values[0].per_seed, seedVals);
  assert.ok(Math.abs(sp.values[0].ci!.mean - seedVals.reduce((a, b) => a + b, 0) / 3) < 1e-9);
  assert.ok(sp.values[0].ci!.lo! <= sp.values[0].ci!.mean && sp.values[0].ci!.mean <= sp.values[0].ci!.hi!);
  // equal-step ratios per seed, and the baseline's own ratio and speed-up are 1
  const base = r.methods.filter((m) => m.method === 'uniform').map((m) => m.evals[1].metrics['ddpm10/featnet_fid']!);
  const meth = r.methods.filter((m) => m.method === 'speed').map((m) => m.evals[1].metrics['ddpm10/featnet_fid']!);
  sp.equal_step_ratio[1].per_seed.forEach((v, i) => assert.ok(Math.abs(v! - meth[i] / base[i]) < 1e-9));
  assert.deepEqual(fid.methods.uniform.equal_step_ratio.map((a) => a.per_seed), [[1, 1, 1], [1, 1, 1]]);
  assert.deepEqual(fid.methods.uniform.speedup.map((a) => a.step), [20, 40]);
  for (const a of fid.methods.uniform.speedup) assert.deepEqual(a.per_seed, [1, 1, 1]);
  for (const m of METHODS) assert.equal(fid.methods[m].speedup.length, 2);

  // a second run reuses the feature network and the drawn samples, and scores them the same
  const again: string[] = [];
  const r2 = await runExperiment({ config: CONFIG, quick: true, out, overrides: ['threads=1'], log: (l) => again.push(l) });
  assert.ok(again.some((l) => /featnet: reusing/.test(l)), again.join('\n'));
  assert.equal(again.filter((l) => /samples already drawn/.test(l)).length, 21);
  assert.deepEqual(r2.methods.map((m) => m.evals.map((e) => e.metrics)), r.methods.map((m) => m.evals.map((e) => e.metrics)));
  // samples drawn under other settings are not reused
  const spec = loadExperimentSpec(path.dirname(CONFIG), true).spec;
  const plan = (extra: string[]) => planRuns(path.dirname(CONFIG), spec, [...spec.overrides, 'threads=1', 'sample_at_end=false', ...extra], out).bySeed[1].configs[1];
  assert.notEqual(reusableSamples(plan([])), null);
  assert.equal(reusableSamples(plan(['optimizer.lr=0.002'])), null);
  assert.equal(reusableSamples(plan(['sample.guidance_scale=2'])), null);
});

test('methods must share model, data, seed and budget', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'st-exp-cfg-'));
  const folder = path.join(dir, 'configs', 'x');
  cpSync(path.dirname(CONFIG), folder, { recursive: true });
  cpSync(path.resolve('configs/base.yaml'), path.join(dir, 'configs', 'base.yaml'));
  writeFileSync(path.join(folder, 'p2.yaml'), 'diffusion: {sampling: uniform, weighting: p2}\noptimizer: {weight_decay: 0.5}\n');
  await assert.rejects(runExperiment({ config: path.join(folder, 'base.yaml'), quick: true, out: path.join(dir, 'out'), log: () => {} }), /optimizer\.weight_decay: differs between methods 'uniform' \(0\) and 'p2' \(0\.5\)/);
  writeFileSync(path.join(folder, 'p2.yaml'), 'diffusion: {sampling: uniform, weighting: p2}\n');
  await assert.rejects(runExperiment({ config: path.join(folder, 'base.yaml'), quick: true, out: path.join(dir, 'out'), seeds: [1], log: () => {} }), /seeds: a subset of the seeds only draws samples \(--generate-only\)/);
  await assert.rejects(runExperiment({ config: path.join(folder, 'base.yaml'), quick: true, out: path.join(dir, 'out'), methods: ['nope'], generateOnly: true, log: () => {} }), /methods: nope is not among the declared methods uniform, speed/);
  await assert.rejects(runExperiment({ config: path.join(folder, 'base.yaml'), quick: true, out: path.join(dir, 'out'), seeds: [1, 9], generateOnly: true, log: () => {} }), /seeds: 9 is not among the declared seeds 0, 1, 2/);
  writeFileSync(path.join(folder, 'experiment.json'), JSON.stringify({ methods: ['uniform'], seeds: [1, 1] }));
  await assert.rejects(runExperiment({ config: path.join(folder, 'base.yaml'), quick: true, out: path.join(dir, 'out'), log: () => {} }), /seeds: lists a seed twice/);
  writeFileSync(path.join(folder, 'experiment.json'), JSON.stringify({ methods: ['uniform'], samplers: [{ name: 'a', sampler: 'euler' }] }));
  await assert.rejects(runExperiment({ config: path.join(folder, 'base.yaml'), quick: true, out: path.join(dir, 'out'), log: () => {} }), /samplers\[0\]\.sampler: expected ddpm or ddim, found "euler"/);
  writeFileSync(path.join(folder, 'experiment.json'), JSON.stringify({ methods: ['uniform'], samplers: [{ name: 'a', every: 0 }] }));
  await assert.rejects(runExperiment({ config: path.join(folder, 'base.yaml'), quick: true, out: path.join(dir, 'out'), log: () => {} }), /samplers\[0\]\.every: expected a positive integer/);
  writeFileSync(path.join(folder, 'experiment.json'), JSON.stringify({ methods: ['uniform', 'nope'] }));
  await assert.rejects(runExperiment({ config: path.join(folder, 'base.yaml'), quick: true, out: path.join(dir, 'out'), log: () => {} }), /no config nope\.yaml/);
  writeFileSync(path.join(folder, 'experiment.json'), JSON.stringify({ methods: ['uniform'], baseline: 'speed' }));
  await assert.rejects(runExperiment({ config: path.join(folder, 'base.yaml'), quick: true, out: path.join(dir, 'out'), log: () => {} }), /baseline: 'speed' is not among the methods/);
});
