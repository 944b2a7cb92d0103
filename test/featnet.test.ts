// The feature network from TypeScript, both architectures: it learns the
// synthetic classes (held-out accuracy far above chance), saves and loads
// bit-exactly, resolves as a named feature space, and rejects bad arguments and
// foreign files; files saved before the CNN existed (no arch) load as a ViT.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { useAddon } from './helpers-e2e.js';

useAddon();
const { SyntheticDataset } = await import('../src/data/index.js');
const fn = await import('../src/featnet/index.js');
type FeatNetConfig = import('../src/featnet/index.js').FeatNetConfig;
const { resolveFeatureSpace, extractFeatures } = await import('../src/eval/index.js');
const { extractAllFeatures } = await import('../src/eval/features.js');
const { checkFeatureSpaceAccuracy, classifierAccuracy } = await import('../src/eval/evaluate.js');

const tiny = { arch: 'vit' as const, hiddenSize: 32, depth: 2, numHeads: 2, mlpRatio: 2 };
const tinyCnn = { arch: 'cnn' as const, channels: [8, 16], fcHidden: 32 };
const data = (size: number, seed = 5) => new SyntheticDataset({ seed, size, imageSize: 8, channels: 3, numClasses: 4 });

for (const config of [tiny, tinyCnn]) test(`the ${config.arch} feature network learns the synthetic classes: held-out accuracy far above chance`, async () => {
  const t0 = Date.now();
  const r = await fn.trainFeatNet({ dataset: data(800), heldOutFraction: 0.25, config, steps: 150, batchSize: 32, lr: 3e-3, seed: 1, threads: 1 });
  try {
    assert.equal(r.heldOutSize, 200);
    assert.equal(r.trainSize, 600);
    // 4 classes: chance is 0.25
    assert.ok(r.accuracy >= 0.7, `held-out accuracy ${r.accuracy}`);
    assert.ok(r.finalLoss < Math.log(4) * 0.6, `final loss ${r.finalLoss}`);
    assert.equal(r.net.getStep(), 150);
    // the split is disjoint and seeded
    const s = fn.splitIndices(800, 0.25, 1);
    assert.equal(new Set([...s.train, ...s.heldOut]).size, 800);
    assert.deepEqual(fn.splitIndices(800, 0.25, 1).heldOut, s.heldOut);

    const dir = mkdtempSync(path.join(tmpdir(), 'st-featnet-'));
    const file = path.join(dir, 'net.safetensors');
    fn.saveFeatNet(file, r.net, { accuracy: r.accuracy, heldOutSize: r.heldOutSize, trainedOn: r.description, steps: r.steps });
    const { net: back, info } = fn.loadFeatNet(file, { threads: 1 });
    assert.equal(info.accuracy, r.accuracy);
    assert.deepEqual(info.config, r.net.config);
    assert.equal(info.config.arch, config.arch);
    assert.equal(back.config.arch, config.arch);
    if (config.arch === 'cnn') assert.deepEqual(back.params().map((p) => p.name).slice(0, 2), ['features.0.weight', 'features.0.bias']);
    const x = (await data(16, 9).load(Int32Array.from({ length: 16 }, (_, i) => i), new Uint8Array(16))).x;
    assert.deepEqual(await back.features(x), await r.net.features(x));
    assert.deepEqual(await back.logits(x), await r.net.logits(x));
    back.dispose();

    // a named feature space: featnet:<file>
    const space = await resolveFeatureSpace(`featnet:${file}`);
    assert.equal(space.name, `featnet-${config.arch}(net.safetensors, acc ${r.accuracy.toFixed(3)})`);
    assert.equal(space.dim, 32);
    assert.match(space.description ?? '', /held-out accuracy/);
    assert.match(space.description ?? '', config.arch === 'cnn' ? /^CNN classifier.*fc1 activations after ReLU/ : /^ViT classifier.*mean-pooled final LayerNorm/);
    const imgs = { data: new Uint8Array(5 * 8 * 8 * 3).map((_, i) => (i * 37) % 256), N: 5, H: 8, W: 8, C: 3 };
    const f = await extractFeatures(space, imgs, 2);
    assert.equal(f.length, 5 * 32);
    // features of the same images through the network directly
    const direct = await r.net.features(fn.imagesToModelInput(imgs));
    assert.ok(f.every((v, i) => v === direct[i]));
    await assert.rejects(Promise.resolve(space.extract({ ...imgs, data: new Uint8Array(4 * 4 * 3), H: 4, W: 4, N: 1 })), /takes 8x8x3 images/);
    // a classifier of the data's classes: its accuracy for the evaluation's threshold, its logits for class accuracy
    assert.deepEqual(space.classifier, { numClasses: 4, heldOutAccuracy: r.accuracy, heldOutSize: 200 });
    assert.deepEqual(space.extras, { logits: 4 });
    const all = await extractAllFeatures(space, imgs, 2);
    assert.deepEqual(all.features, f);
    const z = await r.net.logits(fn.imagesToModelInput(imgs));
    assert.ok(all.logits!.every((v, i) => v === z[i]) && all.logits!.length === 5 * 4);
    assert.equal(all.spatial, null);
    const measured = classifierAccuracy(space)!;
    assert.deepEqual(measured, { space: space.name, accuracy: r.accuracy, heldOutSize: 200, measuredOn: 'images', numClasses: 4 });
    assert.equal(checkFeatureSpaceAccuracy({ ...measured, min: 0.5, allow: false }), false);
    assert.throws(() => checkFeatureSpaceAccuracy({ ...measured, min: r.accuracy + 0.01, allow: false }), /is a classifier with held-out accuracy .* below the required/);
    assert.equal(checkFeatureSpaceAccuracy({ ...measured, min: r.accuracy + 0.01, allow: true }), true);

    // a file that is not a feature network
    const bad = path.join(dir, 'bad.safetensors');
    const text = readFileSync(file);
    writeFileSync(bad, Buffer.from(text.toString('latin1').replace('speed-train-featnet/1', 'speed-train-featnet/9'), 'latin1'));
    assert.throws(() => fn.loadFeatNet(bad), /not a speed-train feature network/);
    // an unknown arch in the file's config (same length: the header keeps its size)
    const arch = `\\"arch\\":\\"${config.arch}\\"`;
    assert.ok(text.toString('latin1').includes(arch), 'the saved config records the arch');
    writeFileSync(bad, Buffer.from(text.toString('latin1').replace(arch, arch.replace(config.arch, 'rnn')), 'latin1'));
    assert.throws(() => fn.loadFeatNet(bad), /bad feature-network config in metadata: config\.arch must be one of 'cnn', 'vit', got "rnn"/);
  } finally {
    r.net.dispose();
  }
  assert.ok(Date.now() - t0 < 60_000, `took ${Date.now() - t0} ms`);
});

test('a file saved before the CNN existed (no arch in its config) loads as the ViT it holds', async () => {
  const net = fn.FeatNet.create({ config: fn.defaultFeatNetConfig(8, 3, 4, tiny), seed: 3, threads: 1 });
  const dir = mkdtempSync(path.join(tmpdir(), 'st-featnet-old-'));
  const file = path.join(dir, 'old.safetensors');
  fn.saveFeatNet(file, net, { accuracy: 0.5, heldOutSize: 10, trainedOn: 'test', steps: 0 });
  // blank out the arch key with spaces of the same length (the header keeps its size)
  const text = readFileSync(file).toString('latin1');
  const key = ',\\"arch\\":\\"vit\\"';
  assert.ok(text.includes(key));
  writeFileSync(file, Buffer.from(text.replace(key, ' '.repeat(key.length)), 'latin1'));
  assert.ok(!readFileSync(file).toString('latin1').includes('arch'));
  const { net: back, info } = fn.loadFeatNet(file, { threads: 1 });
  try {
    assert.equal(info.config.arch, 'vit');
    assert.equal(back.config.arch, 'vit');
    const x = new Float32Array(2 * 3 * 8 * 8).map((_, i) => Math.sin(i));
    assert.deepEqual(await back.features(x), await net.features(x));
    assert.match((await resolveFeatureSpaceOf(file)).name, /^featnet-vit\(old\.safetensors/);
  } finally {
    back.dispose();
    net.dispose();
  }
});

async function resolveFeatureSpaceOf(file: string) {
  return resolveFeatureSpace(`featnet:${file}`);
}

test('feature network argument errors', async () => {
  assert.throws(() => fn.FeatNet.create({ config: { ...fn.defaultFeatNetConfig(9, 3, 4, { arch: 'vit' }), patchSize: 2 } as FeatNetConfig, seed: 0 }), /not divisible by patchSize/);
  assert.throws(() => fn.FeatNet.create({ config: { ...fn.defaultFeatNetConfig(8, 3, 4, tinyCnn), arch: 'mlp' } as unknown as FeatNetConfig, seed: 0 }), /config\.arch must be one of 'cnn', 'vit', got "mlp"/);
  assert.throws(() => fn.FeatNet.create({ config: fn.defaultFeatNetConfig(8, 3, 4, { channels: [] }), seed: 0 }), /config\.channels must be a list of 1 to 8 stage widths/);
  assert.throws(() => fn.FeatNet.create({ config: fn.defaultFeatNetConfig(8, 3, 4, { channels: [8, 0] }), seed: 0 }), /config\.channels\[1\]/);
  assert.throws(() => fn.FeatNet.create({ config: fn.defaultFeatNetConfig(8, 3, 4, { fcHidden: 0 }), seed: 0 }), /config\.fcHidden/);
  // the new-network default is the CNN
  assert.deepEqual(fn.defaultFeatNetConfig(28, 1, 10), { arch: 'cnn', inputSize: 28, inChannels: 1, numClasses: 10, channels: [32, 64], fcHidden: 128 });
  assert.throws(() => fn.FeatNet.create({ config: fn.defaultFeatNetConfig(8, 3, 1), seed: 0 }), /numClasses must be in \[2/);
  const net = fn.FeatNet.create({ config: fn.defaultFeatNetConfig(8, 3, 4, tiny), seed: 0, threads: 1 });
  const hp = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 0 };
  await assert.rejects(net.trainStep(new Float32Array(5), new Int32Array(1), hp), /multiple of C\*H\*W = 192/);
  await assert.rejects(net.trainStep(new Float32Array(192), Int32Array.of(4), hp), /y\[0\] = 4 is out of range/);
  await assert.rejects(net.trainStep(new Float32Array(192), Int32Array.of(0), { ...hp, lr: NaN }), /hp\.lr must be a finite number/);
  const p = net.features(new Float32Array(192));
  assert.throws(() => net.readParam('head.weight'), /busy with features/);
  await p;
  assert.throws(() => net.readParam('head.weight', 'ema' as 'model'), /no EMA|must be one of/);
  assert.throws(() => net.readParam('nope'), /unknown parameter 'nope'/);
  net.dispose();
  await assert.rejects(net.logits(new Float32Array(192)), /disposed/);
  const vitPatch = (size: number) => { const c = fn.defaultFeatNetConfig(size, 3, 10, { arch: 'vit' }); return c.arch === 'vit' ? c.patchSize : 0; };
  assert.equal(vitPatch(32), 4);
  assert.equal(vitPatch(16), 2);
  // a CNN's whole API: the same methods as the ViT's
  const cnn = fn.FeatNet.create({ config: fn.defaultFeatNetConfig(8, 3, 4, tinyCnn), seed: 0, threads: 1 });
  try {
    assert.equal(cnn.numTrainable(), cnn.params().reduce((a, p) => a + p.numel, 0));
    await assert.rejects(cnn.trainStep(new Float32Array(192), Int32Array.of(4), hp), /y\[0\] = 4 is out of range/);
    const r = await cnn.trainStep(new Float32Array(192 * 2).map((_, i) => Math.cos(i)), Int32Array.of(1, 2), hp);
    assert.equal(r.step, 1);
    assert.equal(cnn.getStep(), 1);
    assert.equal(r.logits.length, 8);
    assert.ok(Number.isFinite(r.loss) && r.gradNorm > 0);
    assert.equal((await cnn.features(new Float32Array(192))).length, 32);
    assert.throws(() => cnn.readParam('fc2.weight', 'ema' as 'model'), /no EMA|must be one of/);
    assert.ok(cnn.readParam('fc2.weight', 'adam_v').some((v) => v > 0));
    cnn.setStep(7);
    assert.equal(cnn.getStep(), 7);
  } finally {
    cnn.dispose();
  }
});

test("the experiment spec's featnet section: arch, channels and fc_hidden, validated", async () => {
  const { loadExperimentSpec } = await import('../src/experiment/spec.js');
  const dir = mkdtempSync(path.join(tmpdir(), 'st-featnet-spec-'));
  writeFileSync(path.join(dir, 'uniform.yaml'), '{}\n');
  const spec = (featnet: unknown) => {
    writeFileSync(path.join(dir, 'experiment.json'), JSON.stringify({ methods: ['uniform'], featnet }));
    return loadExperimentSpec(dir, false).spec.featnet;
  };
  const s = spec({ arch: 'cnn', channels: [16, 32, 64], fc_hidden: 96 });
  assert.equal(s.arch, 'cnn');
  assert.deepEqual(s.channels, [16, 32, 64]);
  assert.equal(s.fc_hidden, 96);
  // without an arch: the ViT, as experiment folders written before the CNN
  assert.equal(spec({ steps: 10 }).arch, 'vit');
  assert.throws(() => spec({ arch: 'rnn' }), /featnet\.arch.*expected one of cnn, vit, found "rnn"/);
  assert.throws(() => spec({ channels: [32, 0] }), /featnet\.channels.*expected a list of 1 to 8 stage widths/);
  assert.throws(() => spec({ channels: 32 }), /featnet\.channels/);
  assert.throws(() => spec({ fc_hidden: -1 }), /featnet\.fc_hidden.*expected a number > 0/);
  // the Fashion-MNIST experiment scores its samples with the CNN
  assert.equal(loadExperimentSpec(path.resolve('configs/experiments/fashion'), false).spec.featnet.arch, 'cnn');
});

/** A python3 that imports torch, or null. */
const TORCH_PY = (() => {
  for (const py of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(py, ['-c', 'import torch'], { encoding: 'utf8' });
    if (r.status === 0) return py;
  }
  return null;
})();

test('the CNN matches the same nn.Module in PyTorch (tools/torch_cnn.py): names, logits, features, gradients', { skip: TORCH_PY ? false : 'no python3 with torch', timeout: 300_000 }, async () => {
  const config = fn.defaultFeatNetConfig(8, 3, 5, { arch: 'cnn', channels: [4, 8], fcHidden: 16 });
  const net = fn.FeatNet.create({ config, seed: 11, threads: 1 });
  try {
    const dir = mkdtempSync(path.join(tmpdir(), 'st-featnet-torch-'));
    const file = path.join(dir, 'cnn.safetensors');
    fn.saveFeatNet(file, net, { accuracy: 0.5, heldOutSize: 1, trainedOn: 'test', steps: 0 });
    const N = 6;
    const x = new Float32Array(N * 3 * 8 * 8).map((_, i) => Math.sin(i * 0.37) * 1.5);
    const y = Int32Array.from({ length: N }, (_, i) => (i * 3) % 5);
    writeFileSync(path.join(dir, 'x.f32'), new Uint8Array(x.buffer));
    writeFileSync(path.join(dir, 'y.i32'), new Uint8Array(y.buffer));
    const r = spawnSync(TORCH_PY!, ['tools/torch_cnn.py', 'check', file, path.join(dir, 'x.f32'), path.join(dir, 'y.i32'), path.join(dir, 'out.json')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const ref = JSON.parse(readFileSync(path.join(dir, 'out.json'), 'utf8')) as { logits: number[]; features: number[]; loss: number; grads: Record<string, number[]> };
    const relErr = (a: ArrayLike<number>, b: number[]) => {
      assert.equal(a.length, b.length);
      let num = 0, den = 0;
      for (let i = 0; i < b.length; i++) { num += (a[i] - b[i]) ** 2; den += b[i] ** 2; }
      return Math.sqrt(num / Math.max(den, 1e-30));
    };
    assert.ok(relErr(await net.features(x), ref.features) < 1e-5, 'features');
    // the step computes its loss and gradient at the saved weights, then updates them
    const s = await net.trainStep(x, y, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 0 });
    assert.ok(relErr(s.logits, ref.logits) < 1e-5, 'logits');
    assert.ok(Math.abs(s.loss - ref.loss) < 1e-5 * ref.loss, `loss ${s.loss} vs ${ref.loss}`);
    assert.deepEqual(net.params().map((p) => p.name), Object.keys(ref.grads));
    for (const p of net.params()) assert.ok(relErr(net.readParam(p.name, 'grad'), ref.grads[p.name]) < 1e-4, `gradient of ${p.name}`);
  } finally {
    net.dispose();
  }
});

test('speed-train featnet --arch: a CNN from the command line; a bad arch or channel list is refused by name', () => {
  const cli = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.resolve('src/cli.ts'), 'featnet', '-c', 'configs/default.yaml', ...args], { encoding: 'utf8', env: process.env });
  const dir = mkdtempSync(path.join(tmpdir(), 'st-featnet-cli-'));
  const file = path.join(dir, 'cnn.safetensors');
  const ok = cli(['--arch', 'cnn', '--channels', '4,8', '--fc-hidden', '16', '--steps', '4', '--batch', '8', '--held-out', '0.01', '-o', file, 'threads=1', 'data.num_samples=400']);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /featnet: CNN classifier, stages \[4, 8\], fc 16/);
  const info = fn.readFeatNetInfo(file);
  assert.deepEqual(info.config, { arch: 'cnn', inputSize: 16, inChannels: 3, numClasses: 10, channels: [4, 8], fcHidden: 16 });
  const bad = cli(['--arch', 'rnn', '-o', path.join(dir, 'x.safetensors')]);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /--arch: expected one of cnn, vit, found "rnn"/);
  const badCh = cli(['--channels', '4,x', '-o', path.join(dir, 'x.safetensors')]);
  assert.notEqual(badCh.status, 0);
  assert.match(badCh.stderr, /--channels: expected a positive integer, found "x"/);
});
