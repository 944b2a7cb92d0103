// Every experiment folder under configs/experiments: its experiment.json and
// method configs load, the methods differ only in diffusion: keys, the method
// files are the same in every folder, and the scenes (unconditional, generated
// held-out reference) and digits (finite data, reference = the training set)
// experiments run end to end with --quick.
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { useAddon } from './helpers-e2e.js';

useAddon();
const { runExperiment, checkComparable, planRuns } = await import('../src/experiment/run.js');
const { loadExperimentSpec } = await import('../src/experiment/spec.js');
const { loadConfig } = await import('../src/config/index.js');
const { ConfigError } = await import('../src/errors.js');

const ROOT = path.resolve('configs/experiments');
const FOLDERS = ['speedup', 'scenes', 'scenes/gpu', 'digits', 'digits/short', 'fashion', 'fashion/gpu', 'fashion/reduced'];
const SHORT = ['digits/short', 'fashion/reduced'];

test('every experiment folder loads; methods differ only in diffusion keys; method files agree', () => {
  for (const f of FOLDERS) {
    const dir = path.join(ROOT, f);
    for (const quick of [false, true]) {
      const { spec } = loadExperimentSpec(dir, quick);
      assert.ok(spec.seeds.length >= 3, `${f}: ${spec.seeds.length} seeds`);
      const configs = spec.methods.map((method) => ({ method, config: loadConfig(path.join(dir, `${method}.yaml`), { overrides: quick ? spec.overrides : [], phase: 'train' }).config }));
      checkComparable(configs);
      if (!quick && !SHORT.includes(f)) {
        // >= 1000 samples per evaluation, DDPM-250 among the samplers (the
        // Fashion-MNIST folders: DDPM-100 first, the primary curve, at every checkpoint)
        const c = configs[0].config;
        assert.ok(c.sample.num_per_class * Math.max(1, c.model.num_classes) >= 1000, `${f}: samples per evaluation`);
        if (f.startsWith('fashion')) {
          assert.equal(spec.samplers[0].sampler, 'ddpm');
          assert.ok(Number(spec.samplers[0].steps) >= 100 && spec.samplers[0].every === 1, `${f}: DDPM >= 100 steps at every checkpoint`);
          assert.ok(c.max_training_steps / c.ckpt_every >= 6, `${f}: >= 6 checkpoints`);
          assert.equal(spec.samplers[0].last_num_per_class * c.model.num_classes, 5000, `${f}: 5000 samples at the last checkpoint`);
          assert.ok(spec.seeds.length >= 5 && spec.min_feature_accuracy === 0.9 && spec.declaration.length > 0, `${f}: seeds, gate, declaration`);
        } else assert.ok(spec.samplers.some((s) => s.sampler === 'ddpm' && s.steps === '250'), `${f}: DDPM-250`);
        assert.ok(spec.samplers.some((s) => s.sampler === 'ddim'), `${f}: DDIM`);
      }
    }
    for (const m of readdirSync(dir).filter((x) => x.endsWith('.yaml') && x !== 'base.yaml')) {
      assert.equal(readFileSync(path.join(dir, m), 'utf8'), readFileSync(path.join(ROOT, 'speedup', m), 'utf8'), `${f}/${m} differs from speedup/${m}`);
    }
  }
  for (const g of ['scenes/gpu', 'fashion/gpu']) {
    assert.deepEqual(loadExperimentSpec(path.join(ROOT, g), false).spec.methods, ['uniform', 'speed', 'speed_sampling', 'speed_weighting', 'p2', 'min_snr', 'lognorm']);
  }
});

test('paired seeds: within a seed every method shares the seed (initialisation, data order, noise, evaluation noise) and the data; seeds differ', () => {
  const dir = path.join(ROOT, 'fashion/gpu');
  const { spec } = loadExperimentSpec(dir, false);
  const { dataSeed, bySeed } = planRuns(dir, spec, [], '/tmp/st-plan');
  assert.deepEqual(bySeed.map((s) => s.seed), [0, 1, 2, 3, 4]);
  for (const { seed, configs } of bySeed) {
    assert.equal(configs.length, 7);
    for (const c of configs) {
      assert.equal(c.config.seed, seed);
      assert.equal(c.config.data.data_seed, dataSeed);
      assert.equal(c.config.experiment_dir, path.join('/tmp/st-plan', `seed-${seed}`, c.method));
      // every sampler's config: the same seed (the evaluation noise) and the declared sampler
      c.samplers.forEach((s, k) => {
        assert.equal(s.config.seed, seed);
        assert.equal(s.config.sample.sampler, spec.samplers[k].sampler);
        assert.equal(String(s.config.sample.steps), spec.samplers[k].steps);
      });
    }
    // anything but the method's own diffusion keys differing is refused
    const bad = configs.map((c, i) => (i === 1 ? { method: c.method, config: { ...c.config, seed: seed + 1 } } : { method: c.method, config: c.config }));
    assert.throws(() => checkComparable(bad), /seed: differs between methods 'uniform' \(\d+\) and 'speed'/);
  }
});

test('the experiment refuses a feature network below min_feature_accuracy (the one gate of every featnet space)', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'st-exp-gate-'));
  const folder = path.join(dir, 'configs', 'x');
  cpSync(path.join(ROOT, 'speedup'), folder, { recursive: true });
  cpSync(path.resolve('configs/base.yaml'), path.join(dir, 'configs', 'base.yaml'));
  const spec = JSON.parse(readFileSync(path.join(folder, 'experiment.json'), 'utf8')) as { quick: Record<string, unknown> };
  spec.quick.min_feature_accuracy = 0.999;
  writeFileSync(path.join(folder, 'experiment.json'), JSON.stringify(spec));
  await assert.rejects(runExperiment({ config: path.join(folder, 'base.yaml'), quick: true, out: path.join(dir, 'out'), featnetOnly: true, overrides: ['threads=1'], log: () => {} }),
    (e: unknown) => e instanceof ConfigError && /min_feature_accuracy/.test(e.message) && /0\.999/.test(e.message) && /train it longer or wider in experiment\.json featnet/.test(e.message));
});

test('the --quick fashion experiment: conditional, test-split reference, floors, class accuracy of the samples', { skip: existsSync('/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz') ? false : 'Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)' }, async () => {
  const out = mkdtempSync(path.join(tmpdir(), 'st-exp-fashion-'));
  const r = await runExperiment({ config: path.join(ROOT, 'fashion', 'base.yaml'), quick: true, out, overrides: ['threads=1'], log: () => {} });
  assert.equal(r.methods.length, 2 * 3);
  for (const m of r.methods) {
    assert.deepEqual(m.evals.map((e) => e.step), [20, 40]);
    // 3 per class at the first checkpoint, 5 per class (last_num_per_class) at the last
    assert.deepEqual(m.evals.map((e) => e.samples), [{ ddpm10: 30, ddim5: 30 }, { ddpm10: 50, ddim5: 30 }]);
    const acc = m.evals[1].metrics['ddpm10/class_accuracy'];
    assert.ok(typeof acc === 'number' && acc >= 0 && acc <= 1);
  }
  const json = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8')) as { floors: { n: number; metrics: Record<string, number> }[]; featnet: { heldOutSize: number } };
  // the feature network is scored on the whole test split; floors for both sample counts
  assert.equal(json.featnet.heldOutSize, 10000);
  assert.deepEqual(json.floors.map((f) => f.n), [30, 50]);
  assert.ok(json.floors.every((f) => Number.isFinite(f.metrics.featnet_fid) && f.metrics.class_accuracy >= 0));
  const md = readFileSync(r.report, 'utf8');
  assert.match(md, /reference: 60 Fashion-MNIST test images/);
  assert.match(md, /## ddim5: class accuracy of the samples/);
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
