// Tidy runs: a fresh run never mixes with an earlier one in the same
// experiment_dir; sampling from a barely-moved EMA warns.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { loadConfig } from '../src/config/index.js';
import { ConfigError } from '../src/errors.js';
import { emaInitialShare, emaWarning } from '../src/generate/ema-check.js';
import { tinyConfigFile, useAddon } from './helpers-e2e.js';

useAddon();
const { train } = await import('../src/train/index.js');
const { runSample } = await import('../src/generate/index.js');
const quiet = { log: () => {}, handleSignals: false, progressStream: { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream };

test('a fresh run into an experiment_dir with checkpoints refuses; overwrite=true clears them; --resume continues', async () => {
  const { file, exp } = tinyConfigFile();
  const cfg = (o: string[]) => loadConfig(file, { overrides: o }).config;
  await train({ config: cfg(['max_training_steps=4', 'ckpt_every=2']), ...quiet });
  assert.deepEqual(readdirSync(path.join(exp, 'checkpoints')).sort(), ['0000002', '0000004']);
  await assert.rejects(train({ config: cfg(['max_training_steps=2']), ...quiet }), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.ok(e.message.includes(`experiment_dir: ${exp} already holds 2 checkpoint(s) of an earlier run (newest: 0000004)`), e.message);
    assert.match(e.message, /--resume latest/);
    assert.match(e.message, /another experiment_dir=\.\.\. or with overwrite=true/);
    return true;
  });
  // the refused run touched nothing
  assert.equal(readFileSync(path.join(exp, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 4);
  const r = await train({ config: cfg(['max_training_steps=6']), resume: 'latest', ...quiet });
  assert.equal(r.step, 6);
  const logs: string[] = [];
  await train({ config: cfg(['max_training_steps=1', 'overwrite=true']), ...quiet, log: (m) => logs.push(m) });
  assert.deepEqual(readdirSync(path.join(exp, 'checkpoints')), ['0000001']);
  assert.equal(readFileSync(path.join(exp, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 1);
  // the earlier run's TensorBoard event files go too (one per training session: 2 here)
  assert.ok(logs.some((l) => new RegExp(`^overwrite: removed 3 checkpoint\\(s\\) and events\\.out\\.tfevents\\.\\S+, events\\.out\\.tfevents\\.\\S+, metrics\\.jsonl of the earlier run in ${exp}$`).test(l)), logs.join('\n'));
  assert.equal(readdirSync(exp).filter((f) => f.startsWith('events.out.tfevents.')).length, 1); // the new run's own
  // the CLI exits 1 with the message
  const { spawnSync } = await import('node:child_process');
  const cli = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', '-c', file, 'max_training_steps=1'], { encoding: 'utf8' });
  assert.equal(cli.status, 1);
  assert.match(cli.stderr, /speed-train: error: experiment_dir: .* already holds 1 checkpoint/);
  assert.ok(existsSync(path.join(exp, 'checkpoints', '0000001')));
});

test('sampling from an EMA still near its initial value warns, with what to do', async () => {
  assert.ok(Math.abs(emaInitialShare(0.995, 400) - 0.1347) < 1e-3); // a 400-step run at decay 0.995: 13% of the EMA is still the initial weights
  const { file, exp } = tinyConfigFile();
  const trained = loadConfig(file, { overrides: ['ema.decay=0.995'] }).config;
  const w = emaWarning(trained, 400, true);
  assert.ok(w);
  assert.match(w, /the EMA \(ema\.decay 0\.995\) after 400 steps still holds 13\.5% of the initial random weights \(919 steps bring that under 1%\)/);
  assert.match(w, /use_ema=false/);
  assert.equal(emaWarning(trained, 2500, true), null); // 0.995^2500: well under the warning's share
  assert.equal(emaWarning(trained, 400, false), null); // sampling the raw weights
  assert.equal(emaWarning({ ...trained, model: { ...trained.model, init_from: '/w.safetensors' } }, 400, true), null);
  // end to end: 3 steps with the tiny config's decay 0.9 (0.9^3 = 73%)
  await train({ config: loadConfig(file, { overrides: ['max_training_steps=3'] }).config, ...quiet });
  const logs: string[] = [];
  const sc = loadConfig(file, { phase: 'sample', overrides: ['sample.num_per_class=1', 'sample.sample_classes=[0]'] }).config;
  await runSample(sc, { log: (m) => logs.push(m) });
  assert.ok(logs.some((l) => /warning: the EMA \(ema\.decay 0\.9\) after 3 steps still holds 72\.9%/.test(l)), logs.join('\n'));
  const logs2: string[] = [];
  await runSample({ ...sc, sample: { ...sc.sample, use_ema: false } }, { log: (m) => logs2.push(m) });
  assert.ok(!logs2.some((l) => /warning: the EMA/.test(l)));
  assert.ok(existsSync(exp));
});
