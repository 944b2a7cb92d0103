// A closed console never costs a checkpoint: training run the way people run it
// (`2>&1 | tee log`, `| head -1`, under nohup), then stopped by a signal to the
// whole process group as a terminal's Ctrl-C does. The reader of the pipe dies with
// the trainer (or is gone already), so every later console write fails with EPIPE;
// the run must still write its checkpoint and exit 128 + signo.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { listCheckpoints, verifyCheckpoint } from '../src/checkpoint/index.js';
import { signalExitCode, type StopSignal } from '../src/train/guard.js';
import { tinyConfigFile, useAddon } from './helpers-e2e.js';

useAddon();
const CLI = path.resolve('src/cli.ts');
const sh = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Steps logged so far to metrics.jsonl (the run's own log, independent of the console). */
function loggedSteps(exp: string): number {
  const f = path.join(exp, 'metrics.jsonl');
  if (!existsSync(f)) return 0;
  const lines = readFileSync(f, 'utf8').trim().split('\n').filter(Boolean);
  return lines.length ? (JSON.parse(lines.at(-1)!) as { step: number }).step : 0;
}

/**
 * Runs `[prefix] speed-train ... 2>&1 | sink` in a process group of its own (bash
 * leads it, the trainer and the sink are its children), waits until the run logged
 * step 10, sends `sig` to the whole group, and returns the trainer's exit status.
 * bash traps the signal with a command, so that it outlives its pipeline and writes
 * the status; its children get the signal's default action back at exec, so `tee`
 * and `head` die from it as they do under a terminal.
 */
async function pipeline(sink: string, sig: StopSignal, prefix = ''): Promise<{ status: number; exp: string; file: string }> {
  const { file, exp } = tinyConfigFile();
  const dir = path.dirname(file);
  const statusFile = path.join(dir, 'status');
  const cmd = `${prefix} ${sh(process.execPath)} --import tsx ${sh(CLI)} -c ${sh(file)} max_training_steps=100000 log_every=5`;
  const script = `trap : INT TERM HUP; ${cmd} 2>&1 | ${sink.replace('LOG', sh(path.join(dir, 'log.txt')))}; echo "\${PIPESTATUS[0]}" > ${sh(statusFile)}`;
  const child = spawn('bash', ['-c', script], { detached: true, stdio: 'ignore', env: process.env });
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  let done = false;
  void exited.then(() => { done = true; });
  const deadline = Date.now() + 120_000;
  while (!done && loggedSteps(exp) < 10 && Date.now() < deadline) await sleep(100);
  if (!done && loggedSteps(exp) < 10) process.kill(-child.pid!, 'SIGKILL');
  assert.ok(!done, `the pipeline ended before step 10: ${existsSync(statusFile) ? readFileSync(statusFile, 'utf8') : ''}`);
  assert.ok(loggedSteps(exp) >= 10, 'no step 10 within 120 s');
  process.kill(-child.pid!, sig);
  await exited;
  return { status: Number(readFileSync(statusFile, 'utf8').trim()), exp, file };
}

function assertOneGoodCheckpoint(exp: string): number {
  const ckpts = listCheckpoints(exp);
  assert.equal(ckpts.length, 1, `checkpoints: ${ckpts.join(', ')}`);
  const st = verifyCheckpoint(ckpts[0]); // every tensor file against its recorded digest
  assert.ok(st.step >= 10, `checkpoint at step ${st.step}`);
  return st.step;
}

test('Ctrl-C (SIGINT to the group) under `2>&1 | tee log`: tee dies first, the run still checkpoints, exits 130 and resumes', async () => {
  const r = await pipeline('tee LOG > /dev/null', 'SIGINT');
  assert.equal(r.status, signalExitCode('SIGINT'));
  const at = assertOneGoodCheckpoint(r.exp);
  const res = spawnSync(process.execPath, ['--import', 'tsx', CLI, '-c', r.file, `max_training_steps=${at + 2}`, '--resume', 'latest'], { encoding: 'utf8' });
  assert.equal(res.status, 0, res.stderr);
  assert.match(res.stdout, new RegExp(`resumed from .*${String(at).padStart(7, '0')} at step ${at}`));
});

test('SIGTERM to the group under `2>&1 | tee log`: a checkpoint, exit 143', async () => {
  const r = await pipeline('tee LOG > /dev/null', 'SIGTERM');
  assert.equal(r.status, signalExitCode('SIGTERM'));
  assertOneGoodCheckpoint(r.exp);
});

test('`| head -1`: the reader is gone after the first line, training goes on and SIGTERM still checkpoints (exit 143)', async () => {
  const r = await pipeline('head -1 > /dev/null', 'SIGTERM');
  assert.equal(r.status, signalExitCode('SIGTERM'));
  assertOneGoodCheckpoint(r.exp);
});

test('under nohup with `| tee`: a hang-up of the whole group checkpoints and exits 129', async () => {
  const r = await pipeline('tee LOG > /dev/null', 'SIGHUP', 'nohup');
  assert.equal(r.status, signalExitCode('SIGHUP'));
  assertOneGoodCheckpoint(r.exp);
});
