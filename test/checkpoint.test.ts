import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync, truncateSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { listCheckpoints, loadCheckpoint, readState, resolveCheckpoint, writeCheckpoint } from '../src/checkpoint/index.js';
import { CheckpointError } from '../src/errors.js';
import { asFloat32, encodeSafetensors, f32Tensor, readSafetensors } from '../src/io/safetensors.js';
import { FakeModel } from './checkpoint-fake.js';
import { scratchDir, useAddon } from './helpers-e2e.js';

const tmp = () => scratchDir('ckpt-');

test('safetensors round trip, 8-byte aligned header, metadata', () => {
  const dir = tmp();
  const f = path.join(dir, 'a.safetensors');
  const a = Float32Array.from([1, 2, 3, 4, 5, 6]);
  writeFileSync(f, Buffer.concat(encodeSafetensors([['w', f32Tensor(a, [2, 3])], ['b', f32Tensor(Float32Array.from([7]), [1])]], { format: 'pt' })));
  const buf = readFileSync(f);
  assert.equal(Number(buf.readBigUInt64LE(0)) % 8, 0);
  const r = readSafetensors(f);
  assert.deepEqual(r.metadata, { format: 'pt' });
  assert.deepEqual(r.tensors.get('w')!.shape, [2, 3]);
  assert.deepEqual([...new Float32Array(Uint8Array.from(r.tensors.get('w')!.bytes).buffer)], [...a]);
});

test('F16 and BF16 tensors widen exactly to float32; integer tensors are refused by asFloat32', () => {
  // Bit patterns numpy writes for float16(0, -0, 1, -2.5, 65504, 2^-24, 0.1, inf, -inf), and bfloat16 patterns.
  const f16 = Uint16Array.from([0x0000, 0x8000, 0x3c00, 0xc100, 0x7bff, 0x0001, 0x2e66, 0x7c00, 0xfc00]);
  const f16Vals = [0, -0, 1, -2.5, 65504, 2 ** -24, 0.0999755859375, Infinity, -Infinity];
  const bf16 = Uint16Array.from([0x0000, 0x8000, 0x3f80, 0xc020, 0x477f, 0x3380, 0x3dcd, 0x7f80, 0xff80]);
  const bf16Vals = [0, -0, 1, -2.5, 65280, 2 ** -24, 0.10009765625, Infinity, -Infinity];
  const dir = tmp();
  const f = path.join(dir, 'half.safetensors');
  const t = (dtype: 'F16' | 'BF16', a: Uint16Array) => ({ dtype, shape: [a.length], bytes: new Uint8Array(a.buffer) });
  writeFileSync(f, Buffer.concat(encodeSafetensors([['h', t('F16', f16)], ['b', t('BF16', bf16)], ['i', { dtype: 'I32', shape: [1], bytes: new Uint8Array(4) }]])));
  const r = readSafetensors(f);
  assert.deepEqual([...asFloat32(r.tensors.get('h')!, f, 'h')], f16Vals);
  assert.deepEqual([...asFloat32(r.tensors.get('b')!, f, 'b')], bf16Vals);
  const nan = asFloat32({ dtype: 'F16', shape: [1], bytes: new Uint8Array(Uint16Array.from([0x7e00]).buffer) }, f, 'n');
  assert.ok(Number.isNaN(nan[0]));
  assert.throws(() => asFloat32(r.tensors.get('i')!, f, 'i'), /half\.safetensors: tensor i: expected a floating-point dtype .* found I32/);
});

test('truncated or tampered safetensors files are rejected with a message naming the file', () => {
  const dir = tmp();
  const good = Buffer.concat(encodeSafetensors([['w', f32Tensor(new Float32Array(6), [2, 3])], ['b', f32Tensor(new Float32Array(2), [2])]]));
  const hlen = Number(good.readBigUInt64LE(0));
  const header = JSON.parse(good.subarray(8, 8 + hlen).toString()) as Record<string, { data_offsets: number[]; shape: number[]; dtype: string }>;
  const withHeader = (h: object, tail = good.subarray(8 + hlen)) => {
    let j = JSON.stringify(h);
    j += ' '.repeat((8 - ((8 + j.length) % 8)) % 8);
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(j.length));
    return Buffer.concat([b, Buffer.from(j), tail]);
  };
  const cases: [string, Buffer, RegExp][] = [
    ['short', good.subarray(0, 5), /truncated: 5 bytes/],
    ['hlen', (() => { const b = Buffer.from(good); b.writeBigUInt64LE(10n ** 6n); return b; })(), /header length 1000000 exceeds/],
    ['json', (() => { const b = Buffer.from(good); b.write('{{{{', 8); return b; })(), /invalid JSON header/],
    ['cut', good.subarray(0, good.length - 4), /run past the end of the data|cover/],
    ['tail', Buffer.concat([good, Buffer.alloc(8)]), /cover 32 of 40 data bytes/],
    ['overlap', withHeader({ ...header, b: { ...header.b, data_offsets: [0, 8] } }), /overlap|gap|cover/],
    ['size', withHeader({ ...header, w: { ...header.w, shape: [3, 3] } }), /tensor w: 24 bytes for shape \[3,3\] F32, expected 36/],
    ['dtype', withHeader({ ...header, w: { ...header.w, dtype: 'Q8' } }), /tensor w: unsupported dtype "Q8"/],
    ['offsets', withHeader({ ...header, w: { ...header.w, data_offsets: [-1, 24] } }), /data_offsets \[-1,24\] is not/],
  ];
  for (const [name, bytes, re] of cases) {
    const f = path.join(dir, `${name}.safetensors`);
    writeFileSync(f, bytes);
    assert.throws(() => readSafetensors(f), (e: unknown) => {
      assert.ok(e instanceof CheckpointError, `${name}: ${String(e)}`);
      assert.ok(e.message.startsWith(f + ': '), `${name}: message names the file: ${e.message}`);
      assert.match(e.message, re, name);
      return true;
    });
  }
  assert.throws(() => readSafetensors(path.join(dir, 'missing.safetensors')), /missing\.safetensors: cannot open \(ENOENT\)/);
});

test('checkpoint write/load round trip, latest, and mismatches named', () => {
  const exp = tmp();
  const m = FakeModel.make();
  m.fill(3);
  const d3 = writeCheckpoint(m, exp, { step: 3, config: { a: 1 }, train: { x: 1 } });
  assert.equal(path.basename(d3), '0000003');
  m.fill(12);
  const d12 = writeCheckpoint(m, exp, { step: 12, config: { a: 1 }, train: { x: 2 } });
  assert.deepEqual(readdirSync(d12).sort(), ['ema.safetensors', 'model.safetensors', 'optimizer.safetensors', 'state.json']);
  assert.deepEqual(listCheckpoints(exp), [d3, d12]);
  assert.equal(resolveCheckpoint('latest', exp), d12);
  const opt = readSafetensors(path.join(d12, 'optimizer.safetensors'));
  assert.ok(opt.tensors.has('exp_avg.x_embedder.proj.weight') && opt.tensors.has('exp_avg_sq.blocks.0.attn.qkv.weight'));
  assert.ok(!opt.tensors.has('exp_avg.pos_embed'));
  const m2 = FakeModel.make();
  const st = loadCheckpoint(m2, d3);
  assert.equal(st.step, 3);
  assert.deepEqual(st.train, { x: 1 });
  assert.equal(m2.getStep(), 3);
  assert.deepEqual(m2.getNoiseState(), { seed: 1, offset: 30 });
  assert.equal(m2.readParam('x_embedder.proj.weight', 'ema')[0], 3.5);
  assert.equal(m2.readParam('x_embedder.proj.weight', 'adam_v')[5], 3.125);
  // Another model's shapes are refused before anything is written.
  const wide = FakeModel.make(32);
  assert.throws(() => loadCheckpoint(wide, d3), /model\.safetensors: tensor pos_embed: shape \[1,4,64\] differs from the model's \[1,4,32\]/);
  assert.equal(wide.readParam('pos_embed')[0], 0);
  truncateSync(path.join(d3, 'ema.safetensors'), 100);
  assert.throws(() => loadCheckpoint(m2, d3), /ema\.safetensors: /);
  writeFileSync(path.join(d12, 'state.json'), '{"format": "speed-train-checkpoint", "ver');
  assert.throws(() => readState(d12), /state\.json: invalid JSON/);
  assert.throws(() => resolveCheckpoint(path.join(exp, 'nope'), exp), /nope: checkpoint directory not found/);
  assert.throws(() => resolveCheckpoint('latest', tmp()), /no checkpoint found/);
});

test('a process killed while writing checkpoints leaves every complete one loadable', async () => {
  const exp = tmp();
  for (let round = 0; round < 3; round++) {
    const child = spawn(process.execPath, ['--import', 'tsx', path.resolve('test/checkpoint-writer.fixture.ts'), exp], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve(); });
      child.on('exit', (code) => reject(new Error(`writer exited early (${code})`)));
    });
    await new Promise((r) => setTimeout(r, 20 + round * 37));
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
    const all = listCheckpoints(exp);
    assert.ok(all.length >= 1);
    for (const dir of all) {
      const m = FakeModel.make(256);
      const st = loadCheckpoint(m, dir);
      // Every tensor belongs to the same write: no mix of two steps.
      assert.equal(m.readParam('blocks.0.attn.qkv.weight')[123], st.step);
      assert.equal(m.readParam('blocks.0.attn.qkv.weight', 'ema')[7], st.step + 0.5);
      assert.equal(m.getStep(), st.step);
    }
  }
});

test('DiT-S/2 checkpoint tensor names and shapes are those of DiT state_dict()', async (t) => {
  useAddon();
  let native: typeof import('../src/native.js');
  try {
    native = await import('../src/native.js');
    native.nativeInfo();
  } catch (e) {
    t.skip(`native addon not built: ${(e as Error).message}`);
    return;
  }
  const D = 384;
  const expected: [string, number[]][] = [
    ['pos_embed', [1, 256, D]], ['x_embedder.proj.weight', [D, 4, 2, 2]], ['x_embedder.proj.bias', [D]],
    ['t_embedder.mlp.0.weight', [D, 256]], ['t_embedder.mlp.0.bias', [D]], ['t_embedder.mlp.2.weight', [D, D]], ['t_embedder.mlp.2.bias', [D]],
    ['y_embedder.embedding_table.weight', [1001, D]],
  ];
  for (let i = 0; i < 12; i++) {
    expected.push(
      [`blocks.${i}.attn.qkv.weight`, [3 * D, D]], [`blocks.${i}.attn.qkv.bias`, [3 * D]],
      [`blocks.${i}.attn.proj.weight`, [D, D]], [`blocks.${i}.attn.proj.bias`, [D]],
      [`blocks.${i}.mlp.fc1.weight`, [4 * D, D]], [`blocks.${i}.mlp.fc1.bias`, [4 * D]],
      [`blocks.${i}.mlp.fc2.weight`, [D, 4 * D]], [`blocks.${i}.mlp.fc2.bias`, [D]],
      [`blocks.${i}.adaLN_modulation.1.weight`, [6 * D, D]], [`blocks.${i}.adaLN_modulation.1.bias`, [6 * D]],
    );
  }
  expected.push(
    ['final_layer.linear.weight', [32, D]], ['final_layer.linear.bias', [32]],
    ['final_layer.adaLN_modulation.1.weight', [2 * D, D]], ['final_layer.adaLN_modulation.1.bias', [2 * D]],
  );
  const model = native.DiTModel.create({ config: native.presetConfig('DiT-S/2', { inputSize: 32, inChannels: 4, numClasses: 1000, classDropoutProb: 0.1, learnSigma: true }), seed: 0, threads: 1 });
  try {
    const exp = tmp();
    const dir = writeCheckpoint(model, exp, { step: 0, config: {}, train: {} });
    for (const file of ['model.safetensors', 'ema.safetensors']) {
      const { tensors } = readSafetensors(path.join(dir, file));
      assert.deepEqual([...tensors.keys()], expected.map((e) => e[0]), file);
      for (const [name, shape] of expected) {
        assert.deepEqual(tensors.get(name)!.shape, shape, `${file} ${name}`);
        assert.equal(tensors.get(name)!.dtype, 'F32');
      }
    }
    const total = expected.reduce((s, [, sh]) => s + sh.reduce((a, b) => a * b, 1), 0);
    assert.equal(statSync(path.join(dir, 'model.safetensors')).size > total * 4, true);
    const opt = readSafetensors(path.join(dir, 'optimizer.safetensors'));
    assert.equal(opt.tensors.size, 2 * (expected.length - 1));
  } finally {
    model.dispose();
  }
});
