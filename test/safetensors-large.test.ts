// Checkpoints of any size: a valid safetensors file over 4 GiB
// (sparse: header and a few real tensors written, the rest holes that read as
// zeros) is read per tensor with bounded memory; and, behind a knob, a
// DiT-XL/2-sized checkpoint (675M parameters, 10.8 GB) is written and resumed.
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as zlib from 'node:zlib';

import { loadCheckpoint, verifyCheckpoint, writeCheckpoint, type CheckpointModel } from '../src/checkpoint/index.js';
import { SafetensorsReader, asFloat32, readSafetensorsHeader, safetensorsHeader, type SafeDtype } from '../src/io/safetensors.js';
import type { NoiseState, ParamInfo, Slot } from '../src/native.js';

const GiB = 2 ** 30;

test('a sparse 5.0 GiB safetensors file: header checked, tensors past 4 GiB read exactly, a 1 GiB tensor checksummed in bounded memory', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'st-large-'));
  const file = path.join(dir, 'big.safetensors');
  try {
    const pad = (i: number) => ({ name: `pad.${i}`, dtype: 'F32' as SafeDtype, shape: [GiB / 4] });
    const a = Float32Array.from([1.5, -2, 3.25, 4, 1e-30, -0]);
    const b = Uint16Array.from([0x3f80, 0xc020, 0x7f80, 0x0000]); // bf16 1, -2.5, inf, 0
    const specs = [pad(0), pad(1), pad(2), pad(3), pad(4), { name: 'tail.a', dtype: 'F32' as SafeDtype, shape: [2, 3] }, { name: 'tail.b', dtype: 'BF16' as SafeDtype, shape: [4] }];
    const head = safetensorsHeader(specs, { note: 'sparse' });
    const dataStart = head.byteLength;
    const aAt = dataStart + 5 * GiB;
    const bAt = aAt + a.byteLength;
    const total = bAt + b.byteLength;
    const fd = openSync(file, 'w');
    try {
      writeSync(fd, head, 0, head.byteLength, 0);
      ftruncateSync(fd, total); // the pads are holes: zeros, valid F32
      writeSync(fd, new Uint8Array(a.buffer), 0, a.byteLength, aAt);
      writeSync(fd, new Uint8Array(b.buffer), 0, b.byteLength, bAt);
    } finally {
      closeSync(fd);
    }
    assert.ok(statSync(file).size > 4 * GiB + 2 ** 20, 'over 4 GiB');
    const rss0 = process.memoryUsage().rss;
    const h = readSafetensorsHeader(file);
    assert.deepEqual(h.metadata, { note: 'sparse' });
    assert.equal(h.entries.length, 7);
    const r = SafetensorsReader.open(file);
    try {
      assert.equal(r.size, total);
      assert.equal(r.get('tail.a')!.offset, aAt);
      assert.ok(r.get('tail.a')!.offset > 2 ** 32);
      assert.deepEqual([...asFloat32(r.read('tail.a'), file, 'tail.a')], [...a]);
      assert.deepEqual([...asFloat32(r.read('tail.b'), file, 'tail.b')], [1, -2.5, Infinity, 0]);
      // pad.4 spans bytes [4 GiB, 5 GiB) of the data: streamed CRC equals the CRC of 1 GiB of zeros.
      const zeros = Buffer.alloc(16 << 20);
      let want = 0;
      for (let i = 0; i < GiB / zeros.length; i++) want = zlib.crc32(zeros, want);
      assert.equal(r.crc32('pad.4'), want >>> 0);
    } finally {
      r.close();
    }
    const grown = process.memoryUsage().rss - rss0;
    assert.ok(grown < 256 * 2 ** 20, `RSS grew by ${(grown / 2 ** 20).toFixed(0)} MiB reading a 5 GiB file`);
    // A header claiming more than the file holds is still refused.
    truncateSync(file, total - 1);
    assert.throws(() => SafetensorsReader.open(file), /tensor tail\.b: data_offsets .* run past the end of the data/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** DiT-XL/2's parameters (facebookresearch/DiT state_dict names and shapes) for 256x256 ImageNet. */
function xl2Params(): ParamInfo[] {
  const D = 1152;
  const list: [string, number[], boolean][] = [
    ['pos_embed', [1, 256, D], false], ['x_embedder.proj.weight', [D, 4, 2, 2], true], ['x_embedder.proj.bias', [D], true],
    ['t_embedder.mlp.0.weight', [D, 256], true], ['t_embedder.mlp.0.bias', [D], true], ['t_embedder.mlp.2.weight', [D, D], true], ['t_embedder.mlp.2.bias', [D], true],
    ['y_embedder.embedding_table.weight', [1001, D], true],
  ];
  for (let i = 0; i < 28; i++) {
    list.push(
      [`blocks.${i}.attn.qkv.weight`, [3 * D, D], true], [`blocks.${i}.attn.qkv.bias`, [3 * D], true],
      [`blocks.${i}.attn.proj.weight`, [D, D], true], [`blocks.${i}.attn.proj.bias`, [D], true],
      [`blocks.${i}.mlp.fc1.weight`, [4 * D, D], true], [`blocks.${i}.mlp.fc1.bias`, [4 * D], true],
      [`blocks.${i}.mlp.fc2.weight`, [D, 4 * D], true], [`blocks.${i}.mlp.fc2.bias`, [D], true],
      [`blocks.${i}.adaLN_modulation.1.weight`, [6 * D, D], true], [`blocks.${i}.adaLN_modulation.1.bias`, [6 * D], true],
    );
  }
  list.push(
    ['final_layer.linear.weight', [32, D], true], ['final_layer.linear.bias', [32], true],
    ['final_layer.adaLN_modulation.1.weight', [2 * D, D], true], ['final_layer.adaLN_modulation.1.bias', [2 * D], true],
  );
  return list.map(([name, shape, trainable]) => ({ name, shape, numel: shape.reduce((x, y) => x * y, 1), trainable }));
}

/**
 * A model of any size that holds no tensors: values are a hash of (slot,
 * parameter, index), and writes are compared against it. Memory: one tensor.
 */
class SyntheticModel implements CheckpointModel {
  noise: NoiseState = { seed: 7, offset: 123456789 };
  step = 4000;
  mismatches = 0;
  written = 0;
  constructor(readonly infos: ParamInfo[]) {}
  params(): ParamInfo[] { return this.infos; }
  private seed(name: string, slot: Slot): number { return zlib.crc32(`${slot}:${name}`); }
  readParam(name: string, slot: Slot = 'model'): Float32Array {
    const p = this.infos.find((q) => q.name === name)!;
    const out = new Float32Array(p.numel);
    let h = this.seed(name, slot);
    for (let i = 0; i < out.length; i++) { h = (Math.imul(h, 1664525) + 1013904223) >>> 0; out[i] = (h >>> 8) / 2 ** 24 - 0.5; }
    return out;
  }
  writeParam(name: string, slot: Slot, data: Float32Array): void {
    const want = this.readParam(name, slot);
    const u = new Uint32Array(data.buffer, data.byteOffset, data.length);
    const w = new Uint32Array(want.buffer);
    for (let i = 0; i < w.length; i++) if (u[i] !== w[i]) { this.mismatches++; break; }
    this.written += data.length;
  }
  getNoiseState(): NoiseState { return { ...this.noise }; }
  setNoiseState(s: NoiseState): void { this.noise = { ...s }; }
  getStep(): number { return this.step; }
  setStep(s: number): void { this.step = s; }
}

// 10.8 GB on disk and a few minutes: a local check, not CI.
test('a DiT-XL/2-sized checkpoint (675M parameters) is written, verified and resumed in bounded memory', { skip: process.env.SPEED_TRAIN_XL_TEST ? false : 'set SPEED_TRAIN_XL_TEST=1 (writes 10.8 GB to the tmp folder)' }, () => {
  const params = xl2Params();
  const n = params.reduce((s, p) => s + p.numel, 0);
  assert.ok(n > 675e6 && n < 676e6, `XL/2 has ${n} parameters`);
  const exp = mkdtempSync(path.join(process.env.SPEED_TRAIN_XL_DIR ?? tmpdir(), 'st-xl-'));
  try {
    const m = new SyntheticModel(params);
    const rss0 = process.memoryUsage().rss;
    let t = Date.now();
    const dir = writeCheckpoint(m, exp, { step: 4000, config: {}, train: {} });
    const writeS = (Date.now() - t) / 1000;
    const sizes = ['model', 'ema', 'optimizer'].map((f) => statSync(path.join(dir, `${f}.safetensors`)).size);
    assert.ok(sizes[2] > 5 * GiB, `optimizer file ${sizes[2]} bytes`);
    t = Date.now();
    verifyCheckpoint(dir);
    const verifyS = (Date.now() - t) / 1000;
    t = Date.now();
    const m2 = new SyntheticModel(params);
    m2.step = 0;
    m2.noise = { seed: 0, offset: 0 };
    const st = loadCheckpoint(m2, dir);
    const loadS = (Date.now() - t) / 1000;
    assert.equal(st.step, 4000);
    assert.equal(m2.mismatches, 0);
    assert.equal(m2.written, n + 3 * (n - 256 * 1152)); // model, then EMA, m, v of the trainable ones (pos_embed is fixed)
    assert.equal(m2.step, 4000);
    assert.deepEqual(m2.noise, { seed: 7, offset: 123456789 });
    const grown = process.memoryUsage().rss - rss0;
    process.stdout.write(`# XL/2 checkpoint: files ${sizes.map((s) => (s / 1e9).toFixed(2)).join(' + ')} GB; write ${writeS.toFixed(1)} s, verify ${verifyS.toFixed(1)} s, load ${loadS.toFixed(1)} s; RSS grew ${(grown / 2 ** 20).toFixed(0)} MiB\n`);
    assert.ok(grown < 512 * 2 ** 20, `RSS grew by ${(grown / 2 ** 20).toFixed(0)} MiB`);
  } finally {
    rmSync(exp, { recursive: true, force: true });
  }
});

const MODEL = process.env.SPEED_TRAIN_XL_MODEL ?? 'DiT-XL/2'; // a smaller preset to try the test quickly
// The real addon at XL/2 size: ~13.5 GB of memory (weights, EMA, Adam moments,
// gradients) twice in sequence and 10.8 GB on disk: a local check, not CI.
test('a real DiT-XL/2 checkpoint: written, loaded for sampling, and sampling gives bitwise the same images', { skip: process.env.SPEED_TRAIN_XL_SAMPLE ? false : 'set SPEED_TRAIN_XL_SAMPLE=1 (needs ~15 GB of free memory)' }, async () => {
  const { useAddon } = await import('./helpers-e2e.js');
  useAddon();
  const { writeFileSync } = await import('node:fs');
  const { loadConfig } = await import('../src/config/load.js');
  const { createModel } = await import('../src/train/model.js');
  const { generate, loadForGeneration } = await import('../src/generate/index.js');
  const dir = mkdtempSync(path.join(process.env.SPEED_TRAIN_XL_DIR ?? tmpdir(), 'st-xl-real-'));
  try {
    const exp = path.join(dir, 'exp');
    const file = path.join(dir, 'xl.yaml');
    writeFileSync(file, [
      `experiment_dir: ${exp}`, 'seed: 5', 'threads: 2',
      `model: {name: ${MODEL}, input_size: 32, in_channels: 4, num_classes: 1000}`,
      'data: {name: synthetic, image_size: 32, channels: 4, num_classes: 1000}',
      'sample: {sampler: ddim, steps: ddim2, guidance_scale: 1.0, clip_denoised: false}',
    ].join('\n') + '\n');
    const c = loadConfig(file).config;
    const labels = Int32Array.from([207]);
    let t = Date.now();
    const { model, coefs } = createModel(c);
    let before: Float32Array;
    try {
      if (MODEL === 'DiT-XL/2') assert.ok(model.numTrainable() > 674e6, `${model.numTrainable()} trainable`);
      // DiT zero-initialises adaLN and the final layer (the output would be 0 for any
      // weights): give the EMA weights random values there so the images depend on them.
      const r = new (await import('../src/rng.js')).Rng(1);
      for (const p of model.params()) {
        if (!/adaLN_modulation\.1\.weight|final_layer\.linear\.weight/.test(p.name)) continue;
        model.writeParam(p.name, 'ema', Float32Array.from({ length: p.numel }, () => (r.uniform() - 0.5) * 0.02));
      }
      before = await generate({ model, coefs, ckpt: '', step: 0, trained: c }, c.sample, labels, 1);
      const sampleS = (Date.now() - t) / 1000;
      t = Date.now();
      writeCheckpoint(model, exp, { step: 1, config: c, train: {} });
      process.stdout.write(`# ${MODEL} real: create + sample ${sampleS.toFixed(1)} s, checkpoint written in ${((Date.now() - t) / 1000).toFixed(1)} s\n`);
    } finally {
      model.dispose();
    }
    t = Date.now();
    const g = loadForGeneration(c, 'latest');
    try {
      const after = await generate(g, c.sample, labels, 1);
      process.stdout.write(`# ${MODEL} real: loaded for generation and sampled in ${((Date.now() - t) / 1000).toFixed(1)} s; peak RSS ${(process.resourceUsage().maxRSS / 2 ** 20).toFixed(1)} GiB\n`);
      assert.ok(before.some((v) => v !== 0));
      assert.ok(Buffer.from(after.buffer).equals(Buffer.from(before.buffer)), 'the loaded checkpoint samples the same images');
    } finally {
      g.model.dispose();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
