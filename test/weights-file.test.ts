// Bare DiT weights files: architecture inferred from the shapes, F32/F16/BF16,
// sampling from one, training initialised from one, contradictions refused.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { contradictions, inferDiT, modelSectionFor, readWeightsFile } from '../src/checkpoint/weights-file.js';
import { defaultsOf, type Config } from '../src/config/schema.js';
import { CheckpointError, ConfigError } from '../src/errors.js';
import { loadForGeneration } from '../src/generate/model.js';
import { asFloat32, encodeSafetensors, readSafetensors, type SafeTensor } from '../src/io/safetensors.js';
import { initFrom } from '../src/train/init-from.js';
import { createModel, modelConfigOf } from '../src/train/model.js';

const tmp = () => mkdtempSync(path.join(tmpdir(), 'wf-'));

/** A resolved config with a tiny model (DiT-S/2 narrowed to depth 2, width 64). */
function tinyConfig(model: Partial<Config['model']> = {}): Config {
  const c = structuredClone(defaultsOf()) as unknown as Config;
  c.data = { ...c.data, image_size: 8, channels: 3, num_classes: 3 };
  c.model = {
    ...c.model, name: 'DiT-S/2', input_size: 8, in_channels: 3, num_classes: 3, class_dropout_prob: 0.1,
    learn_sigma: true, depth: 2, hidden_size: 64, num_heads: 2, mlp_ratio: 4, init_from: null, ...model,
  };
  c.threads = 1;
  c.diffusion.diffusion_steps = 100;
  return c;
}

/** float32 -> IEEE half bits (round to nearest even; enough for weights of size < 1). */
function toHalf(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const e = ((u >>> 23) & 0xff) - 127 + 15;
  const m = u & 0x7fffff;
  if (e <= 0) return sign | Math.round((m | 0x800000) * 2 ** (e - 14 - 10)) ; // subnormal
  if (e >= 31) return sign | 0x7c00;
  let h = sign | (e << 10) | (m >>> 13);
  const rest = m & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
  return h;
}

/** The model's weights as a bare safetensors file (DiT state_dict names) in `dtype`. */
function writeWeights(c: Config, file: string, dtype: 'F32' | 'F16' | 'BF16', seed = 3): Map<string, Float32Array> {
  const { model } = createModel({ ...c, seed });
  const parts: [string, SafeTensor][] = [];
  for (const p of model.params()) {
    const w = model.readParam(p.name, 'model');
    let bytes: Uint8Array;
    if (dtype === 'F32') bytes = new Uint8Array(w.buffer.slice(w.byteOffset, w.byteOffset + w.byteLength));
    else if (dtype === 'BF16') bytes = new Uint8Array(Uint16Array.from(new Uint32Array(Float32Array.from(w).buffer), (u) => u >>> 16).buffer);
    else bytes = new Uint8Array(Uint16Array.from(w, toHalf).buffer);
    parts.push([p.name, { dtype, shape: p.shape, bytes }]);
  }
  model.dispose();
  writeFileSync(file, Buffer.concat(encodeSafetensors(parts)));
  const r = readSafetensors(file);
  return new Map([...r.tensors].map(([k, t]) => [k, asFloat32(t, file, k)]));
}

test('the architecture is read off the tensor shapes of models this project builds', () => {
  const cases: Partial<Config['model']>[] = [
    {},
    { learn_sigma: false, num_classes: 0 },
    { num_classes: 3, class_dropout_prob: 0 },
    { name: 'DiT-S/4', input_size: 16, in_channels: 4, mlp_ratio: 2 },
    { name: 'DiT-Ti/2', depth: null, hidden_size: null, num_heads: null },
  ];
  for (const m of cases) {
    const c = tinyConfig(m);
    const { model } = createModel(c);
    const shapes = new Map(model.params().map((p) => [p.name, p.shape]));
    const want = model.config;
    model.dispose();
    const a = inferDiT(shapes, 'x.safetensors');
    assert.deepEqual(contradictions(a, want), [], JSON.stringify(m));
    const got = modelConfigOf({ model: modelSectionFor(a, c.model, 'x.safetensors') });
    assert.deepEqual(got, want, JSON.stringify(m));
  }
  // The official DiT-XL/2 256x256 shapes: a preset, 1000 classes + the dropout row.
  const D = 1152;
  const xl = new Map<string, number[]>([
    ['x_embedder.proj.weight', [D, 4, 2, 2]], ['pos_embed', [1, 256, D]], ['blocks.0.mlp.fc1.weight', [4 * D, D]],
    ['final_layer.linear.weight', [32, D]], ['y_embedder.embedding_table.weight', [1001, D]],
    ...Array.from({ length: 28 }, (_, i) => [`blocks.${i}.attn.qkv.weight`, [3 * D, D]] as [string, number[]]),
  ]);
  const sec = modelSectionFor(inferDiT(xl, 'xl'), tinyConfig().model, 'xl');
  assert.equal(sec.name, 'DiT-XL/2');
  assert.equal(sec.input_size, 32);
  assert.equal(sec.in_channels, 4);
  assert.equal(sec.num_classes, 1000);
  assert.equal(sec.learn_sigma, true);
  assert.equal(sec.depth, null);
  assert.throws(() => inferDiT(new Map([['foo', [1]]]), 'f.safetensors'), (e: unknown) => e instanceof CheckpointError && /f\.safetensors: not a DiT state_dict: tensor x_embedder\.proj\.weight is missing/.test(e.message));
  const badPos = new Map(xl);
  badPos.set('pos_embed', [1, 250, D]);
  assert.throws(() => inferDiT(badPos, 'p'), /pos_embed: expected \[1, T, 1152\] with T a square/);
});

test('sampling loads a bare F32, F16 or BF16 weights file into the weights and the EMA', () => {
  const dir = tmp();
  const c = tinyConfig();
  for (const dtype of ['F32', 'F16', 'BF16'] as const) {
    const file = path.join(dir, `w-${dtype}.safetensors`);
    const want = writeWeights(c, file, dtype);
    const logs: string[] = [];
    // The config asks for another model: the weights define the network, and the log says so.
    const other = { ...tinyConfig({ name: 'DiT-B/4', depth: null, hidden_size: null, num_heads: null }), experiment_dir: dir };
    const g = loadForGeneration(other, file, (m) => logs.push(m));
    try {
      assert.equal(g.model.config.hiddenSize, 64);
      assert.equal(g.model.config.depth, 2);
      assert.equal(g.model.config.numClasses, 3);
      for (const p of g.model.params()) {
        assert.deepEqual(g.model.readParam(p.name, 'model'), want.get(p.name), `${dtype} ${p.name}`);
        assert.deepEqual(g.model.readParam(p.name, 'ema'), want.get(p.name), `${dtype} ema ${p.name}`);
      }
      assert.match(logs.join('\n'), /weights: .*w-.*\.safetensors: inferred DiT-S\/2 depth 2 hidden 64, input 8x8x3 \(pos_embed 16 tokens\), learn_sigma true, 3 classes \+ the class-dropout row/);
      assert.match(logs.join('\n'), /differs from the config's model: .*hiddenSize 768 -> 64/);
    } finally {
      g.model.dispose();
    }
  }
  // num_heads for a width that is not a preset and not a multiple of 64 must be given
  const c2 = tinyConfig({ hidden_size: 48, num_heads: 3 });
  const f2 = path.join(dir, 'w48.safetensors');
  writeWeights(c2, f2, 'F32');
  const { arch } = readWeightsFile(f2);
  assert.throws(() => modelSectionFor(arch, { ...c2.model, num_heads: null }, f2), (e: unknown) => e instanceof ConfigError && /model\.num_heads: .* 48 wide, not a DiT preset/.test(e.message));
  assert.equal(modelSectionFor(arch, c2.model, f2).num_heads, 3);
});

test('model.init_from loads weights into a matching model and refuses one that contradicts the config', () => {
  const dir = tmp();
  const c = tinyConfig();
  const file = path.join(dir, 'init.safetensors');
  const want = writeWeights(c, file, 'BF16', 11);
  const { model } = createModel({ ...c, seed: 0 });
  try {
    const logs: string[] = [];
    initFrom(model, { ...c, model: { ...c.model, init_from: file } }, (m) => logs.push(m));
    for (const p of model.params()) {
      assert.deepEqual(model.readParam(p.name, 'model'), want.get(p.name));
      assert.deepEqual(model.readParam(p.name, 'ema'), want.get(p.name));
    }
    assert.match(logs[0], /init_from: .*init\.safetensors: DiT-S\/2 depth 2 hidden 64/);
  } finally {
    model.dispose();
  }
  const wrong = tinyConfig({ in_channels: 4, learn_sigma: false, num_classes: 5 });
  const { model: m2 } = createModel(wrong);
  try {
    assert.throws(() => initFrom(m2, { ...wrong, model: { ...wrong.model, init_from: file } }, () => {}), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /model\.init_from: .*init\.safetensors does not fit the configured model: in channels \(model\.in_channels\): weights 3, config 4; learn_sigma \(model\.learn_sigma\): weights true, config false; class embedding rows .*: weights 4, config 6/);
      assert.match(e.message, /model\.in_channels=3 model\.num_classes=3 model\.learn_sigma=true/);
      return true;
    });
    assert.throws(() => initFrom(m2, { ...wrong, model: { ...wrong.model, init_from: path.join(dir, 'nope.bin') } }, () => {}), /neither a \.safetensors weights file nor a checkpoint directory/);
  } finally {
    m2.dispose();
  }
});

test('model.init_from also takes a checkpoint directory: its weights and EMA, not its optimizer', async () => {
  const { writeCheckpoint } = await import('../src/checkpoint/index.js');
  const dir = tmp();
  const c = tinyConfig();
  const { model: a } = createModel({ ...c, seed: 5 });
  let ckpt: string;
  const want = new Map<string, [Float32Array, Float32Array]>();
  try {
    for (const p of a.params()) {
      const w = a.readParam(p.name, 'model');
      if (p.trainable) {
        a.writeParam(p.name, 'ema', w.map((x) => x * 0.5)); // an EMA that differs from the weights
        a.writeParam(p.name, 'adam_m', w.map(() => 7));
      }
      want.set(p.name, [w, a.readParam(p.name, 'ema')]);
    }
    ckpt = writeCheckpoint(a, dir, { step: 3, config: c, train: {} });
  } finally {
    a.dispose();
  }
  const { model: b } = createModel({ ...c, seed: 0 });
  try {
    const logs: string[] = [];
    initFrom(b, { ...c, model: { ...c.model, init_from: ckpt } }, (m) => logs.push(m));
    for (const p of b.params()) {
      assert.deepEqual(b.readParam(p.name, 'model'), want.get(p.name)![0]);
      assert.deepEqual(b.readParam(p.name, 'ema'), want.get(p.name)![1]);
      if (p.trainable) assert.ok(b.readParam(p.name, 'adam_m').every((x) => x === 0), 'fresh optimizer');
    }
    assert.equal(b.getStep(), 0);
    assert.match(logs[0], /init_from: .*0000003: weights and EMA of that checkpoint \(fresh optimizer, step 0\)/);
  } finally {
    b.dispose();
  }
});
