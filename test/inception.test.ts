// Inception-v3 from TypeScript (src/eval/inception.ts).
//
// Without PyTorch: a weight file written here from pytorch-fid's state dict names and
// shapes (test/fixtures/inception/state_dict.json, listed by tools/torch_inception.py
// from torchvision) with every conv zero, so each BasicConv2d outputs relu(bn.bias):
// pool3 must be Mixed_7c's branches in torch.cat order, spatial Mixed_6d.branch1x1[:7]
// in (h, w, c) order, logits fc(pool3). Bad files and devices are typed errors.
//
// With Debian's python3-torch: tools/torch_inception.py regenerates the seeded weights
// of test/fixtures/inception/seed.json; the outputs on the committed images
// (inputs.npz: 2 RGB 32x32, 1 grey 45x37, 1 RGBA 299x299) must match the committed
// PyTorch outputs (expected.npz) within 1e-4 relative (max |diff| / max |ref|).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';

import { useAddon } from './helpers-e2e.js';

useAddon();
const { InceptionV3, inceptionFeatureSpace, PYTORCH_FID_WEIGHTS_URL } = await import('../src/eval/inception.js');
const { CheckpointError } = await import('../src/errors.js');
const { NativeError, nativeInfo } = await import('../src/native.js');
const { encodeSafetensors, f32Tensor } = await import('../src/io/safetensors.js');
const { readNpz } = await import('../src/io/npz.js');
const { convertPt } = await import('../src/convert/index.js');

const FIX = path.resolve('test/fixtures/inception');
const NAMES = JSON.parse(readFileSync(path.join(FIX, 'state_dict.json'), 'utf8')) as [string, number[]][];
// each weight file is ~95 MB: every scratch folder goes when the file's tests end
const scratch: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(path.join(tmpdir(), 'inception-test-'));
  scratch.push(d);
  return d;
};
after(() => {
  for (const d of scratch) rmSync(d, { recursive: true, force: true });
});

/** A python3 that imports torch and torchvision, or null. */
const TORCH_PY = (() => {
  for (const py of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(py, ['-c', 'import torch, torchvision'], { encoding: 'utf8' });
    if (r.status === 0) return py;
  }
  return null;
})();

// bias of channel c of the BasicConv2d `conv`: distinct, some negative (the ReLU cuts those)
const biasOf = (conv: string, c: number): number => {
  let h = 0;
  for (const ch of conv) h = (h * 31 + ch.charCodeAt(0)) % 997;
  return Math.fround((((h / 997) + 0.37 * c) % 1.5) - 0.25);
};
const fcW = (i: number): number => Math.fround(((i * 7919) % 13) / 13 - 0.5);

function writeSynthetic(file: string, edit?: (tensors: [string, ReturnType<typeof f32Tensor>][]) => void): void {
  const tensors: [string, ReturnType<typeof f32Tensor>][] = NAMES.map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const d = new Float32Array(n);
    const conv = name.replace(/\.bn\..*$/, '');
    if (name.endsWith('.bn.bias')) for (let c = 0; c < n; c++) d[c] = biasOf(conv, c);
    else if (name.endsWith('.running_var')) d.fill(1);
    else if (name === 'fc.weight') for (let i = 0; i < n; i++) d[i] = fcW(i);
    else if (name === 'fc.bias') for (let i = 0; i < n; i++) d[i] = (i % 5) * 0.1;
    return [name, f32Tensor(d, shape)];
  });
  edit?.(tensors);
  const parts = encodeSafetensors(tensors);
  writeFileSync(file, Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength))));
}

/** max |a - b| / max |b| */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let num = 0;
  let den = 1e-30;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

test('the state dict names are pytorch-fid\'s, and outputs follow torch.cat and ADM\'s (h, w, c) order', async () => {
  assert.equal(NAMES.length, 94 * 5 + 2);
  const dir = tmp();
  const file = path.join(dir, 'synthetic.safetensors');
  writeSynthetic(file);
  const net = await InceptionV3.load(file, { threads: 2 });
  try {
    const N = 2, H = 13, W = 11, C = 3;
    const data = Uint8Array.from({ length: N * H * W * C }, (_, i) => (i * 31) & 255);
    const space = inceptionFeatureSpace(net, 1);
    assert.equal(space.name, 'inception-v3');
    assert.equal(space.dim, 2048);
    assert.deepEqual(space.extras, { logits: 1008, spatial: 2023 });
    const out = await space.extractAll!({ data, N, H, W, C });
    const pool3: number[] = [];
    for (const [b, n] of [['branch1x1', 320], ['branch3x3_2a', 384], ['branch3x3_2b', 384], ['branch3x3dbl_3a', 384], ['branch3x3dbl_3b', 384], ['branch_pool', 192]] as const) {
      for (let c = 0; c < n; c++) pool3.push(Math.max(0, biasOf(`Mixed_7c.${b}`, c)));
    }
    assert.ok(relErr(out.features, [...pool3, ...pool3]) < 1e-6, 'pool3');
    const spatial: number[] = [];
    for (let p = 0; p < 17 * 17; p++) for (let c = 0; c < 7; c++) spatial.push(Math.max(0, biasOf('Mixed_6d.branch1x1', c)));
    assert.ok(relErr(out.spatial!, [...spatial, ...spatial]) < 1e-6, 'spatial');
    const logits = new Float64Array(1008);
    for (let o = 0; o < 1008; o++) {
      let s = (o % 5) * 0.1;
      for (let k = 0; k < 2048; k++) s += fcW(o * 2048 + k) * pool3[k];
      logits[o] = s;
    }
    assert.ok(relErr(out.logits!.subarray(1008), logits) < 1e-5, 'logits');
    const f = await space.extract({ data, N, H, W, C });
    assert.deepEqual([...f], [...out.features]);
    // no images, no outputs (grey and RGBA inputs are checked against PyTorch below)
    const empty = await net.run({ data: new Uint8Array(0), N: 0, H: 5, W: 5, C: 3 });
    assert.equal(empty.pool3.length, 0);
  } finally {
    net.dispose();
  }
});

test('bad weight files and devices are clear errors', async () => {
  const dir = tmp();
  const missing = path.join(dir, 'pt_inception-2015-12-05-6726825d.pth');
  await assert.rejects(InceptionV3.load(missing), (e: Error) => {
    assert.ok(e instanceof CheckpointError, String(e));
    assert.ok(e.message.includes(PYTORCH_FID_WEIGHTS_URL) && e.message.includes(path.resolve(missing)), e.message);
    return true;
  });
  await assert.rejects(InceptionV3.load(missing, { device: 'gpu' as 'cuda' }), /InceptionV3\.load: device must be 'cpu' or 'cuda', got gpu/);
  await assert.rejects(InceptionV3.load(missing, { device: 'cuda', cudaMath: 'fp16' as 'fp32' }), /InceptionV3\.load: cudaMath must be 'bf16', 'tf32' or 'fp32', got "fp16"/);

  const good = path.join(dir, 'good.safetensors');
  writeSynthetic(good);
  const wrongShape = path.join(dir, 'shape.safetensors');
  writeSynthetic(wrongShape, (t) => {
    const i = t.findIndex(([n]) => n === 'Mixed_6b.branch7x7_2.conv.weight');
    t[i] = [t[i][0], f32Tensor(new Float32Array(128 * 128 * 7), [128, 128, 7, 1])];
  });
  await assert.rejects(InceptionV3.load(wrongShape), (e: Error) => e instanceof CheckpointError && /Mixed_6b\.branch7x7_2\.conv\.weight has shape \[128,128,7,1\], expected \[128,128,1,7\]/.test(e.message));
  const lacking = path.join(dir, 'lacking.safetensors');
  writeSynthetic(lacking, (t) => t.splice(t.findIndex(([n]) => n === 'fc.bias'), 1));
  await assert.rejects(InceptionV3.load(lacking), (e: Error) => e instanceof CheckpointError && /tensor fc\.bias \[1008\] is missing/.test(e.message));
  const extra = path.join(dir, 'extra.safetensors');
  writeSynthetic(extra, (t) => t.push(['AuxLogits.fc.weight', f32Tensor(new Float32Array(4), [2, 2])]));
  await assert.rejects(InceptionV3.load(extra), (e: Error) => e instanceof CheckpointError && /AuxLogits\.fc\.weight/.test(e.message));
  const negVar = path.join(dir, 'negvar.safetensors');
  writeSynthetic(negVar, (t) => {
    const i = t.findIndex(([n]) => n === 'Mixed_5b.branch1x1.bn.running_var');
    t[i][1] = f32Tensor(new Float32Array(64).fill(-1), [64]);
  });
  await assert.rejects(InceptionV3.load(negVar), (e: Error) => e instanceof CheckpointError && /Mixed_5b\.branch1x1\.bn\.running_var.*variance must be >= 0/.test(e.message));

  // a file named like pytorch-fid's whose sha256 is not pytorch-fid's: one warning
  const named = path.join(dir, 'pt_inception-2015-12-05-6726825d.pth');
  copyFileSync(good, named);
  const warnings: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((m: string | Uint8Array) => {
    warnings.push(String(m));
    return true;
  }) as typeof process.stderr.write;
  try {
    await assert.rejects(InceptionV3.load(named), CheckpointError); // a safetensors file is not a .pth
    await assert.rejects(InceptionV3.load(named), CheckpointError);
  } finally {
    process.stderr.write = write;
  }
  assert.equal(warnings.filter((w) => w.includes('does not start with 6726825d')).length, 1, warnings.join(''));

  const net = await InceptionV3.load(good, { threads: 1 });
  await assert.rejects(net.run({ data: new Uint8Array(2 * 4 * 4 * 2), N: 2, H: 4, W: 4, C: 2 }), /1 \(grey\), 3 \(RGB\) or 4 \(RGBA\)/);
  await assert.rejects(net.run({ data: new Uint8Array(7), N: 1, H: 2, W: 2, C: 3 }), /expected N·H·W·C/);
  net.dispose();
  await assert.rejects(net.run({ data: new Uint8Array(12), N: 1, H: 2, W: 2, C: 3 }), /disposed/);
});

// Seeded He-uniform convs with BatchNorm scale 1 (writeSynthetic's convs are zero): the features
// then depend on every conv, pool, resize and concat of the network.
function randomConvs(tensors: [string, ReturnType<typeof f32Tensor>][]): void {
  let state = 12345;
  const next = (): number => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state / 2 ** 32 - 0.5;
  };
  for (let i = 0; i < tensors.length; i++) {
    const [name, t] = tensors[i];
    const shape = t.shape;
    const n = shape.reduce((a, b) => a * b, 1);
    if (name.endsWith('.conv.weight')) {
      const bound = Math.sqrt(6 / (n / shape[0]));
      tensors[i] = [name, f32Tensor(Float32Array.from({ length: n }, () => 2 * bound * next()), shape)];
    } else if (name.endsWith('.bn.weight')) {
      tensors[i] = [name, f32Tensor(new Float32Array(n).fill(1), shape)];
    }
  }
}

test('device cuda: a clear error without a CUDA backend or GPU; with one, the CPU\'s features', async () => {
  const dir = tmp();
  const file = path.join(dir, 'random.safetensors');
  writeSynthetic(file, randomConvs);
  const cuda = nativeInfo().cuda;
  if (!cuda.available) {
    // refused before the 95 MB of weights are read, naming why (a CPU-only build, no driver, no device)
    await assert.rejects(InceptionV3.load(file, { device: 'cuda' }), (e: Error) => {
      assert.ok(e instanceof NativeError, String(e));
      assert.ok(e.message.includes(`InceptionV3.load: device 'cuda' is not available: ${cuda.reason}`), e.message);
      return true;
    });
    return;
  }
  const N = 3, H = 32, W = 32, C = 3;
  const data = Uint8Array.from({ length: N * H * W * C }, (_, i) => (i * 2654435761) >>> 24);
  const cpu = await InceptionV3.load(file, { threads: 2 });
  const gpu = await InceptionV3.load(file, { device: 'cuda' });
  try {
    assert.equal(gpu.device, 'cuda');
    const a = await cpu.run({ data, N, H, W, C }, 3);
    const b = await gpu.run({ data, N, H, W, C }, 2);
    for (const o of ['pool3', 'logits', 'spatial'] as const) {
      const err = relErr(b[o], a[o]);
      console.log(`# cuda vs cpu ${o}: max rel err ${err.toExponential(2)}`);
      assert.ok(err < 1e-4, `${o}: ${err}`);
    }
  } finally {
    cpu.dispose();
    gpu.dispose();
  }
});

test('matches PyTorch (tools/torch_inception.py) on seeded weights within 1e-4', { skip: TORCH_PY ? false : 'no python3 with torch and torchvision', timeout: 900_000 }, async () => {
  const dir = tmp();
  const { seed } = JSON.parse(readFileSync(path.join(FIX, 'seed.json'), 'utf8')) as { seed: number };
  const r = spawnSync(TORCH_PY!, ['tools/torch_inception.py', 'weights', '--seed', String(seed), '--out', dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const inputs = readNpz(path.join(FIX, 'inputs.npz'));
  const want = readNpz(path.join(FIX, 'expected.npz'));
  const files: [string, string][] = [['zip .pt', path.join(dir, 'inception.pt')]];
  const st = path.join(dir, 'inception.safetensors');
  convertPt(path.join(dir, 'inception.pt'), st, { log: () => {} });
  files.push(['safetensors', st]);
  // pytorch-fid's own file is a legacy (torch < 1.6) torch.save: the restricted reader takes it as it is
  files.push(['legacy .pth', path.join(dir, 'inception.pth')]);
  const ref: Record<string, Float32Array> = {};
  for (const [kind, file] of files) {
    const net = await InceptionV3.load(file, { threads: 2 });
    try {
      for (const key of ['a', 'b', 'c']) {
        const img = inputs[key];
        const [N, H, W, C] = img.shape;
        const out = await net.run({ data: img.data as Uint8Array, N, H, W, C }, 2);
        for (const o of ['pool3', 'logits', 'spatial'] as const) {
          const w = want[`${key}_${o}`];
          assert.deepEqual(w.shape, [N, { pool3: 2048, logits: 1008, spatial: 2023 }[o]]);
          const err = relErr(out[o], w.data as Float32Array);
          if (kind === 'zip .pt') console.log(`# ${key} ${img.shape.join('x')} ${o}: max rel err ${err.toExponential(2)}`);
          assert.ok(err < 1e-4, `${kind} ${key} ${o}: ${err}`);
          // every reader gives the same weights, hence bitwise the same outputs
          const id = `${key}_${o}`;
          if (ref[id]) assert.deepEqual(out[o], ref[id], `${kind} ${id}`);
          else ref[id] = out[o];
        }
      }
    } finally {
      net.dispose();
    }
  }
  assert.ok(existsSync(path.join(dir, 'inception.pth')));
});
