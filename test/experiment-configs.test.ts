// Every experiment folder under configs/experiments: its experiment.json and
// method configs load, the methods differ only in diffusion: keys, the method
// files are the same in every folder, and the scenes (unconditional, generated
// held-out reference) and digits (finite data, reference = the training set)
// experiments run end to end with --quick.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { useAddon } from './helpers-e2e.js';

useAddon();
const { runExperiment, checkComparable } = await import('../src/experiment/run.js');
const { loadExperimentSpec } = await import('../src/experiment/spec.js');
const { loadConfig } = await import('../src/config/index.js');

const ROOT = path.resolve('configs/experiments');
const FOLDERS = ['speedup', 'scenes', 'scenes/gpu', 'digits', 'digits/short'];

test('every experiment folder loads; methods differ only in diffusion keys; method files agree', () => {
  for (const f of FOLDERS) {
    const dir = path.join(ROOT, f);
    for (const quick of [false, true]) {
      const { spec } = loadExperimentSpec(dir, quick);
      assert.ok(spec.seeds.length >= 3, `${f}: ${spec.seeds.length} seeds`);
      const configs = spec.methods.map((method) => ({ method, config: loadConfig(path.join(dir, `${method}.yaml`), { overrides: quick ? spec.overrides : [], phase: 'train' }).config }));
      checkComparable(configs);
      if (!quick && f !== 'digits/short') {
        // >= 1000 samples per evaluation, DDPM-250 among the samplers
        const c = configs[0].config;
        assert.ok(c.sample.num_per_class * Math.max(1, c.model.num_classes) >= 1000, `${f}: samples per evaluation`);
        assert.ok(spec.samplers.some((s) => s.sampler === 'ddpm' && s.steps === '250'), `${f}: DDPM-250`);
        assert.ok(spec.samplers.some((s) => s.sampler === 'ddim'), `${f}: DDIM`);
      }
    }
    for (const m of readdirSync(dir).filter((x) => x.endsWith('.yaml') && x !== 'base.yaml')) {
      assert.equal(readFileSync(path.join(dir, m), 'utf8'), readFileSync(path.join(ROOT, 'speedup', m), 'utf8'), `${f}/${m} differs from speedup/${m}`);
    }
  }
  assert.deepEqual(loadExperimentSpec(path.join(ROOT, 'scenes/gpu'), false).spec.methods, ['uniform', 'speed', 'speed_sampling', 'speed_weighting', 'p2', 'min_snr', 'lognorm']);
});

for (const f of ['scenes', 'digits']) {
  test(`the --quick ${f} experiment runs end to end`, async () => {
    const out = mkdtempSync(path.join(tmpdir(), `st-exp-${f}-`));
    const lines: string[] = [];
    const r = await runExperiment({ config: path.join(ROOT, f, 'base.yaml'), quick: true, out, overrides: ['threads=1'], log: (l) => lines.push(l) });
    const { spec } = loadExperimentSpec(path.join(ROOT, f), true);
    assert.equal(r.methods.length, spec.methods.length * 3);
    for (const m of r.methods) {
      assert.deepEqual(m.evals.map((e) => e.step), [20, 40]);
      // ddpm10 has every: 2, so only at the second (last) checkpoint; ddim5 at both
      assert.deepEqual(Object.keys(m.evals[0].metrics).filter((k) => k.endsWith('_fid')).sort(), ['ddim5/featnet_fid', 'ddim5/pixel_fid']);
      assert.deepEqual(Object.keys(m.evals[1].metrics).filter((k) => k.endsWith('_fid')).sort(), ['ddim5/featnet_fid', 'ddim5/pixel_fid', 'ddpm10/featnet_fid', 'ddpm10/pixel_fid']);
      assert.equal(m.evals[1].n_samples, 24);
      assert.ok(Number.isFinite(m.evals[1].metrics['ddpm10/featnet_fid']));
    }
    const md = readFileSync(r.report, 'utf8');
    assert.match(md, /unconditional/);
    assert.match(md, f === 'scenes' ? /reference: 48 held-out scenes images \(data seed 0/ : /reference: 100 images drawn \(seeded\) from the training data \(handwritten digits/);
    assert.match(md, /## ddpm10: FID \(feature network\)/);
    const json = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8')) as { curves: Record<string, { methods: Record<string, { speedup: { step: number }[] }> }> };
    // DDPM evaluated only at the last checkpoint: its speed-up curve has one point
    assert.deepEqual(json.curves['ddpm10/featnet_fid'].methods.speed.speedup.map((a) => a.step), [40]);
    assert.deepEqual(json.curves['ddim5/featnet_fid'].methods.speed.speedup.map((a) => a.step), [20, 40]);
    assert.ok(existsSync(path.join(out, 'speedup_curve.png')));
  });
}
