import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { listCheckpoints, readState } from '../src/checkpoint/index.js';
import { tinyConfigFile, useAddon } from './helpers-e2e.js';

useAddon();
const CLI = path.resolve('src/cli.ts');
const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { encoding: 'utf8', env: process.env });

test('speed-train -c trains, prints the resolved config, and ends with a sample grid', () => {
  const { file, exp } = tinyConfigFile();
  const r = run(['-c', file, 'max_training_steps=3', 'sample_at_end=true', 'sample.num_per_class=1']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /# speed-train train: resolved config/);
  assert.match(r.stdout, /max_training_steps: 3/);
  assert.match(r.stdout, /trained 3\/3 steps/);
  assert.ok(existsSync(path.join(exp, 'samples', 'grid-0000003-ddim5-cfg2.png')));
  assert.ok(existsSync(path.join(exp, 'config.yaml')));
  assert.match(r.stderr + r.stdout, /train 3\/3/); // plain progress lines when not a TTY
});

test('errors are one clean line with a non-zero exit code', () => {
  const { file } = tinyConfigFile();
  const bad = run(['-c', file, 'data.batch_sise=3']);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /speed-train: error: command line: data\.batch_sise: unknown key \(did you mean data\.batch_size\?\)/);
  assert.doesNotMatch(bad.stderr, /\n\s+at /, 'no stack trace');
  const missing = run(['-c', '/nonexistent.yaml']);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /nonexistent\.yaml: config file not found/);
  const noCkpt = run(['-c', file, '-p', 'sample']);
  assert.equal(noCkpt.status, 1);
  assert.match(noCkpt.stderr, /no checkpoint found/);
  const phase = run(['-c', file, '-p', 'evaluate-me']);
  assert.notEqual(phase.status, 0);
  const an = run(['analyze', '-c', file, '-o', path.join(path.dirname(file), 'an.png')]);
  assert.equal(an.status, 0, an.stderr);
  assert.match(an.stdout, /meaningful-step boundary m = /);
  assert.ok(existsSync(path.join(path.dirname(file), 'an.png')));
  const help = run(['--help-config']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /diffusion\.sampling {2}\(uniform\|speed\|/);
});

test('Ctrl-C writes a checkpoint and exits; --resume latest continues from it', async () => {
  const { file, exp } = tinyConfigFile();
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, '-c', file, 'max_training_steps=100000', 'log_every=5'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer) => { output += d.toString(); if (/train 10\//.test(output)) resolve(); };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (c) => reject(new Error(`exited early (${c}): ${output}`)));
  });
  child.kill('SIGINT');
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  assert.equal(code, 130, output);
  const ckpts = listCheckpoints(exp);
  assert.equal(ckpts.length, 1);
  const step = readState(ckpts[0]).step;
  assert.ok(step >= 10 && step < 100000, `checkpoint at step ${step}`);
  const r = run(['-c', file, `max_training_steps=${step + 2}`, '--resume', 'latest']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`resumed from .*${String(step).padStart(7, '0')} at step ${step}`));
  const lines = readFileSync(path.join(exp, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number });
  assert.equal(lines[lines.length - 1].step, step + 2);
});

test('--resume latest with no checkpoint is an error naming the folder; --resume auto starts fresh, then resumes', () => {
  const { file, exp } = tinyConfigFile();
  const typo = run(['-c', file, `experiment_dir=${exp}-typo`, 'max_training_steps=2', 'sample_at_end=false', '--resume', 'latest']);
  assert.equal(typo.status, 1, typo.stdout);
  assert.match(typo.stderr, new RegExp(`--resume: latest: no checkpoint in ${path.resolve(exp)}-typo/checkpoints \\(the folder does not exist\\); check experiment_dir, or use --resume auto`));
  assert.doesNotMatch(typo.stdout, /trained/);
  assert.ok(!existsSync(path.join(`${exp}-typo`, 'checkpoints')), 'nothing trained');
  // resume_training=latest in the config means the same
  assert.match(run(['-c', file, `experiment_dir=${exp}-typo`, 'resume_training=latest']).stderr, /no checkpoint in/);
  const first = run(['-c', file, 'max_training_steps=2', 'sample_at_end=false', '--resume', 'auto']);
  assert.equal(first.status, 0, first.stderr);
  assert.match(first.stdout, /resume auto: no checkpoint in .* yet; starting from scratch/);
  assert.match(first.stdout, /trained 2\/2 steps/);
  const again = run(['-c', file, 'max_training_steps=3', 'sample_at_end=false', '--resume', 'auto']);
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stdout, /resumed from .*0000002 at step 2/);
  assert.match(run(['--help']).stdout.replace(/\s+/g, ' '), /"latest": the newest in experiment_dir\/checkpoints \(an error if there is none\); "auto": the newest if there is one, else start fresh/);
});

test('speed-train bench --profile prints where a train step goes, op by op', () => {
  const r = run(['bench', '--models', 'DiT-Ti/8@16x3', '--batches', '2', '--iters', '1', '--threads', '2', '--no-kernels', '--profile', '--recompute']);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.split('\n');
  assert.match(lines[0], /model\s+device\s+batch\s+what\s+ms.*act MiB\s+calls\s+share/);
  assert.ok(lines.some((l) => /train_step recompute/.test(l)), 'the recomputed train-step row');
  assert.ok(lines.some((l) => /step attention_backward 2,4,3,64\s.*\s12\s+\d+\.\d%/.test(l)), 'an attention row with 12 calls and its share');
  assert.ok(lines.some((l) => /step total \(profiled\).*100\.0%/.test(l)), 'the profiled total');
});
