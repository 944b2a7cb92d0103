// The feature network from TypeScript: it learns the synthetic classes (held-out
// accuracy far above chance), saves and loads bit-exactly, resolves as a named
// feature space, and rejects bad arguments and foreign files.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { useAddon } from './helpers-e2e.js';

useAddon();
const { SyntheticDataset } = await import('../src/data/index.js');
const fn = await import('../src/featnet/index.js');
const { resolveFeatureSpace, extractFeatures } = await import('../src/eval/index.js');
const { extractAllFeatures } = await import('../src/eval/features.js');
const { checkFeatureSpaceAccuracy, classifierAccuracy } = await import('../src/eval/evaluate.js');

const tiny = { hiddenSize: 32, depth: 2, numHeads: 2, mlpRatio: 2 };
const data = (size: number, seed = 5) => new SyntheticDataset({ seed, size, imageSize: 8, channels: 3, numClasses: 4 });

test('the feature network learns the synthetic classes: held-out accuracy far above chance', async () => {
  const t0 = Date.now();
  const r = await fn.trainFeatNet({ dataset: data(800), heldOutFraction: 0.25, config: tiny, steps: 150, batchSize: 32, lr: 3e-3, seed: 1, threads: 1 });
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
    const x = (await data(16, 9).load(Int32Array.from({ length: 16 }, (_, i) => i), new Uint8Array(16))).x;
    assert.deepEqual(await back.features(x), await r.net.features(x));
    assert.deepEqual(await back.logits(x), await r.net.logits(x));
    back.dispose();

    // a named feature space: featnet:<file>
    const space = await resolveFeatureSpace(`featnet:${file}`);
    assert.equal(space.name, `featnet-vit(net.safetensors, acc ${r.accuracy.toFixed(3)})`);
    assert.equal(space.dim, 32);
    assert.match(space.description ?? '', /held-out accuracy/);
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
  } finally {
    r.net.dispose();
  }
  assert.ok(Date.now() - t0 < 60_000, `took ${Date.now() - t0} ms`);
});

test('feature network argument errors', async () => {
  assert.throws(() => fn.FeatNet.create({ config: { ...fn.defaultFeatNetConfig(9, 3, 4), patchSize: 2 }, seed: 0 }), /not divisible by patchSize/);
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
  assert.equal(fn.defaultFeatNetConfig(32, 3, 10).patchSize, 4);
  assert.equal(fn.defaultFeatNetConfig(16, 3, 10).patchSize, 2);
});
