// encode -> shards -> training data, with a stand-in encoder (2x2 average
// pooling into 4 channels) so the pipeline is tested apart from the VAE (the
// real tiny VAE runs in test/latent-e2e.test.ts): shard contents, labels,
// flipped copies, manifest, resumption after a failure, refused restarts with
// other settings, bad files, and the data sets that read shards and fast-DiT
// feature folders.
import assert from 'node:assert/strict';
import { closeSync, existsSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';

import { loadConfig, type Config } from '../src/config/index.js';
import { centerCropArr } from '../src/data/center-crop.js';
import { decodeImageFile } from '../src/data/image-decode.js';
import { BatchLoader, makeDataset, readManifest } from '../src/data/index.js';
import { runEncode, shardName, type LatentEncoder } from '../src/encode/index.js';
import { DataError } from '../src/errors.js';
import { npyHeaderBytes, readNpy, writeNpy } from '../src/io/npy.js';

const tmp = () => mkdtempSync(path.join(tmpdir(), 'encode-'));

/** [n,3,H,W] -> [n,4,H/2,W/2]: 2x2 means of R, G, B and of their sum; counts its calls. */
function poolEncoder(failAfter = Infinity): LatentEncoder & { calls: number; images: number } {
  return {
    file: '/fake/pool.safetensors', sha256: 'f'.repeat(64), downFactor: 2, config: { latentChannels: 4 }, calls: 0, images: 0,
    async encode(x, n, H, W) {
      if (this.calls >= failAfter) throw new Error('encoder killed (test)');
      this.calls++;
      this.images += n;
      const h = H / 2, w = W / 2;
      const out = new Float32Array(n * 4 * h * w);
      for (let i = 0; i < n; i++) for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++) {
        let sum = 0;
        for (let c = 0; c < 3; c++) {
          const b = (i * 3 + c) * H * W;
          const v = (x[b + 2 * y * W + 2 * xx] + x[b + 2 * y * W + 2 * xx + 1] + x[b + (2 * y + 1) * W + 2 * xx] + x[b + (2 * y + 1) * W + 2 * xx + 1]) / 4;
          out[((i * 4 + c) * h + y) * w + xx] = v;
          sum += v;
        }
        out[((i * 4 + 3) * h + y) * w + xx] = sum;
      }
      return out;
    },
  };
}

async function imageFolder(): Promise<string> {
  const root = tmp();
  const img = (w: number, h: number, seed: number) => {
    const b = Buffer.alloc(w * h * 3);
    for (let i = 0; i < b.length; i++) b[i] = (i * (seed + 3) + seed * 41 + (i % 5) * 17) % 256;
    return sharp(b, { raw: { width: w, height: h, channels: 3 } });
  };
  for (const [cls, k, w, h, fmt] of [['cat', 0, 20, 14, 'jpg'], ['cat', 1, 9, 9, 'png'], ['cat', 2, 33, 17, 'webp'], ['dog', 3, 16, 16, 'png'], ['dog', 4, 12, 30, 'jpeg'], ['dog', 5, 8, 8, 'png'], ['dog', 6, 40, 11, 'JPG']] as const) {
    mkdirSync(path.join(root, cls), { recursive: true });
    const s = img(w, h, k);
    const buf = fmt === 'png' ? await s.png().toBuffer() : fmt === 'webp' ? await s.webp({ lossless: true }).toBuffer() : await s.jpeg({ quality: 92 }).toBuffer();
    writeFileSync(path.join(root, cls, `${k}.${fmt}`), buf);
  }
  return root;
}

function config(dir: string, images: string, extra: string[] = []): Config {
  const file = path.join(dir, 'c.yaml');
  writeFileSync(file, `experiment_dir: ${dir}/exp\nmodel: {name: DiT-Ti/2, input_size: 4, in_channels: 4, num_classes: 2}\n` +
    `data: {name: latents, root: ${dir}/lat, num_classes: 2, batch_size: 2}\nencode: {images: ${images}, image_size: 8, shard_size: 3}\nvae: {chunk: 2}\n`);
  return loadConfig(file, { overrides: extra }).config;
}
const quiet = { log: () => {}, progressStream: { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream };

test('encode: shards of unscaled latents + labels + flipped copies + manifest; training reads them scaled', async () => {
  const images = await imageFolder();
  const dir = tmp();
  const c = config(dir, images, ['encode.flip=true']);
  const enc = poolEncoder();
  const r = await runEncode(c, { vae: enc, ...quiet });
  assert.equal(r.encoded, 7);
  const m = readManifest(path.join(dir, 'lat'));
  assert.deepEqual([m.count, m.shards.length, m.latent_scale, m.image_size, m.flip, m.num_classes], [7, 3, 0.18215, 8, true, 2]);
  assert.deepEqual(m.shape, [4, 4, 4]);
  assert.deepEqual(m.classes, ['cat', 'dog']);
  assert.deepEqual(m.shards.map((s) => s.count), [3, 3, 1]);
  assert.equal(m.vae.sha256, 'f'.repeat(64));
  // Shard 1 row 1 is image 4 (dog/4.jpeg): the encoding of its ADM crop.
  const lat = readNpy(path.join(dir, 'lat', shardName(1)));
  assert.deepEqual(lat.shape, [3, 4, 4, 4]);
  assert.deepEqual([...(readNpy(path.join(dir, 'lat', shardName(1, '-labels'))).data as BigInt64Array)], [1n, 1n, 1n]);
  const rgb = await decodeImageFile(path.join(images, 'dog/4.jpeg'));
  const crop = centerCropArr(rgb.data, rgb.width, rgb.height, 8);
  const want = (crop[0] + crop[3] + crop[24] + crop[27]) / 4 / 127.5 - 1; // channel R, latent pixel (0, 0)
  assert.ok(Math.abs((lat.data as Float32Array)[64] - want) < 1e-6);
  // The flipped copy is the encoding of the mirrored crop: its pixel (0, 3) is the plain one's (0, 0) (pooling commutes with mirroring).
  const flip = readNpy(path.join(dir, 'lat', shardName(1, '-flip'))).data as Float32Array;
  assert.ok(Math.abs(flip[64 + 3] - want) < 1e-6);

  // Training data: shard folder detected, rows scaled by the manifest's scale, flips read the flipped file.
  const warnings: string[] = [];
  const ds = makeDataset({ ...c, data: { ...c.data, latent_scale: 0.5 } }, (w) => warnings.push(w));
  assert.equal(ds.size, 7);
  assert.match(ds.description, /latent shards .* 7 x \[4, 4, 4\] in 3 shards, scale 0.18215/);
  assert.ok(warnings.some((w) => /data\.latent_scale 0\.5 is ignored/.test(w)));
  const b = await ds.load(Int32Array.from([4, 4, 6]), Uint8Array.from([0, 1, 0]));
  assert.deepEqual([...b.y], [1, 1, 1]);
  assert.ok(Math.abs(b.x[0] - (lat.data as Float32Array)[64] * 0.18215) < 1e-7);
  assert.ok(Math.abs(b.x[64 + 3] - flip[64 + 3] * 0.18215) < 1e-7);
  // The loader's order and resumption semantics hold for shard sets.
  const l1 = new BatchLoader(ds, 2, 5, true);
  const seq = [await l1.next(), await l1.next(), await l1.next(), await l1.next()];
  const l2 = new BatchLoader(ds, 2, 5, true);
  await l2.next(); await l2.next();
  const l3 = new BatchLoader(ds, 2, 5, true, l2.position());
  assert.deepEqual((await l3.next()).x, seq[2].x);
  await ds.close();

  // Done already: a rerun encodes nothing and rewrites the same shards.
  const again = await runEncode(c, { vae: poolEncoder(), ...quiet });
  assert.equal(again.encoded, 0);
  assert.equal(readManifest(path.join(dir, 'lat')).count, 7);
});

test('encode resumes after a failure, skipping complete shards; other settings are refused; bad files', async () => {
  const images = await imageFolder();
  const dir = tmp();
  const c = config(dir, images);
  const ref = tmp();
  await runEncode(config(ref, images, ['encode.workers=3']), { vae: poolEncoder(), ...quiet }); // 3 decode workers: the same bits as 1
  // Dies in shard 1 (calls of 2 images: shard 0 takes 2 calls, the third call is shard 1's first).
  await assert.rejects(runEncode(c, { vae: poolEncoder(3), ...quiet }), /encoder killed/);
  const out = path.join(dir, 'lat');
  assert.ok(existsSync(path.join(out, shardName(0))) && !existsSync(path.join(out, shardName(1))) && !existsSync(path.join(out, 'manifest.json')));
  const t0 = statSync(path.join(out, shardName(0))).mtimeMs;
  const enc = poolEncoder();
  const r = await runEncode(c, { vae: enc, ...quiet });
  assert.equal(r.encoded, 4); // shards 1 and 2 only
  assert.equal(statSync(path.join(out, shardName(0))).mtimeMs, t0);
  for (let k = 0; k < 3; k++) {
    assert.ok(readFileSync(path.join(out, shardName(k))).equals(readFileSync(path.join(ref, 'lat', shardName(k)))), `shard ${k} equals an uninterrupted run's (with 3 decode workers)`);
  }
  await assert.rejects(runEncode(config(dir, images, ['encode.image_size=16']), { vae: poolEncoder(), ...quiet }),
    (e: unknown) => e instanceof DataError && /encode-plan\.json/.test(e.file) && /image_size: 8 now 16/.test(e.message));

  // A broken image: an error naming it, or skipped and counted.
  writeFileSync(path.join(images, 'dog', '9.png'), Buffer.concat([readFileSync(path.join(images, 'dog', '5.png')).subarray(0, 60)]));
  const d2 = tmp();
  await assert.rejects(runEncode(config(d2, images), { vae: poolEncoder(), ...quiet }), (e: unknown) => e instanceof DataError && /dog\/9\.png/.test(e.message));
  const d3 = tmp();
  const r3 = await runEncode(config(d3, images, ['data.skip_bad_files=true']), { vae: poolEncoder(), ...quiet });
  assert.equal(r3.manifest.count, 7);
  assert.equal(r3.manifest.skipped, 1);
  rmSync(path.join(images, 'dog', '9.png'));
});

test('fast-DiT feature folders: detected from the layout, already scaled (scale 1), paired by name', async () => {
  const dir = tmp();
  const root = path.join(dir, 'features');
  mkdirSync(path.join(root, 'imagenet256_features'), { recursive: true });
  mkdirSync(path.join(root, 'imagenet256_labels'));
  for (let i = 0; i < 5; i++) {
    writeNpy(path.join(root, 'imagenet256_features', `${i}.npy`), { dtype: 'float32', shape: [1, 4, 4, 4], data: new Float32Array(64).fill(i + 0.5) });
    writeNpy(path.join(root, 'imagenet256_labels', `${i}.npy`), { dtype: 'int64', shape: [1], data: BigInt64Array.from([BigInt(i % 2)]) });
  }
  const c = config(dir, dir, [`data.root=${root}`, 'data.latent_scale=0.18215']);
  const warnings: string[] = [];
  const ds = makeDataset(c, (w) => warnings.push(w));
  assert.equal(ds.size, 5);
  assert.ok(warnings.some((w) => /0\.18215 is ignored: fast-DiT features .* already scaled/.test(w)));
  const b = await ds.load(Int32Array.from([3, 0]), new Uint8Array(2));
  assert.equal(b.x[0], 3.5); // not multiplied again
  assert.deepEqual([...b.y], [1, 0]);
  await ds.close();
  // Pointing at the features folder itself works too.
  assert.equal(makeDataset({ ...c, data: { ...c.data, root: path.join(root, 'imagenet256_features') } }, () => {}).size, 5);
  rmSync(path.join(root, 'imagenet256_labels', '4.npy'));
  assert.throws(() => makeDataset(c, () => {}), /4 label files for 5 feature files/);
  const plain = tmp();
  assert.throws(() => makeDataset({ ...c, data: { ...c.data, root: plain } }, () => {}), /must hold manifest\.json .* or fast-DiT's/);
});

test('a shard set larger than memory is streamed: a 3.3 GB (sparse) shard, a batch costs one read per sample', async () => {
  const dir = tmp();
  const root = path.join(dir, 'big');
  mkdirSync(root);
  const N = 200_000;
  const header = npyHeaderBytes('float32', [N, 4, 32, 32]);
  const file = path.join(root, shardName(0));
  const fd = openSync(file, 'w');
  writeSync(fd, header);
  ftruncateSync(fd, header.length + N * 4 * 32 * 32 * 4); // sparse: reads as zeros
  const row = Float32Array.from({ length: 4096 }, (_, i) => i / 4096);
  writeSync(fd, new Uint8Array(row.buffer), 0, row.byteLength, header.length + 123_456 * row.byteLength); // one real row
  closeSync(fd);
  writeNpy(path.join(root, shardName(0, '-labels')), { dtype: 'int64', shape: [N], data: BigInt64Array.from({ length: N }, (_, i) => BigInt(i % 1000)) });
  const manifest = {
    format: 'speed-train-latents', version: 1, count: N, shape: [4, 32, 32], dtype: 'float32', latent_scale: 0.5,
    vae: { file: 'x', sha256: 'y', down_factor: 8, sample_posterior: false, seed: null }, image_size: 256, crop: 'adm_center_crop', flip: false,
    source: 'z', classes: [], num_classes: 1000, skipped: 0, created: '',
    shards: [{ file: shardName(0), labels: shardName(0, '-labels'), flip: null, count: N, first_image: 0, skipped: 0 }],
  };
  writeFileSync(path.join(root, 'manifest.json'), JSON.stringify(manifest));
  assert.ok(statSync(file).size > 3e9);
  const c = config(dir, dir, [`data.root=${root}`, 'model.input_size=32', 'data.num_classes=1000', 'model.num_classes=1000']);
  const rss0 = process.memoryUsage().rss;
  const ds = makeDataset(c, () => {});
  const idx = Int32Array.from({ length: 256 }, (_, i) => (i * 7919) % N);
  idx[5] = 123_456;
  const t0 = Date.now();
  const b = await ds.load(idx, new Uint8Array(256));
  const ms = Date.now() - t0;
  assert.equal(b.x[5 * 4096 + 4095], (4095 / 4096) * 0.5);
  assert.equal(b.y[5], 123_456 % 1000);
  assert.ok(process.memoryUsage().rss - rss0 < 200 * 2 ** 20, `rss grew by ${(process.memoryUsage().rss - rss0) / 2 ** 20} MiB`);
  console.log(`# one batch of 256 from a ${(statSync(file).size / 1e9).toFixed(1)} GB shard: ${ms} ms`);
  await ds.close();
  rmSync(dir, { recursive: true });
});
