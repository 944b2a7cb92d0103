// Checksums, state.json validation, fallback to the newest good checkpoint,
// and full-disk / read-only behaviour.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as zlib from 'node:zlib';

import {
  checkStoredConfig, ensureWritableDir, listCheckpoints, loadCheckpoint, loadForResume, readState, useCheckpoint, verifyCheckpoint, writeCheckpoint,
} from '../src/checkpoint/index.js';
import { CheckpointError, SpeedTrainError } from '../src/errors.js';
import { writeRunFile } from '../src/checkpoint/fs.js';
import { defaultsOf } from '../src/config/schema.js';
import { FakeModel } from './checkpoint-fake.js';

const tmp = () => mkdtempSync(path.join(tmpdir(), 'ckpt-int-'));
const TENSOR_FILES = ['model.safetensors', 'ema.safetensors', 'optimizer.safetensors'];

/** A train section as src/train writes it (TrainState). */
const trainState = () => ({
  rng: { algo: 'xoshiro128**', s: [1, 2, 3, 4], spare: null },
  data: { epoch: 0, batch: 3, rng: { algo: 'xoshiro128**', s: [5, 6, 7, 8], spare: 0.5 } },
  accum: { steps: 1, samples: 8, loss: 0.5, mse: 0.5, vb: 0, gradNorm: 1, skipped: 0, tHist: [1, 0], bucketLoss: [0.5, 0] },
});

function writeStep(m: FakeModel, exp: string, step: number): string {
  m.fill(step);
  return writeCheckpoint(m, exp, { step, config: defaultsOf(undefined, { follow: false }), train: trainState() });
}

/** Writes a state.json with a valid self-checksum (as a buggy writer would: consistent but wrong). */
function writeState(file: string, s: Record<string, unknown>): void {
  const crc = (zlib.crc32(JSON.stringify(s)) >>> 0).toString(16).padStart(8, '0');
  writeFileSync(file, JSON.stringify({ ...s, state_crc32: crc }));
}

const isCkptError = (re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof CheckpointError, `expected a CheckpointError, got ${String(e)}`);
  assert.match(e.message, re);
  return true;
};

test('every single flipped byte of a tensor file is caught, naming the file (and the tensor when it is in one)', () => {
  const exp = tmp();
  const m = FakeModel.make(4);
  const dir = writeStep(m, exp, 5);
  let caught = 0;
  let tensorNamed = 0;
  for (const f of TENSOR_FILES) {
    const file = path.join(dir, f);
    const good = readFileSync(file);
    const hlen = 8 + Number(good.readBigUInt64LE(0));
    for (let i = 0; i < good.length; i++) {
      const bad = Buffer.from(good);
      bad[i] ^= 1 << (i % 8);
      writeFileSync(file, bad);
      const m2 = FakeModel.make(4);
      assert.throws(() => loadCheckpoint(m2, dir), (e: unknown) => {
        assert.ok(e instanceof CheckpointError, `${f} byte ${i}: ${String(e)}`);
        assert.ok(e.message.includes(file), `${f} byte ${i}: names the file: ${e.message}`);
        if (i >= hlen) {
          assert.match(e.message, /tensor \S+: checksum mismatch/, `${f} byte ${i}`);
          tensorNamed++;
        }
        return true;
      });
      caught++;
    }
    writeFileSync(file, good);
  }
  assert.ok(caught > 1000 && tensorNamed > 800, `${caught} flips, ${tensorNamed} in tensor data`);
  // The untouched checkpoint still loads and verifies.
  loadCheckpoint(FakeModel.make(4), dir);
  assert.equal(verifyCheckpoint(dir).step, 5);
});

test('a flipped byte in state.json is caught by its checksum or is harmless (whitespace)', () => {
  const exp = tmp();
  const dir = writeStep(FakeModel.make(4), exp, 2);
  const file = path.join(dir, 'state.json');
  const good = readFileSync(file);
  const want = readState(dir);
  let caught = 0;
  for (let i = 0; i < good.length; i++) {
    const bad = Buffer.from(good);
    bad[i] ^= 1 << (i % 8);
    writeFileSync(file, bad);
    try {
      assert.deepEqual(readState(dir), want, `byte ${i} changed the state without an error`);
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      assert.ok(e instanceof CheckpointError && e.message.startsWith(file), `byte ${i}: ${String(e)}`);
      caught++;
    }
  }
  writeFileSync(file, good);
  assert.ok(caught > good.length * 0.8, `${caught} of ${good.length}`);
});

test('checkpoints written before checksums load with a note', () => {
  const exp = tmp();
  const m = FakeModel.make(4);
  const dir = writeStep(m, exp, 3);
  const file = path.join(dir, 'state.json');
  const s = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  delete s.files;
  delete s.state_crc32;
  writeFileSync(file, JSON.stringify(s));
  const notes: string[] = [];
  const m2 = FakeModel.make(4);
  assert.equal(loadCheckpoint(m2, dir, { note: (n) => notes.push(n) }).step, 3);
  assert.equal(m2.readParam('blocks.0.attn.qkv.weight', 'adam_m')[0], 3.25);
  assert.equal(notes.length, 1);
  assert.match(notes[0], /written before checkpoints carried checksums/);
});

test('damaged state.json fields are CheckpointErrors naming state.json and the field', () => {
  const exp = tmp();
  const dir = writeStep(FakeModel.make(4), exp, 4);
  const file = path.join(dir, 'state.json');
  const orig = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  // Rewrites state.json without its self-checksum (as an old or hand-edited file).
  const put = (edit: (s: Record<string, any>) => void) => {
    const s = structuredClone(orig) as Record<string, any>;
    delete s.state_crc32;
    edit(s);
    writeState(file, s);
  };
  const resume = () => loadForResume(FakeModel.make(4), dir, exp, () => {});
  const cases: [string, (s: Record<string, any>) => void, RegExp][] = [
    // Issue 13 item 13: "Rng.setState: ... got undefined".
    ['train.rng missing', (s) => { delete s.train.rng; }, /state\.json: train\.rng: expected \{algo/],
    ['train.rng words', (s) => { s.train.rng.s = [1, 2, -3, 4]; }, /train\.rng\.s: expected four unsigned 32-bit integers/],
    ['train not object', (s) => { s.train = 7; }, /state\.json: train: expected \{rng, data, accum\}/],
    ['data.epoch', (s) => { s.train.data.epoch = 'x'; }, /train\.data\.epoch: expected an integer/],
    ['accum.tHist', (s) => { s.train.accum.tHist = [1, null]; }, /train\.accum\.tHist: expected a list/],
    ['step', (s) => { s.step = -1; }, /state\.json: step: expected an integer in \[0/],
    ['noise', (s) => { s.noise = { seed: 1 }; }, /noise\.offset: expected an integer/],
    ['adam_step', (s) => { s.adam_step = 1.5; }, /adam_step: expected an integer/],
    ['version', (s) => { s.version = 9; }, /version: expected 1, found 9/],
    ['files', (s) => { s.files['ema.safetensors'].tensor_crc32['pos_embed'] = 'zz'; }, /files\.ema\.safetensors\.tensor_crc32\.pos_embed: expected 8 hex digits/],
    ['files gone entry', (s) => { delete s.files['model.safetensors']; }, /files\.model\.safetensors: expected/],
  ];
  for (const [name, edit, re] of cases) {
    put(edit);
    assert.throws(resume, isCkptError(new RegExp(re.source)), name);
  }
  // Issue 13 item 13: a state.json without a diffusion section.
  put((s) => { delete s.config.diffusion; });
  assert.throws(() => checkStoredConfig(readState(dir).config, file), isCkptError(/state\.json: config\.diffusion: expected a mapping/));
  put((s) => { s.config.model.name = 'DiT-Q/3'; });
  assert.throws(() => checkStoredConfig(readState(dir).config, file), isCkptError(/state\.json: config\.model\.name: "DiT-Q\/3" is not valid/));
  // Keys added to the schema since the checkpoint was written take their defaults.
  put((s) => { delete s.config.diffusion.tau; delete s.config.model.depth; });
  const c = checkStoredConfig(readState(dir).config, file) as { model: { depth: unknown }; diffusion: { tau: unknown } };
  assert.equal(c.diffusion.tau, (defaultsOf().diffusion as { tau: unknown }).tau);
  assert.equal(c.model.depth, (defaultsOf().model as { depth: unknown }).depth);
});

test('--resume latest falls back past damaged checkpoints to the newest good one, with a warning naming each', () => {
  const exp = tmp();
  const m = FakeModel.make(4);
  const d1 = writeStep(m, exp, 1);
  const d2 = writeStep(m, exp, 2);
  const d3 = writeStep(m, exp, 3);
  const d4 = writeStep(m, exp, 4);
  // d4: one flipped byte at the end of its EMA tensors; d3: a missing file; d2: a bad train field.
  const ema = path.join(d4, 'ema.safetensors');
  const b = readFileSync(ema);
  b[b.length - 3] ^= 0x40;
  writeFileSync(ema, b);
  rmSync(path.join(d3, 'optimizer.safetensors'));
  const st2 = JSON.parse(readFileSync(path.join(d2, 'state.json'), 'utf8'));
  delete st2.state_crc32;
  st2.train.data = null;
  writeState(path.join(d2, 'state.json'), st2);
  const warnings: string[] = [];
  const m2 = FakeModel.make(4);
  const r = loadForResume(m2, 'latest', exp, (w) => warnings.push(w));
  assert.equal(r.dir, d1);
  assert.equal(r.state.step, 1);
  // The partly loaded newer candidates left nothing behind: every slot is step 1's.
  for (const p of m2.params()) {
    assert.ok(m2.readParam(p.name, 'model').every((v) => v === 1), p.name);
    assert.ok(m2.readParam(p.name, 'ema').every((v) => v === (p.trainable ? 1.5 : 0)) || !p.trainable, p.name);
    if (p.trainable) assert.ok(m2.readParam(p.name, 'adam_v').every((v) => v === 1.125), p.name);
  }
  assert.equal(m2.getStep(), 1);
  assert.deepEqual(m2.getNoiseState(), { seed: 1, offset: 10 });
  assert.equal(warnings.length, 3);
  assert.match(warnings[0], new RegExp(`checkpoint ${d4} is unusable.*ema\\.safetensors: tensor \\S+: checksum mismatch.*falling back`));
  assert.match(warnings[1], new RegExp(`checkpoint ${d3} is unusable.*optimizer\\.safetensors: cannot open \\(ENOENT\\)`));
  assert.match(warnings[2], new RegExp(`checkpoint ${d2} is unusable.*train\\.data: expected`));
  // A checkpoint the user names explicitly is not substituted.
  assert.throws(() => loadForResume(FakeModel.make(4), d4, exp, () => {}), isCkptError(/checksum mismatch/));
  // None good: one error listing all.
  rmSync(path.join(d1, 'model.safetensors'));
  assert.throws(() => loadForResume(FakeModel.make(4), 'latest', exp, () => {}), isCkptError(/none of the 4 checkpoint\(s\) is usable.*0000004: .*0000001: /));
  // useCheckpoint passes other errors through untouched.
  assert.throws(() => useCheckpoint('latest', exp, () => { throw new TypeError('boom'); }, () => {}), TypeError);
});

/** Mounts a small tmpfs (root only); returns its path or a reason it cannot. */
function mountTmpfs(size: string, ro = false): string | { skip: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'ckpt-fs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}${ro ? ',ro' : ''}`, 'tmpfs', dir], { stdio: 'pipe' });
    return dir;
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    return { skip: `cannot mount a tmpfs here (${String((e as { stderr?: Buffer }).stderr ?? e).trim()}); needs root` };
  }
}
const umount = (dir: string) => { execFileSync('umount', [dir]); rmSync(dir, { recursive: true, force: true }); };

test('a full disk: CheckpointError naming the file and the space, no partial directory, previous checkpoint intact, resume works', (t) => {
  const mnt = mountTmpfs('2m');
  if (typeof mnt !== 'string') { t.skip(mnt.skip); return; }
  try {
    const exp = path.join(mnt, 'exp');
    const m = FakeModel.make(64); // ~200 KB per checkpoint
    const d1 = writeStep(m, exp, 1);
    // Fill the disk but ~100 KB.
    const filler = path.join(mnt, 'filler');
    const free = () => Number(execFileSync('df', ['-B1', '--output=avail', mnt]).toString().split('\n')[1]);
    writeFileSync(filler, Buffer.alloc(Math.max(0, free() - 100 * 1024)));
    const root = path.join(exp, 'checkpoints');
    // Checked before writing (statfs), and hit while writing (the check off).
    for (const checkFreeSpace of [true, false]) {
      m.fill(2);
      assert.throws(() => writeCheckpoint(m, exp, { step: 2, config: {}, train: trainState() }, { checkFreeSpace }), (e: unknown) => {
        assert.ok(e instanceof CheckpointError, String(e));
        assert.match(e.message, /no space left on device \(ENOSPC\): the checkpoint needs [\d.]+ KiB \(\d+ bytes\), [\d.]+ KiB \(\d+ bytes\) free/);
        assert.ok(e.message.startsWith(path.join(root, checkFreeSpace ? '0000002' : '.tmp-0000002')), e.message);
        if (!checkFreeSpace) assert.match(e.message, /\.safetensors: writing the checkpoint of step 2 failed.*partial checkpoint was removed/);
        return true;
      });
      assert.deepEqual(readdirSync(root), ['0000001'], 'no .tmp- directory is left behind');
    }
    assert.deepEqual(listCheckpoints(exp), [d1]);
    const r = loadForResume(FakeModel.make(64), 'latest', exp, (w) => assert.fail(w));
    assert.equal(r.state.step, 1);
    verifyCheckpoint(d1);
    // Space freed: the next write works.
    rmSync(filler);
    writeStep(m, exp, 2);
    assert.equal(loadForResume(FakeModel.make(64), 'latest', exp, () => {}).state.step, 2);
  } finally {
    umount(mnt);
  }
});

test('a read-only or impossible experiment_dir is named with the reason', (t) => {
  const mnt = mountTmpfs('1m', true);
  if (typeof mnt !== 'string') { t.skip(mnt.skip); return; }
  try {
    assert.throws(() => ensureWritableDir(path.join(mnt, 'exp', 'deeper')), isCkptError(/exp\/deeper: experiment_dir: cannot create the folder: read-only file system \(EROFS\)/));
    assert.throws(() => ensureWritableDir(mnt), isCkptError(/experiment_dir: the folder is not writable: read-only file system \(EROFS\)/));
    assert.throws(() => writeCheckpoint(FakeModel.make(4), mnt, { step: 1, config: {}, train: {} }), isCkptError(/checkpoints: checkpoint folder: cannot create the folder: read-only/));
  } finally {
    umount(mnt);
  }
  const dir = tmp();
  writeFileSync(path.join(dir, 'file'), 'x');
  assert.throws(() => ensureWritableDir(path.join(dir, 'file', 'exp')), isCkptError(/file\/exp: experiment_dir: cannot create the folder: a path component is a file/));
  mkdirSync(path.join(dir, 'ok'));
  ensureWritableDir(path.join(dir, 'ok', 'a', 'b'));
  assert.ok(existsSync(path.join(dir, 'ok', 'a', 'b')));
  assert.deepEqual(readdirSync(path.join(dir, 'ok', 'a', 'b')), [], 'the probe file is removed');
});

test("a run's own files (config.yaml, metrics.jsonl) on a full disk: an error naming the file, not a raw ENOSPC", (t) => {
  const mnt = mountTmpfs('64k');
  if (typeof mnt !== 'string') { t.skip(mnt.skip); return; }
  try {
    const file = path.join(mnt, 'metrics.jsonl');
    writeRunFile(file, '{"step": 1}\n');
    const line = JSON.stringify({ step: 2, pad: 'x'.repeat(200 * 1024) }) + '\n';
    assert.throws(() => writeRunFile(file, line, { append: true }), (e: unknown) => {
      assert.ok(e instanceof SpeedTrainError, String(e));
      assert.ok(e.message.startsWith(`${file}: no space left on device (ENOSPC): more space is needed, `), e.message);
      assert.match(e.message, /free on the file system of .*; free some space \(or set experiment_dir elsewhere\) and resume/);
      return true;
    });
  } finally {
    umount(mnt);
  }
  const dir = tmp();
  writeFileSync(path.join(dir, 'file'), 'x');
  assert.throws(() => writeRunFile(path.join(dir, 'file', 'config.yaml'), 'a: 1\n'), /file\/config\.yaml: a path component is a file, not a folder \(ENOTDIR\)/);
});

test('a write probe left by a killed process is named like a temporary and removed by the next one; a live one stays', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'probe-'));
  try {
    // a pid that is not running: a finished child's
    const dead = Number(execFileSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }));
    writeFileSync(path.join(dir, `.tmp-probe-${dead}`), '');
    writeFileSync(path.join(dir, `.tmp-probe-${process.ppid}`), ''); // a running process: not ours to remove
    ensureWritableDir(dir);
    assert.deepEqual(readdirSync(dir).sort(), [`.tmp-probe-${process.ppid}`]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
