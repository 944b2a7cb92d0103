// Fuzzing every non-image reader (safetensors, checkpoint directory, npy, npz,
// YAML config, convert's .pt readers (pickles, zip and legacy files), latent shard
// folders with their manifest, state.json against its tensors, the VAE's config.json)
// with seeded mutations: bit flips, truncations, insertions,
// deletions, duplicated chunks, length fields set huge, numbers and tokens
// spliced into text. Each target runs in a child process (an abort or an
// out-of-memory kill is caught, not fatal to the test runner) with a capped
// heap and a peak-RSS bound; an input that stalls the child for more than
// FUZZ_TIMEOUT_MS is a hang. Fails on any crash, hang, untyped error (not a
// SpeedTrainError subclass), memory over the bound, or a damaged checkpoint
// that loads as if it were good.
//
// CI: a fixed seed and ~6 s per target. Long runs: FUZZ_ITERS=10000 (per
// target, no time bound), FUZZ_SEED=n, FUZZ_TARGETS=npy,npz.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

const ITERS = process.env.FUZZ_ITERS ? Number(process.env.FUZZ_ITERS) : 1e9;
const BUDGET_MS = process.env.FUZZ_ITERS ? 1e9 : Number(process.env.FUZZ_BUDGET_MS ?? 6000);
const SEED = Number(process.env.FUZZ_SEED ?? 20240513);
// Generous: the 2-core CI machine is shared, and a real hang is caught at any bound.
const TIMEOUT_MS = Number(process.env.FUZZ_TIMEOUT_MS ?? 30000);
// Inputs are written per iteration: memory-backed when available (no disk stalls).
const WORK_ROOT = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
const HEAP_MB = 256;
const ALL = ['safetensors', 'checkpoint', 'npy', 'npz', 'yaml', 'pt-pickle', 'pt-zip', 'pt-legacy', 'shards', 'state', 'vae-config'];
const TARGETS = process.env.FUZZ_TARGETS ? process.env.FUZZ_TARGETS.split(',') : ALL;

interface Summary {
  target: string;
  inputs: number;
  clean_errors: number;
  accepted: number;
  untyped: number;
  silent: number;
  memory: number;
  ms: number;
  /** peak resident memory of the worker process */
  peak_rss_mb?: number;
  failures: string[];
}

async function fuzz(target: string, seed: number): Promise<Summary & { crash?: string; hang?: string; work: string }> {
  const work = mkdtempSync(path.join(WORK_ROOT, `fuzz-${target}-`));
  const child = spawn(process.execPath, [
    `--max-old-space-size=${HEAP_MB}`, '--import', 'tsx', path.resolve('test/fuzz-worker.ts'),
    target, String(seed), String(ITERS), String(BUDGET_MS), work,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  // Watchdog: the worker rewrites `status` before every input.
  const status = path.join(work, 'status');
  let last = '';
  let lastChange = Date.now();
  let hang: string | undefined;
  const timer = setInterval(() => {
    let s = '';
    try { s = `${readFileSync(status, 'utf8')} ${statSync(status).mtimeMs}`; } catch { /* not yet written */ }
    if (s !== last) { last = s; lastChange = Date.now(); return; }
    if (Date.now() - lastChange > TIMEOUT_MS) {
      hang = `no progress for ${TIMEOUT_MS} ms on input ${s.split(' ')[0]} (saved as ${path.join(work, 'current.bin')})`;
      child.kill('SIGKILL');
    }
  }, 500);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('close', (c, sg) => r([c, sg])));
  clearInterval(timer);
  const line = out.trim().split('\n').pop() ?? '';
  let summary: Summary;
  try {
    summary = JSON.parse(line) as Summary;
  } catch {
    const at = existsSync(status) ? readFileSync(status, 'utf8').trim() : '?';
    return {
      target, inputs: 0, clean_errors: 0, accepted: 0, untyped: 0, silent: 0, memory: 0, ms: 0, failures: [], hang, work,
      crash: hang ? undefined : `worker ended with code ${code} signal ${signal} at input ${at} (saved as ${path.join(work, 'current.bin')}): ${err.slice(-1500)}`,
    };
  }
  return { ...summary, work };
}

for (const target of TARGETS) {
  test(`fuzz ${target}: no crash, hang, untyped error, memory blow-up or silent damage`, { timeout: BUDGET_MS + 120_000}, async () => {
    const r = await fuzz(target, SEED + ALL.indexOf(target));
    process.stdout.write(`# fuzz ${target}: ${r.inputs} inputs, ${r.clean_errors} clean errors, ${r.accepted} accepted, ` +
      `${r.untyped} untyped, ${r.silent} silent, ${r.memory} memory, crash ${r.crash ? 1 : 0}, hang ${r.hang ? 1 : 0} (${(r.ms / 1000).toFixed(1)} s, peak RSS ${r.peak_rss_mb ?? '?'} MiB, seed ${SEED + ALL.indexOf(target)})\n`);
    assert.equal(r.crash, undefined, r.crash);
    assert.equal(r.hang, undefined, r.hang);
    assert.deepEqual(r.failures, [], r.failures.join('\n'));
    assert.equal(r.untyped + r.silent + r.memory, 0);
    assert.ok(r.inputs >= (process.env.FUZZ_ITERS ? ITERS : 50), `only ${r.inputs} inputs ran`);
    assert.ok(r.clean_errors > 0, 'the mutations reach the validation');
    rmSync(r.work, { recursive: true, force: true }); // kept when a check failed: it holds the failing inputs
  });
}
