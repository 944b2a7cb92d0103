// Crash consistency: a tiny training run that checkpoints every
// step is killed with SIGKILL again and again, at random moments and while a
// checkpoint is being written (a .tmp- directory exists), each time resumed
// with --resume auto. After every kill each step directory must be complete
// (every checksum verifies) or absent; the run that survived all the kills
// must end with weights, EMA, optimizer state and generator states bitwise
// equal to an uninterrupted run. CRASH_TRIALS sets the number of kills.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { listCheckpoints, readState, verifyCheckpoint } from '../src/checkpoint/index.js';
import { Rng } from '../src/rng.js';
import { tinyConfigFile, useAddon } from './helpers-e2e.js';

useAddon();
const CLI = path.resolve('src/cli.ts');
const TRIALS = Number(process.env.CRASH_TRIALS ?? 10);
const STEPS = 60;
const ARGS = [`max_training_steps=${STEPS}`, 'ckpt_every=1', 'log_every=1'];

interface Run { code: number | null; signal: NodeJS.Signals | null; out: string }

/** Starts the CLI; `killWhen` decides (polled every ms) when to SIGKILL it. */
function start(file: string, resume: boolean, killWhen?: (out: string, pid: number) => boolean): Promise<Run> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, '-c', file, ...ARGS, ...(resume ? ['--resume', 'auto'] : [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  let timer: NodeJS.Timeout | undefined;
  if (killWhen) {
    timer = setInterval(() => {
      if (killWhen(out, child.pid!)) { clearInterval(timer); child.kill('SIGKILL'); }
    }, 1);
  }
  return new Promise((resolve) => child.on('close', (code, signal) => { clearInterval(timer); resolve({ code, signal, out }); }));
}

/** Every tensor byte and every generator state of a final checkpoint (not the config: experiment_dir differs). */
function fingerprint(dir: string): string[] {
  const st = readState(dir);
  return [
    ...['model', 'ema', 'optimizer'].map((f) => readFileSync(path.join(dir, `${f}.safetensors`)).toString('base64')),
    JSON.stringify({ step: st.step, noise: st.noise, adam_step: st.adam_step, train: st.train }),
  ];
}

function assertConsistent(exp: string, trial: number): void {
  const root = path.join(exp, 'checkpoints');
  if (!existsSync(root)) return;
  for (const n of readdirSync(root)) {
    if (/^\.(tmp|old)-/.test(n)) continue; // a write the kill interrupted: never taken for a checkpoint
    assert.match(n, /^\d{7}$/, `trial ${trial}: unexpected entry ${n}`);
    // Complete: state.json present and every file's checksums verify.
    assert.ok(existsSync(path.join(root, n, 'state.json')), `trial ${trial}: ${n} lacks state.json`);
    verifyCheckpoint(path.join(root, n));
  }
}

test(`crash consistency: ${TRIALS} SIGKILLs (some inside checkpoint writes), resumed with --resume auto (the first run finds no checkpoint), end bitwise equal to an uninterrupted run`, { timeout: 300_000 }, async () => {
  const base = tinyConfigFile();
  const ref = await start(base.file, false);
  assert.equal(ref.code, 0, ref.out);
  const refCkpts = listCheckpoints(base.exp);
  assert.equal(readState(refCkpts[refCkpts.length - 1]).step, STEPS);
  const want = fingerprint(refCkpts[refCkpts.length - 1]);

  const { file, exp } = tinyConfigFile();
  const rng = new Rng(2024);
  const root = path.join(exp, 'checkpoints');
  let killedInWrite = 0;
  let kills = 0;
  const steps: number[] = [];
  for (let trial = 0; trial < TRIALS; trial++) {
    const inWrite = trial % 2 === 1;
    const delay = rng.int(80);
    let armedAt = 0;
    const r = await start(file, true, (out, pid) => {
      // Armed once this run has trained a step of its own (progress past where it resumed).
      const done = [...out.matchAll(/train (\d+)\/\d+/g)].map((m) => Number(m[1]));
      if (done.length < 2 || done[done.length - 1] <= done[0]) return false;
      // Inside a write: this process's own temporary directory exists.
      if (inWrite) return existsSync(root) && readdirSync(root).some((n) => n.startsWith('.tmp-') && n.includes(`-${pid}-`));
      if (!armedAt) armedAt = Date.now();
      return Date.now() - armedAt >= delay;
    });
    if (r.code === 0) break; // finished before the kill landed
    assert.equal(r.signal, 'SIGKILL', r.out);
    kills++;
    if (inWrite) killedInWrite++;
    assertConsistent(exp, trial);
    const have = listCheckpoints(exp);
    steps.push(have.length ? readState(have[have.length - 1]).step : 0);
  }
  assert.ok(kills >= Math.min(TRIALS, 8), `only ${kills} of ${TRIALS} kills landed before the run finished`);
  assert.ok(killedInWrite >= 1, 'at least one kill inside a checkpoint write');
  const last = await start(file, true);
  assert.equal(last.code, 0, last.out);
  assert.match(last.out, /resumed from .* at step \d+/);
  assertConsistent(exp, TRIALS);
  assert.deepEqual(readdirSync(root).filter((n) => n.startsWith('.')), [], 'stale temporary directories are cleaned up');
  const all = listCheckpoints(exp);
  const final = all[all.length - 1];
  assert.equal(readState(final).step, STEPS);
  const got = fingerprint(final);
  assert.equal(got.length, want.length);
  for (let i = 0; i < want.length; i++) assert.ok(got[i] === want[i], `final ${['model', 'ema', 'optimizer', 'state'][i]} differs from the uninterrupted run`);
  for (const d of [base.exp, exp]) rmSync(path.dirname(d), { recursive: true, force: true }); // tens of MB each
  process.stdout.write(`# crash: ${kills} kills (${killedInWrite} inside a checkpoint write), newest checkpoint after each kill at steps ${steps.join(', ')}; final step ${STEPS} bitwise equal\n`);
});
