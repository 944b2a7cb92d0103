import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pngjs from 'pngjs';
import { areaWeights, pixelFeatureSpace, resolveFeatureSpace, registerFeatureSpaceResolver, extractFeatures, type FeatureSpace } from '../src/eval/features.js';
import { loadImageSet } from '../src/eval/samples.js';
import { runEvaluate, formatEvalTable, checkFeatureSpaceAccuracy, classifierAccuracy } from '../src/eval/evaluate.js';
import { loadReferenceStats, saveReferenceStats, referenceFromFeatures } from '../src/eval/reference.js';
import { writeNpz } from '../src/io/npz.js';
import { writeNpy } from '../src/io/npy.js';
import { seededUniform } from '../src/eval/rng.js';
import { ConfigError, DataError } from '../src/errors.js';

const { PNG } = pngjs;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eval-test-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

/** N images 16x16 RGB: a coloured square at a random place on a dark background, plus `brightness`. */
function shapes(N: number, seed: number, brightness = 0): Uint8Array {
  const H = 16, W = 16;
  const u = seededUniform(seed);
  const out = new Uint8Array(N * H * W * 3);
  for (let n = 0; n < N; n++) {
    const col = [u() * 255, u() * 255, u() * 255];
    const s = 4 + Math.floor(u() * 6);
    const y0 = Math.floor(u() * (H - s));
    const x0 = Math.floor(u() * (W - s));
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
      const inside = y >= y0 && y < y0 + s && x >= x0 && x < x0 + s;
      for (let c = 0; c < 3; c++) {
        const v = (inside ? col[c] : 20 + 10 * u()) + brightness;
        out[((n * H + y) * W + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
  }
  return out;
}

test('area weights cover each output pixel exactly once', () => {
  for (const [i, o] of [[16, 8], [12, 8], [7, 3], [3, 8], [32, 32]]) {
    const { weights } = areaWeights(i, o);
    const total = new Float64Array(i);
    weights.forEach((w, k) => {
      assert.ok(Math.abs(w.reduce((a, b) => a + b, 0) - 1) < 1e-12, `${i}->${o} row ${k}`);
      const { start } = areaWeights(i, o);
      w.forEach((x, t) => (total[start[k] + t] += x));
    });
    for (const t of total) assert.ok(Math.abs(t - o / i) < 1e-12); // every input pixel contributes equally
  }
});

test('pixel features: block averages, grey expansion, [0, 1] range, name and dim', () => {
  const fsp = pixelFeatureSpace(2);
  assert.equal(fsp.name, 'pixels-2x2');
  assert.equal(fsp.dim, 12);
  // 4x4 grey image with 2x2 blocks of 0, 51, 102, 255
  const g = new Uint8Array([0, 0, 51, 51, 0, 0, 51, 51, 102, 102, 255, 255, 102, 102, 255, 255]);
  const f = fsp.extract({ data: g, N: 1, H: 4, W: 4, C: 1 }) as Float64Array;
  const want = [0, 0, 0, 0.2, 0.2, 0.2, 0.4, 0.4, 0.4, 1, 1, 1];
  f.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-12, `feature ${i}: ${v}`));
  // RGBA: alpha is ignored; 3x3 -> 2x2 uses fractional overlaps and preserves a constant image
  const rgba = new Uint8Array(3 * 3 * 4).map((_, i) => (i % 4 === 3 ? 7 : i % 4 === 0 ? 255 : 0));
  const f2 = fsp.extract({ data: rgba, N: 1, H: 3, W: 3, C: 4 }) as Float64Array;
  for (let p = 0; p < 4; p++) assert.deepEqual([f2[p * 3], f2[p * 3 + 1], f2[p * 3 + 2]].map((v) => Math.round(v * 1e12) / 1e12), [1, 0, 0]);
  assert.throws(() => fsp.extract({ data: new Uint8Array(8), N: 1, H: 2, W: 2, C: 2 }), /expected 1, 3 or 4 channels/);
  assert.throws(() => fsp.extract({ data: new Uint8Array(7), N: 1, H: 2, W: 2, C: 2 }), /expected N·H·W·C/);
});

test('feature space resolution and plug-in resolvers', async () => {
  assert.equal((await resolveFeatureSpace(undefined)).name, 'pixels-8x8');
  assert.equal((await resolveFeatureSpace('pixels')).name, 'pixels-8x8');
  assert.equal((await resolveFeatureSpace('pixels-4x4')).dim, 48);
  await assert.rejects(resolveFeatureSpace('inception'), /unknown feature space 'inception'; expected 'pixels'/);
  const mean: FeatureSpace = {
    name: 'mean-colour',
    dim: 3,
    extract: async ({ data, N, H, W }) => {
      const f = new Float64Array(N * 3);
      for (let i = 0; i < N * H * W; i++) for (let c = 0; c < 3; c++) f[Math.floor(i / (H * W)) * 3 + c] += data[i * 3 + c] / (H * W);
      return f;
    },
  };
  registerFeatureSpaceResolver('test', (s) => (s === 'mean-colour' ? mean : null), "'mean-colour'");
  assert.equal(await resolveFeatureSpace('mean-colour'), mean);
  await assert.rejects(resolveFeatureSpace('nope'), /'mean-colour'/);
  // extractFeatures batches and checks what a space returns
  const imgs = { data: shapes(5, 1), N: 5, H: 16, W: 16, C: 3 };
  const whole = await extractFeatures(mean, imgs, 100);
  const batched = await extractFeatures(mean, imgs, 2);
  assert.deepEqual(batched, whole);
  const broken: FeatureSpace = { name: 'broken', dim: 2, extract: () => new Float64Array(3) };
  await assert.rejects(extractFeatures(broken, imgs), /broken returned 3 values for 5 images/);
});

test('sample-set loaders: samples.npz, .npy, PNG folders, and their errors', async () => {
  const N = 6;
  const data = shapes(N, 2);
  const npz = path.join(dir, 'samples.npz');
  writeNpz(npz, { arr_0: { dtype: 'uint8', shape: [N, 16, 16, 3], data }, arr_1: { dtype: 'int64', shape: [N], data: new BigInt64Array(N) } });
  const a = await loadImageSet(npz);
  assert.deepEqual([a.N, a.H, a.W, a.C], [N, 16, 16, 3]);
  assert.deepEqual(a.data, data);

  const pngDir = path.join(dir, 'pngs');
  fs.mkdirSync(path.join(pngDir, 'class1'), { recursive: true });
  for (let n = 0; n < N; n++) {
    const png = new PNG({ width: 16, height: 16 });
    for (let p = 0; p < 256; p++) {
      for (let c = 0; c < 3; c++) png.data[p * 4 + c] = data[n * 768 + p * 3 + c];
      png.data[p * 4 + 3] = 255;
    }
    fs.writeFileSync(path.join(pngDir, n < 3 ? '' : 'class1', `${n}.png`), PNG.sync.write(png));
  }
  const b = await loadImageSet(pngDir);
  assert.deepEqual([b.N, b.H, b.W, b.C], [N, 16, 16, 3]);
  assert.deepEqual(b.data, data); // sorted: 0,1,2 then class1/3,4,5

  const odd = new PNG({ width: 8, height: 16 });
  fs.writeFileSync(path.join(pngDir, 'zz.png'), PNG.sync.write(odd));
  await assert.rejects(() => loadImageSet(pngDir), /zz\.png: image is 8x16, but .*0\.png is 16x16/);
  fs.writeFileSync(path.join(pngDir, 'zz.png'), 'not a png');
  await assert.rejects(() => loadImageSet(pngDir), (e: unknown) => e instanceof DataError && /zz\.png/.test(e.file) && /not a JPEG, PNG or WebP image/.test(e.message));

  const empty = path.join(dir, 'empty');
  fs.mkdirSync(empty);
  await assert.rejects(() => loadImageSet(empty), /empty: no \.png\/\.jpg\/\.jpeg\/\.webp files found/);
  const nchw = path.join(dir, 'nchw.npy');
  writeNpy(nchw, { dtype: 'uint8', shape: [2, 3, 8, 8], data: new Uint8Array(384) });
  await assert.rejects(() => loadImageSet(nchw), /looks like \[N, C, H, W\]/);
  const f32 = path.join(dir, 'float.npz');
  writeNpz(f32, { arr_0: { dtype: 'float32', shape: [1, 2, 2, 3], data: new Float32Array(12) } });
  await assert.rejects(() => loadImageSet(f32), /float\.npz\[arr_0\]: images must be uint8/);
  await assert.rejects(() => loadImageSet(path.join(dir, 'nothing.npz')), /nothing\.npz: not found/);
});

test('runEvaluate: identical sets give FID ≈ 0 and precision = recall = 1; a shifted set scores worse', async () => {
  const N = 120;
  const ref = { data: shapes(N, 10), N, H: 16, W: 16, C: 3, source: 'ref' };
  const same = await runEvaluate({ samples: { ...ref, source: 'same' }, reference: ref, featureSpace: 'pixels-4x4', kid: { subsets: 20 } });
  assert.equal(same.feature_space, 'pixels-4x4');
  assert.ok(same.fid < 1e-9, `fid ${same.fid}`);
  assert.equal(same.precision, 1);
  assert.equal(same.recall, 1);
  assert.equal(same.n_samples, N);
  assert.equal(same.n_reference, N);

  const fresh = await runEvaluate({ samples: { data: shapes(N, 11), N, H: 16, W: 16, C: 3, source: 'fresh' }, reference: ref, featureSpace: 'pixels-4x4', kid: { subsets: 20 } });
  let prev = fresh;
  for (const b of [30, 80]) {
    const shifted = await runEvaluate({ samples: { data: shapes(N, 11, b), N, H: 16, W: 16, C: 3, source: `+${b}` }, reference: ref, featureSpace: 'pixels-4x4', kid: { subsets: 20 } });
    assert.ok(shifted.fid > prev.fid, `brightness +${b}: FID ${shifted.fid} should exceed ${prev.fid}`);
    assert.ok(shifted.kid_mean! > prev.kid_mean!, `KID ${shifted.kid_mean} should exceed ${prev.kid_mean}`);
    assert.ok(shifted.precision! < prev.precision!, `precision ${shifted.precision} should drop below ${prev.precision}`);
    prev = shifted;
  }
  assert.ok(Math.abs(fresh.kid_mean!) < 5 * fresh.kid_std! + 1e-3, `same-distribution KID ${fresh.kid_mean} ± ${fresh.kid_std}`);
  const table = formatEvalTable(prev);
  assert.match(table, /feature space\s+pixels-4x4/);
  assert.match(table, /FID\s+\d/);
});

test('runEvaluate: files, eval.json, cached reference statistics', async () => {
  const N = 40;
  const samples = path.join(dir, 's.npz');
  writeNpz(samples, { arr_0: { dtype: 'uint8', shape: [N, 16, 16, 3], data: shapes(N, 20) } });
  const refFile = path.join(dir, 'r.npz');
  writeNpz(refFile, { arr_0: { dtype: 'uint8', shape: [N, 16, 16, 3], data: shapes(N, 21) } });
  const cache = path.join(dir, 'ref-stats.npz');
  const outDir = path.join(dir, 'run', 'eval');
  const lines: string[] = [];
  const a = await runEvaluate({ samples, reference: refFile, out: outDir, cacheReference: cache, kid: { subsets: 10 }, log: (l) => lines.push(l) });
  assert.equal(a.feature_space, 'pixels-8x8');
  assert.ok(a.fid > 0);
  const json = JSON.parse(fs.readFileSync(path.join(outDir, 'eval.json'), 'utf8'));
  for (const k of ['feature_space', 'fid', 'kid_mean', 'kid_std', 'precision', 'recall', 'n_samples', 'n_reference']) assert.ok(k in json, k);
  assert.equal(json.fid, a.fid);
  assert.ok(lines.some((l) => l.includes('cached')));

  // the cache reproduces every metric, and picks its own feature space
  const b = await runEvaluate({ samples, reference: cache, kid: { subsets: 10 } });
  assert.equal(b.feature_space, 'pixels-8x8');
  assert.ok(Math.abs(b.fid - a.fid) < 1e-9 * a.fid);
  assert.equal(b.kid_mean, a.kid_mean);
  assert.equal(b.precision, a.precision);
  assert.equal(b.recall, a.recall);
  await assert.rejects(runEvaluate({ samples, reference: cache, featureSpace: 'pixels-4x4' }), /ref-stats\.npz: reference statistics are in feature space 'pixels-8x8', but evaluation uses 'pixels-4x4'/);

  // statistics without features: FID only, the rest null
  const st = loadReferenceStats(cache);
  assert.equal(st.n, N);
  const fidOnly = path.join(dir, 'fid-only.npz');
  saveReferenceStats(fidOnly, st, false);
  const c = await runEvaluate({ samples, reference: fidOnly, out: path.join(dir, 'c.json') });
  assert.ok(Math.abs(c.fid - a.fid) < 1e-9 * a.fid);
  assert.equal(c.kid_mean, null);
  assert.equal(c.precision, null);
  assert.match(formatEvalTable(c), /KID\s+n\/a/);
  assert.ok(fs.existsSync(path.join(dir, 'c.json')));

  // Inception statistics from another evaluator carry no feature-space name
  const adm = path.join(dir, 'VIRTUAL_ref.npz');
  writeNpz(adm, { mu: { dtype: 'float64', shape: [2], data: [0, 0] }, sigma: { dtype: 'float64', shape: [2, 2], data: [1, 0, 0, 1] } });
  await assert.rejects(runEvaluate({ samples, reference: adm }), /VIRTUAL_ref\.npz: holds mu and sigma but no feature_space/);
  // a damaged cache names the array
  const bad = path.join(dir, 'bad-stats.npz');
  const r0 = referenceFromFeatures(new Float64Array([0, 1, 1, 0, 2, 2]), 3, 2, 'pixels-8x8', 'x');
  saveReferenceStats(bad, r0);
  assert.deepEqual(loadReferenceStats(bad).features, r0.features);
  writeNpz(bad, {
    feature_space: { dtype: 'uint8', shape: [3], data: Buffer.from('abc') },
    mu: { dtype: 'float64', shape: [2], data: r0.mu },
    sigma: { dtype: 'float64', shape: [4], data: r0.sigma },
  });
  assert.throws(() => loadReferenceStats(bad), /bad-stats\.npz: sigma must be float64 \[2, 2\], found float64 \[4\]/);
});

test('checkFeatureSpaceAccuracy: the one gate, for a config key pair and for an experiment.json field without an override', () => {
  const measured = { space: 'featnet-vit(featnet.safetensors, acc 0.874)', accuracy: 0.8737, heldOutSize: 10000, measuredOn: 'real test images', numClasses: 10 };
  // -p evaluate and FID during training: the evaluate.* keys, with the override
  assert.throws(() => checkFeatureSpaceAccuracy({ ...measured, min: 0.9, allow: false }), (e: unknown) => e instanceof ConfigError && e.keyPath === 'evaluate.min_feature_accuracy' &&
    /^evaluate\.min_feature_accuracy: feature space featnet-vit\(featnet\.safetensors, acc 0\.874\) is a classifier with held-out accuracy 0\.8737 on 10000 real test images \(chance 0\.100\), below the required 0\.9: metrics in it would not mean much \(train the feature network further, or set evaluate\.allow_weak_features=true to evaluate in it anyway\)$/.test(e.message));
  assert.equal(checkFeatureSpaceAccuracy({ ...measured, min: 0.9, allow: true }), true); // weak, allowed
  assert.equal(checkFeatureSpaceAccuracy({ ...measured, min: 0.8737, allow: false }), false); // at the minimum passes
  // the experiment's form: its experiment.json field and file, no override, its own remedy
  const file = '/x/configs/experiments/fashion/experiment.json';
  assert.throws(() => checkFeatureSpaceAccuracy({ ...measured, min: 0.9, allow: false, minKey: 'min_feature_accuracy', allowKey: null, file,
    remedy: 'train it longer or wider in experiment.json featnet, or lower min_feature_accuracy and say so' }), (e: unknown) => e instanceof ConfigError && e.file === file &&
    e.message === `${file}: min_feature_accuracy: feature space ${measured.space} is a classifier with held-out accuracy 0.8737 on 10000 real test images (chance 0.100), ` +
      'below the required 0.9: metrics in it would not mean much (train it longer or wider in experiment.json featnet, or lower min_feature_accuracy and say so)');
  // allow is the caller's flag: with allowKey null the experiment passes allow: false, and nothing names an override
  assert.throws(() => checkFeatureSpaceAccuracy({ ...measured, min: 0.95, allow: false, allowKey: null }), (e: unknown) => !/=true/.test((e as Error).message));
  // a NaN accuracy (a broken measurement) is refused, never taken as passing
  assert.throws(() => checkFeatureSpaceAccuracy({ ...measured, accuracy: Number.NaN, min: 0.5, allow: false }), /held-out accuracy NaN/);
  // a space that is no classifier has nothing to gate; a classifier space gives its inputs
  assert.equal(classifierAccuracy(pixelFeatureSpace(8)), null);
  assert.deepEqual(classifierAccuracy({ ...pixelFeatureSpace(4), name: 'c', classifier: { numClasses: 4, heldOutAccuracy: 0.31, heldOutSize: 500 } }),
    { space: 'c', accuracy: 0.31, heldOutSize: 500, measuredOn: 'images', numClasses: 4 });
});
