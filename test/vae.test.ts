// The VAE from TypeScript (src/vae): the same random weights loaded from every
// naming (diffusers new and old attention names, LDM, a full SD checkpoint) give
// bitwise the same encodings; F16/BF16 files widen exactly; the native forward
// matches a naive float64 implementation of the published architecture;
// chunking changes nothing; sampling is reproducible and centred on the mean;
// bad files (wrong shape, missing or unknown tensor, pickles, a contradicting
// config.json) are CheckpointErrors that name the tensor and what was expected.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { useAddon } from './helpers-e2e.js';
import { TINY_VAE_CONFIG, floatToBf16Bits, floatToHalfBits, tinyVaeValues, vaeParamShapes, writeTinyVae } from './helpers/tiny-vae.js';
import { naiveDecode, naiveEncode } from './helpers/naive-vae.js';

useAddon();
const { VAE } = await import('../src/vae/index.js');
const { CheckpointError } = await import('../src/errors.js');
const { encodeSafetensors, readSafetensors } = await import('../src/io/safetensors.js');

const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'vae-test-'));
const H = 16, W = 16;
const images = (n: number, seed = 1): Float32Array => Float32Array.from({ length: n * 3 * H * W }, (_, i) => Math.sin(i * 0.37 + seed) * 0.9);
const opts = { threads: 2 } as const;

test('every naming of the same weights gives bitwise the same encoder and decoder outputs', async () => {
  const files = {
    diffusers: writeTinyVae(tmp(), { naming: 'diffusers', seed: 3 }),
    legacy: writeTinyVae(tmp(), { naming: 'diffusers', seed: 3, legacyAttention: true }),
    ldm: writeTinyVae(tmp(), { naming: 'ldm', seed: 3 }),
    full: writeTinyVae(tmp(), { naming: 'ldm', seed: 3, fullCheckpoint: true }),
  };
  const x = images(2);
  let ref: { z: Float32Array; y: Float32Array } | undefined;
  for (const [kind, f] of Object.entries(files)) {
    const logs: string[] = [];
    const v = await VAE.load(f, { ...opts, log: (m) => logs.push(m) });
    try {
      assert.deepEqual(v.config, TINY_VAE_CONFIG, kind);
      assert.equal(v.downFactor, 2);
      assert.equal(v.naming, kind === 'ldm' || kind === 'full' ? 'ldm' : 'diffusers');
      assert.match(v.sha256, /^[0-9a-f]{64}$/);
      if (kind === 'full') assert.ok(logs.some((l) => /first_stage_model/.test(l) && /ignoring 2 others/.test(l)), logs.join('\n'));
      const z = await v.encode(x, 2, H, W);
      const y = await v.decode(z, 2, H / 2, W / 2);
      assert.equal(z.length, 2 * 4 * 8 * 8);
      assert.equal(y.length, 2 * 3 * H * W);
      if (!ref) ref = { z, y };
      else {
        assert.deepEqual(z, ref.z, `${kind} encode`);
        assert.deepEqual(y, ref.y, `${kind} decode`);
      }
    } finally {
      v.dispose();
    }
  }
});

test('the native VAE matches a naive float64 AutoencoderKL (encoder moments, decoder) on a tiny config', async () => {
  const cfg = { ...TINY_VAE_CONFIG, blockOutChannels: [8, 8, 16], layersPerBlock: 1, normNumGroups: 4, latentChannels: 3 };
  const f = writeTinyVae(tmp(), { naming: 'diffusers', seed: 9, config: cfg });
  const v = await VAE.load(f, opts);
  try {
    assert.equal(v.downFactor, 4);
    const w = (name: string): Float32Array => {
      const shape = vaeParamShapes(cfg).find(([n]) => n === name)?.[1];
      assert.ok(shape, name);
      return tinyVaeValues(9, name, shape);
    };
    const x = images(1, 4);
    const mom = await v.encodeMoments(x, 1, H, W);
    const ref = naiveEncode(cfg, w, Float64Array.from(x), H, W);
    const rel = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
      let num = 0, den = 1e-12;
      for (let i = 0; i < b.length; i++) {
        num = Math.max(num, Math.abs(a[i]! - b[i]!));
        den = Math.max(den, Math.abs(b[i]!));
      }
      return num / den;
    };
    assert.equal(mom.length, ref.length);
    assert.ok(rel(mom, ref) < 1e-5, `encoder moments rel ${rel(mom, ref)}`);
    const z = Float32Array.from({ length: 3 * 4 * 4 }, (_, i) => Math.cos(i));
    const y = await v.decode(z, 1, 4, 4);
    const yref = naiveDecode(cfg, w, Float64Array.from(z), 4, 4);
    assert.ok(rel(y, yref) < 1e-5, `decoder rel ${rel(y, yref)}`);
    // encode (sample = false) is the mean half of the moments
    const zm = await v.encode(x, 1, H, W);
    assert.deepEqual(zm, mom.subarray(0, zm.length));
  } finally {
    v.dispose();
  }
});

test('the naive float64 reference agrees where the CPU runs 3x3 convs as Winograd (16 channels at 64x64)', async () => {
  const cfg = { ...TINY_VAE_CONFIG, blockOutChannels: [16, 16], layersPerBlock: 1, normNumGroups: 4, latentChannels: 4 };
  const f = writeTinyVae(tmp(), { naming: 'ldm', seed: 13, config: cfg });
  const v = await VAE.load(f, opts);
  try {
    const w = (name: string): Float32Array => tinyVaeValues(13, name, vaeParamShapes(cfg).find(([n]) => n === name)![1]);
    const S = 64;
    const x = Float32Array.from({ length: 3 * S * S }, (_, i) => Math.sin(i * 0.113) * 0.9);
    const mom = await v.encodeMoments(x, 1, S, S);
    const ref = naiveEncode(cfg, w, Float64Array.from(x), S, S);
    const z = Float32Array.from({ length: 4 * 32 * 32 }, (_, i) => Math.cos(i * 0.7));
    const y = await v.decode(z, 1, 32, 32);
    const yref = naiveDecode(cfg, w, Float64Array.from(z), 32, 32);
    const rel = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
      let num = 0, den = 1e-12;
      for (let i = 0; i < b.length; i++) {
        num = Math.max(num, Math.abs(a[i]! - b[i]!));
        den = Math.max(den, Math.abs(b[i]!));
      }
      return num / den;
    };
    assert.ok(rel(mom, ref) < 1e-5, `encoder rel ${rel(mom, ref)}`);
    assert.ok(rel(y, yref) < 1e-5, `decoder rel ${rel(y, yref)}`);
  } finally {
    v.dispose();
  }
});

test('F16 and BF16 files widen exactly and decode close to the F32 file', async () => {
  const f32 = await VAE.load(writeTinyVae(tmp(), { naming: 'diffusers', seed: 5 }), opts);
  const x = images(1, 2);
  const z32 = await f32.encode(x, 1, H, W);
  const y32 = await f32.decode(z32, 1, 8, 8);
  for (const dtype of ['F16', 'BF16'] as const) {
    const v = await VAE.load(writeTinyVae(tmp(), { naming: 'ldm', seed: 5, dtype }), opts);
    try {
      const name = 'encoder.down_blocks.0.resnets.0.conv1.weight';
      const want = tinyVaeValues(5, name, [8, 8, 3, 3]);
      const got = v.readParam(name);
      const widen = (bits: number): number => {
        if (dtype === 'BF16') return new Float32Array(new Uint32Array([bits << 16]).buffer)[0]!;
        const e = (bits >> 10) & 31, m = bits & 1023, s = bits & 0x8000 ? -1 : 1;
        return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
      };
      for (let i = 0; i < want.length; i++) {
        const bits = dtype === 'F16' ? floatToHalfBits(want[i]!) : floatToBf16Bits(want[i]!);
        assert.equal(got[i], Math.fround(widen(bits)), `${dtype} element ${i}`);
      }
      const y = await v.decode(z32, 1, 8, 8);
      let err = 0, mx = 0;
      for (let i = 0; i < y.length; i++) {
        err = Math.max(err, Math.abs(y[i]! - y32[i]!));
        mx = Math.max(mx, Math.abs(y32[i]!));
      }
      assert.ok(err / mx < (dtype === 'F16' ? 5e-3 : 5e-2), `${dtype} decode rel ${err / mx}`);
      assert.ok(err > 0, `${dtype} weights are rounded, so outputs differ a little`);
    } finally {
      v.dispose();
    }
  }
  f32.dispose();
});

test('chunking gives identical results; sampling is reproducible, seed-dependent and centred on the mean', async () => {
  const v = await VAE.load(writeTinyVae(tmp(), { naming: 'diffusers', seed: 7 }), opts);
  try {
    const n = 5;
    const x = images(n, 3);
    const progress: [number, number][] = [];
    const one = await v.encode(x, n, H, W, { chunk: n });
    const ch = await v.encode(x, n, H, W, { chunk: 2, onProgress: (d, t) => progress.push([d, t]) });
    assert.deepEqual(ch, one);
    assert.deepEqual(progress, [[2, 5], [4, 5], [5, 5]]);
    const yd1 = await v.decode(one, n, 8, 8, { chunk: 1 });
    const yd5 = await v.decode(one, n, 8, 8);
    assert.deepEqual(yd1, yd5);

    const s1 = await v.encode(x, n, H, W, { sample: true, seed: 11, offset: 3, chunk: 3 });
    const s2 = await v.encode(x, n, H, W, { sample: true, seed: 11, offset: 3, chunk: 1 });
    const s3 = await v.encode(x, n, H, W, { sample: true, seed: 12, offset: 3 });
    assert.deepEqual(s1, s2, 'same seed, any chunking: same latents');
    assert.notDeepEqual(s1, s3, 'another seed: other latents');
    // (sample - mean) / std must look standard normal
    const mom = await v.encodeMoments(x, n, H, W);
    const per = 4 * 8 * 8;
    let sum = 0, sq = 0, cnt = 0;
    for (let i = 0; i < n; i++)
      for (let j = 0; j < per; j++) {
        const mu = mom[i * 2 * per + j]!, lv = Math.min(20, Math.max(-30, mom[i * 2 * per + per + j]!));
        const e = (s1[i * per + j]! - mu) / Math.exp(0.5 * lv);
        sum += e;
        sq += e * e;
        cnt++;
      }
    const mean = sum / cnt, variance = sq / cnt - mean * mean;
    assert.ok(Math.abs(mean) < 0.1, `eps mean ${mean}`);
    assert.ok(Math.abs(variance - 1) < 0.15, `eps variance ${variance}`);
  } finally {
    v.dispose();
  }
});

test('a second call while one runs is refused (busy), bad arguments are NativeErrors', async () => {
  const v = await VAE.load(writeTinyVae(tmp(), { naming: 'diffusers', seed: 2 }), opts);
  try {
    const x = images(4);
    const p1 = v.encode(x, 4, H, W, { chunk: 4 });
    await assert.rejects(v.decode(new Float32Array(4 * 8 * 8), 1, 8, 8), /busy with encode/);
    await p1;
    await assert.rejects(v.encode(x, 4, H, W - 1), /multiples of the down factor 2/);
    await assert.rejects(v.encode(x, 3, H, W), /expected n\*C\*H\*W = 2304/);
    await assert.rejects(v.decode(new Float32Array(10), 1, 8, 8), /latents has 10 elements/);
    await assert.rejects(v.encode(x, 4, H, W, { chunk: 0 }), /chunk/);
    const nan = images(1);
    nan[5] = NaN;
    await assert.rejects(v.encode(nan, 1, H, W), /images\[5\] is not finite/);
    assert.ok(v.activationBytes(2, H, W) > v.activationBytes(1, H, W));
    assert.ok(v.flops(H, W).decode > 0);
  } finally {
    v.dispose();
  }
  await assert.rejects(v.encode(images(1), 1, H, W), /disposed/);
});

// Rewrites a safetensors file with `edit` applied to its tensor map.
function rewrite(file: string, edit: (m: Map<string, { dtype: 'F32'; shape: number[]; bytes: Uint8Array }>) => void): void {
  const st = readSafetensors(file);
  const m = new Map([...st.tensors].map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, bytes: t.bytes }]));
  edit(m);
  writeFileSync(file, Buffer.concat(encodeSafetensors(m)));
}

test('bad VAE files are CheckpointErrors naming the tensor and what was expected', async () => {
  const load = (f: string, o = {}) => VAE.load(f, { ...opts, ...o });
  // wrong shape
  let f = writeTinyVae(tmp(), { naming: 'ldm', seed: 1 });
  rewrite(f, (m) => {
    const t = m.get('encoder.down.0.block.0.conv1.weight')!;
    m.set('encoder.down.0.block.0.conv1.weight', { ...t, shape: [8, 8, 9, 1] });
  });
  await assert.rejects(load(f), (e: Error) => e instanceof CheckpointError && /encoder\.down\.0\.block\.0\.conv1\.weight \(encoder\.down_blocks\.0\.resnets\.0\.conv1\.weight\) has shape \[8, 8, 9, 1\], expected \[8, 8, 3, 3\]/.test(e.message));
  // missing tensor
  f = writeTinyVae(tmp(), { naming: 'diffusers', seed: 1 });
  rewrite(f, (m) => m.delete('decoder.mid_block.attentions.0.to_k.bias'));
  await assert.rejects(load(f), (e: Error) => e instanceof CheckpointError && /1 VAE tensor\(s\) missing.*decoder\.mid_block\.attentions\.0\.to_k\.bias \[16\]/.test(e.message));
  // unknown tensors: diffusers (not in the architecture) and LDM (no mapping)
  f = writeTinyVae(tmp(), { naming: 'diffusers', seed: 1 });
  rewrite(f, (m) => m.set('encoder.down_blocks.0.resnets.0.conv3.bias', { dtype: 'F32', shape: [1], bytes: new Uint8Array(4) }));
  await assert.rejects(load(f), (e: Error) => e instanceof CheckpointError && /not part of the VAE.*encoder\.down_blocks\.0\.resnets\.0\.conv3\.bias/.test(e.message));
  f = writeTinyVae(tmp(), { naming: 'ldm', seed: 1 });
  rewrite(f, (m) => m.set('encoder.extra.weight', { dtype: 'F32', shape: [1], bytes: new Uint8Array(4) }));
  await assert.rejects(load(f), (e: Error) => e instanceof CheckpointError && /not part of an SD VAE \(ldm naming\): encoder\.extra\.weight/.test(e.message));
  // LDM training-loss tensors are known non-VAE keys: ignored
  f = writeTinyVae(tmp(), { naming: 'ldm', seed: 1 });
  rewrite(f, (m) => m.set('loss.logvar', { dtype: 'F32', shape: [1], bytes: new Uint8Array(4) }));
  (await load(f)).dispose();
  // not a VAE at all
  f = path.join(tmp(), 'dit.safetensors');
  writeFileSync(f, Buffer.concat(encodeSafetensors([['blocks.0.attn.qkv.weight', { dtype: 'F32', shape: [1], bytes: new Uint8Array(4) }]])));
  await assert.rejects(load(f), /does not look like an SD VAE/);
  // pickles, by extension and by content
  const d = tmp();
  for (const name of ['vae.ckpt', 'vae.pt', 'diffusion_pytorch_model.bin']) {
    const p = path.join(d, name);
    writeFileSync(p, Buffer.from([0x80, 0x02, 0x7d, 0x71]));
    await assert.rejects(load(p), (e: Error) => e instanceof CheckpointError && /pickle/.test(e.message) && /speed-train convert/.test(e.message) && /safetensors/.test(e.message));
  }
  const disguised = path.join(d, 'vae.safetensors');
  writeFileSync(disguised, Buffer.from([0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 0, 0, 0]));
  await assert.rejects(load(disguised), /zip archive.*arbitrary code/);
  // config.json that contradicts the shapes, and one for another model class
  const dir = tmp();
  f = writeTinyVae(dir, { naming: 'diffusers', seed: 1 });
  const cfgFile = path.join(dir, 'config.json');
  const cfg = JSON.parse(readFileSync(cfgFile, 'utf8'));
  writeFileSync(cfgFile, JSON.stringify({ ...cfg, block_out_channels: [8, 32] }));
  await assert.rejects(load(f), (e: Error) => e instanceof CheckpointError && e.file === cfgFile && /config\.json: block_out_channels is \[8,32\], but the tensor shapes of .*diffusion_pytorch_model\.safetensors say \[8,16\]/.test(e.message));
  // A config.json whose values agree with the shapes but not with each other: named by
  // the file and its key (was the native "VAE.create: config: ..." with no file).
  writeFileSync(cfgFile, JSON.stringify({ ...cfg, norm_num_groups: 3 }));
  await assert.rejects(load(f), (e: Error) => e instanceof CheckpointError && e.file === cfgFile &&
    /config\.json: norm_num_groups: 3 does not divide block_out_channels\[0\] = 8/.test(e.message));
  writeFileSync(cfgFile, JSON.stringify({ ...cfg, layers_per_block: 17 }));
  await assert.rejects(load(f), (e: Error) => e instanceof CheckpointError && e.file === cfgFile && /layers_per_block must be an integer in \[1, 16\], got 17/.test(e.message));
  writeFileSync(cfgFile, JSON.stringify(cfg));
  // A weight file whose shapes imply an out-of-range config (18 resnets per level): the
  // weight file and config.json's key name, not the native `config.layersPerBlock`.
  rewrite(f, (m) => m.set('encoder.down_blocks.0.resnets.17.conv1.weight', { dtype: 'F32', shape: [1], bytes: new Uint8Array(4) }));
  const { layers_per_block: _, ...noLayers } = cfg as Record<string, unknown>;
  writeFileSync(cfgFile, JSON.stringify(noLayers));
  await assert.rejects(load(f), (e: Error) => e instanceof CheckpointError && e.file === f &&
    /layers_per_block: must be an integer in \[1, 16\], got 18 \(inferred from the tensor shapes\)/.test(e.message) && !/layersPerBlock/.test(e.message));
  writeFileSync(cfgFile, JSON.stringify({ ...cfg, _class_name: 'UNet2DModel' }));
  await assert.rejects(load(f), /expected "AutoencoderKL"/);
});

test('without config.json the config is inferred from the shapes and reported', async () => {
  const cfg = { ...TINY_VAE_CONFIG, blockOutChannels: [32, 32], normNumGroups: 32 };
  const logs: string[] = [];
  const v = await VAE.load(writeTinyVae(tmp(), { naming: 'ldm', seed: 4, config: cfg, configJson: false }), { ...opts, log: (m) => logs.push(m) });
  assert.deepEqual(v.config, cfg);
  assert.equal(v.scalingFactor, undefined);
  assert.ok(logs.some((l) => /inferred from shapes: .*block_out_channels = \[32,32\].*norm_num_groups = 32 \(assumed/.test(l)), logs.join('\n'));
  v.dispose();
  // groups not inferable and 32 does not divide the channels: a clear error; the option fixes it
  const f = writeTinyVae(tmp(), { naming: 'ldm', seed: 4, configJson: false });
  await assert.rejects(VAE.load(f, opts), /norm_num_groups cannot be inferred/);
  const v2 = await VAE.load(f, { ...opts, config: { normNumGroups: 4 } });
  assert.deepEqual(v2.config, TINY_VAE_CONFIG);
  v2.dispose();
});

test('bench: VAE models give encode/decode rows with FLOP rates and the GEMM ratio', async () => {
  const { runBench } = await import('../src/native.js');
  const rows = await runBench({ models: ['VAE-tiny@16'], batches: [2], device: 'cpu', threads: 1, iters: 1, kernels: false, gemmSize: 64 });
  const enc = rows.find((r) => r.what === 'vae encode');
  const dec = rows.find((r) => r.what === 'vae decode');
  assert.ok(enc && dec, JSON.stringify(rows));
  for (const r of [enc, dec]) {
    assert.equal(r.model, 'VAE-tiny@16');
    assert.equal(r.batch, 2);
    assert.ok(r.imagesPerSec > 0 && r.gflops > 0 && r.ratioToGemm > 0 && r.activationMB > 0, JSON.stringify(r));
  }
  await assert.rejects(runBench({ models: ['VAE-f9@256'], batches: [1], device: 'cpu' }), /expected VAE-f8@SIZE or VAE-tiny@SIZE/);
  await assert.rejects(runBench({ models: ['VAE-f8@100'], batches: [1], device: 'cpu' }), /multiple of 8/);
});

test('vae.path may be a diffusers model folder: its diffusion_pytorch_model.safetensors, else its only .safetensors', async () => {
  const file = writeTinyVae(tmp(), { naming: 'diffusers', seed: 4 });
  const byFile = await VAE.load(file, opts);
  const byDir = await VAE.load(path.dirname(file), opts);
  assert.equal(byDir.file, file);
  assert.equal(byDir.sha256, byFile.sha256);
  const x = images(1);
  assert.deepEqual(await byDir.encode(x, 1, H, W), await byFile.encode(x, 1, H, W));
  byFile.dispose();
  byDir.dispose();
  // an LDM-named file alone in a folder is found too
  const ldm = writeTinyVae(tmp(), { naming: 'ldm', seed: 4 });
  const one = await VAE.load(path.dirname(ldm), opts);
  assert.equal(one.file, ldm);
  one.dispose();
  const empty = tmp();
  await assert.rejects(VAE.load(empty, opts), (e: Error) => e instanceof CheckpointError && e.message.includes(empty) && /folder without a \.safetensors file/.test(e.message));
  const two = tmp();
  writeFileSync(path.join(two, 'a.safetensors'), readFileSync(ldm));
  writeFileSync(path.join(two, 'b.safetensors'), readFileSync(ldm));
  await assert.rejects(VAE.load(two, opts), /2 \.safetensors files \(a\.safetensors, b\.safetensors\) and none named diffusion_pytorch_model\.safetensors/);
});
