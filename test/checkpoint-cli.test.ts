// The checkpoint guarantees through the CLI: --resume latest and -p sample
// fall back past a damaged newest checkpoint; a read-only experiment_dir and
// a disk that fills up mid-run are clean one-line errors, and after space is
// freed the run resumes.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { listCheckpoints, readState } from '../src/checkpoint/index.js';
import { TINY, tinyConfigFile, useAddon } from './helpers-e2e.js';

useAddon();
const CLI = path.resolve('src/cli.ts');
const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { encoding: 'utf8', env: process.env });

function flipTensorByte(file: string): void {
  const b = readFileSync(file);
  b[b.length - 5] ^= 0x10;
  writeFileSync(file, b);
}

test('CLI: --resume latest and -p sample fall back past a damaged newest checkpoint, naming it', () => {
  const { file, exp } = tinyConfigFile();
  try {
    const r0 = run(['-c', file, 'max_training_steps=4', 'ckpt_every=2']);
    assert.equal(r0.status, 0, r0.stderr);
    const [d2, d4] = listCheckpoints(exp);
    flipTensorByte(path.join(d4, 'ema.safetensors'));
    const s = run(['-c', file, '-p', 'sample', 'sample.num_per_class=1']);
    assert.equal(s.status, 0, s.stderr);
    assert.match(s.stderr, new RegExp(`warning: checkpoint ${d4} is unusable, .*ema\\.safetensors: tensor \\S+: checksum mismatch .*falling back to the previous one`));
    flipTensorByte(path.join(d4, 'model.safetensors'));
    const r = run(['-c', file, 'max_training_steps=6', 'ckpt_every=2', '--resume', 'latest']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`warning: checkpoint ${d4} is unusable, .*model\\.safetensors: tensor \\S+: checksum mismatch`));
    assert.match(r.stdout, new RegExp(`resumed from ${d2} at step 2`));
    assert.equal(readState(listCheckpoints(exp).pop()!).step, 6);
    // Every checkpoint damaged: one clean error listing them, exit 1.
    for (const d of listCheckpoints(exp)) flipTensorByte(path.join(d, 'optimizer.safetensors'));
    const bad = run(['-c', file, 'max_training_steps=8', '--resume', 'latest']);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /speed-train: error: .*checkpoints: none of the 3 checkpoint\(s\) is usable/);
    assert.doesNotMatch(bad.stderr, /\n\s+at /, 'no stack trace');
  } finally {
    rmSync(path.dirname(exp), { recursive: true, force: true });
  }
});

function tmpfs(opts: string): string | null {
  const dir = mkdtempSync(path.join(tmpdir(), 'ckpt-cli-fs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', opts, 'tmpfs', dir], { stdio: 'pipe' });
    return dir;
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return null;
  }
}

test('CLI: a read-only experiment_dir is a one-line error naming it', (t) => {
  const mnt = tmpfs('size=1m,ro');
  if (!mnt) { t.skip('cannot mount a tmpfs here (needs root)'); return; }
  try {
    const dir = mkdtempSync(path.join(tmpdir(), 'ckpt-cli-'));
    const file = path.join(dir, 'tiny.yaml');
    writeFileSync(file, TINY.replace('EXP', path.join(mnt, 'runs', 'a')));
    const r = run(['-c', file]);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, new RegExp(`speed-train: error: ${mnt}/runs/a: experiment_dir: cannot create the folder: read-only file system \\(EROFS\\)`));
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    rmSync(dir, { recursive: true, force: true });
  } finally {
    execFileSync('umount', [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  }
});

test('CLI: a disk that fills up mid-run: error naming the file and the space, previous checkpoint kept, resume works once space is freed', (t) => {
  // TINY's checkpoint is ~880 KB: the first fits in 1400 KB, the second does not.
  const mnt = tmpfs('size=1400k');
  if (!mnt) { t.skip('cannot mount a tmpfs here (needs root)'); return; }
  try {
    const dir = mkdtempSync(path.join(tmpdir(), 'ckpt-cli-'));
    const file = path.join(dir, 'tiny.yaml');
    const exp = path.join(mnt, 'exp');
    writeFileSync(file, TINY.replace('EXP', exp));
    const r = run(['-c', file, 'max_training_steps=4', 'ckpt_every=1']);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /speed-train: error: .*checkpoints\/0000002: no space left on device \(ENOSPC\): the checkpoint needs [\d.]+ KiB \(\d+ bytes\), [\d.]+ KiB \(\d+ bytes\) free on the file system of/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    assert.deepEqual(readdirSync(path.join(exp, 'checkpoints')), ['0000001'], 'no partial directory');
    execFileSync('mount', ['-o', 'remount,size=4m', mnt]);
    const r2 = run(['-c', file, 'max_training_steps=4', 'ckpt_every=1', '--resume', 'latest']);
    assert.equal(r2.status, 0, r2.stdout + r2.stderr);
    assert.match(r2.stdout, /resumed from .*0000001 at step 1/);
    assert.equal(readState(listCheckpoints(exp).pop()!).step, 4);
    rmSync(dir, { recursive: true, force: true });
  } finally {
    execFileSync('umount', [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  }
});
