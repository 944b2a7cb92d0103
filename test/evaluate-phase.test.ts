// -p evaluate: default sample set and reference, eval.json, feature space named,
// a degraded sample set scoring worse, and clear errors.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';

import { loadConfig } from '../src/config/index.js';
import { ConfigError } from '../src/errors.js';
import { newestInferenceSamples, runEvaluatePhase } from '../src/eval/phase.js';
import { referenceImages } from '../src/eval/real.js';
import { writeNpz } from '../src/io/npz.js';

const dir = mkdtempSync(path.join(tmpdir(), 'st-eval-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const configFor = (exp: string, extra: string[] = []) =>
  loadConfig('configs/default.yaml', {
    overrides: [`experiment_dir=${exp}`, 'data.num_samples=200', 'evaluate.num_reference=120', ...extra],
    phase: 'evaluate',
  }).config;

function writeSamples(file: string, imgs: { data: Uint8Array; N: number; H: number; W: number; C: number }): void {
  writeNpz(file, { arr_0: { dtype: 'uint8', shape: [imgs.N, imgs.H, imgs.W, imgs.C], data: imgs.data } });
}

test('evaluate: newest inference samples by default, data-set reference, eval.json names the feature space', async () => {
  const exp = path.join(dir, 'run');
  const c = configFor(exp);
  // "Samples" that are real images of the same distribution (other indices than the reference).
  const real = await referenceImages(configFor(exp, ['data.num_samples=400']), 120);
  for (const step of ['0000100', '0000200']) mkdirSync(path.join(exp, `inference-${step}`), { recursive: true });
  writeSamples(path.join(exp, 'inference-0000100', 'samples.npz'), { ...real, data: new Uint8Array(real.data.length) });
  writeSamples(path.join(exp, 'inference-0000200', 'samples.npz'), real);
  assert.equal(newestInferenceSamples(exp), path.join(exp, 'inference-0000200', 'samples.npz'));

  const lines: string[] = [];
  const good = await runEvaluatePhase(c, (l) => lines.push(l));
  assert.equal(good.feature_space, 'pixels-8x8');
  assert.ok(Number.isFinite(good.fid) && good.fid >= 0);
  const json = JSON.parse(readFileSync(path.join(exp, 'eval.json'), 'utf8'));
  assert.equal(json.feature_space, 'pixels-8x8');
  assert.equal(json.fid, good.fid);
  assert.ok(lines.some((l) => l.includes('pixels-8x8')), 'the printed table names the feature space');

  // The same images darkened: clearly worse on every metric.
  const dark = { ...real, data: real.data.map((v) => v >> 2) };
  const file = path.join(dir, 'dark.npz');
  writeSamples(file, dark);
  const bad = await runEvaluatePhase(configFor(exp, [`evaluate.samples=${file}`, `evaluate.out=${path.join(dir, 'bad.json')}`]), () => {});
  assert.ok(bad.fid > 5 * good.fid + 1e-3, `darkened FID ${bad.fid} vs ${good.fid}`);
  assert.ok((bad.precision ?? 1) < (good.precision ?? 0));
});

test('evaluate: clear errors for a missing sample set or reference', async () => {
  const exp = path.join(dir, 'empty');
  await assert.rejects(runEvaluatePhase(configFor(exp), () => {}), (e: unknown) => e instanceof ConfigError && /evaluate\.samples/.test(e.message) && /-p inference/.test(e.message));
  await assert.rejects(
    runEvaluatePhase(configFor(exp, [`evaluate.samples=${path.join(dir, 'nope.npz')}`]), () => {}),
    (e: unknown) => e instanceof ConfigError && /nope\.npz does not exist/.test(e.message),
  );
  await assert.rejects(
    runEvaluatePhase(configFor(exp, [`evaluate.samples=${path.join(dir, 'dark.npz')}`, `evaluate.reference=${path.join(dir, 'missing')}`]), () => {}),
    (e: unknown) => e instanceof ConfigError && /evaluate\.reference/.test(e.message),
  );
});

test('evaluate: inception-v3 takes its weights from evaluate.inception.path or --inception, and names what is missing', async () => {
  const exp = path.join(dir, 'inc');
  const samples = path.join(dir, 'inc-samples.npz');
  writeSamples(samples, { data: new Uint8Array(4 * 8 * 8 * 3), N: 4, H: 8, W: 8, C: 3 });
  const c = configFor(exp, [`evaluate.samples=${samples}`, 'evaluate.feature_space=inception-v3']);
  assert.equal(c.evaluate.inception.path, null);
  assert.equal(c.evaluate.min_feature_accuracy, 0.5);
  assert.equal(c.evaluate.allow_weak_features, false);
  await assert.rejects(runEvaluatePhase(c, () => {}), (e: unknown) => e instanceof ConfigError && /evaluate\.inception\.path: feature space 'inception-v3' needs the Inception-v3 weights file/.test(e.message));
  const missing = path.join(dir, 'no-such-inception.pth');
  await assert.rejects(runEvaluatePhase(configFor(exp, [`evaluate.samples=${samples}`, 'evaluate.feature_space=inception-v3', `evaluate.inception.path=${missing}`]), () => {}),
    /evaluate\.inception\.path: .*no-such-inception\.pth does not exist/);
  // --inception wins over the key
  await assert.rejects(runEvaluatePhase(c, () => {}, { inception: path.join(dir, 'cli.pth') }), /cli\.pth does not exist/);
  // the imagenet256 configs evaluate in this space
  const inet = loadConfig('configs/imagenet256/speed/dit_xl2.yaml', { phase: 'evaluate' }).config;
  assert.equal(inet.evaluate.feature_space, 'inception-v3');
  assert.equal(loadConfig('configs/imagenet256/speed/dit_xl2.yaml', { phase: 'inference' }).config.inference.guidance_channels, '3');
  assert.throws(() => loadConfig('configs/default.yaml', { overrides: ['evaluate.min_feature_accuracy=1.5'], phase: 'evaluate' }), /evaluate\.min_feature_accuracy/);
});

test('speed-train -p evaluate --inception FILE: the command line names the weights; other phases refuse the flag', async () => {
  const { spawnSync } = await import('node:child_process');
  const cli = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.resolve('src/cli.ts'), ...args], { encoding: 'utf8', env: process.env });
  const samples = path.join(dir, 'cli-samples.npz');
  writeSamples(samples, { data: new Uint8Array(4 * 8 * 8 * 3), N: 4, H: 8, W: 8, C: 3 });
  const missing = path.join(dir, 'cli-inception.pth');
  const r = cli(['-c', 'configs/default.yaml', '-p', 'evaluate', '--inception', missing, `experiment_dir=${path.join(dir, 'cli')}`,
    `evaluate.samples=${samples}`, 'evaluate.feature_space=inception-v3', 'evaluate.inception.path=other.pth']);
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /evaluate\.inception\.path: .*cli-inception\.pth does not exist/);
  const s = cli(['-c', 'configs/default.yaml', '-p', 'sample', '--inception', missing]);
  assert.equal(s.status, 1);
  assert.match(s.stderr, /--inception applies to -p evaluate, not -p sample/);
});
