// The latent path's inputs that gave raw errors: shard manifests without flip or
// labels, shard "files" that are folders (or links to one, or named ".." or ""),
// a non-finite latent in a flipped shard, a missing latents folder, a missing or
// pickled VAE file, read-only outputs of encode and -p inference, and the
// temporaries a killed process leaves behind.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { ATOMIC_TEMPORARY, removeDeadTemporaries } from '../src/checkpoint/fs.js';
import { loadConfig } from '../src/config/index.js';
import { LatentShardsDataset, makeDataset, readManifest } from '../src/data/index.js';
import { runEncode } from '../src/encode/index.js';
import { CheckpointError, DataError } from '../src/errors.js';
import { runInference } from '../src/generate/inference.js';
import { writeNpy } from '../src/io/npy.js';
import { tinyConfigFile, useAddon } from './helpers-e2e.js';

useAddon();
const tmp = () => mkdtempSync(path.join(tmpdir(), 'latrob-'));
const N = 6;

/** A valid shard folder (one shard of N [4, 2, 2] latents, with flipped copies); returns the manifest object. */
function shardSet(root: string, flipValue = 0.5): Record<string, unknown> & { shards: Record<string, unknown>[] } {
  mkdirSync(root, { recursive: true });
  const x = new Float32Array(N * 16).map((_, i) => Math.cos(i));
  writeNpy(path.join(root, 'shard-00000.npy'), { dtype: 'float32', shape: [N, 4, 2, 2], data: x });
  const f = x.slice();
  f[16 * 3 + 5] = flipValue;
  writeNpy(path.join(root, 'shard-00000-flip.npy'), { dtype: 'float32', shape: [N, 4, 2, 2], data: f });
  writeNpy(path.join(root, 'shard-00000-labels.npy'), { dtype: 'int64', shape: [N], data: BigInt64Array.from({ length: N }, (_, i) => BigInt(i % 2)) });
  const m = {
    format: 'speed-train-latents', version: 1, count: N, shape: [4, 2, 2], dtype: 'float32', latent_scale: 0.5,
    vae: { file: 'x', sha256: 'y', down_factor: 8, sample_posterior: false, seed: null }, image_size: 16, crop: 'adm_center_crop', flip: true,
    source: 'z', classes: [], num_classes: 2, skipped: 0, created: '',
    shards: [{ file: 'shard-00000.npy', labels: 'shard-00000-labels.npy', flip: 'shard-00000-flip.npy', count: N, first_image: 0, skipped: 0 }],
  };
  writeFileSync(path.join(root, 'manifest.json'), JSON.stringify(m));
  return m;
}
const opts = (root: string) => ({ root, numClasses: 2, shape: [4, 2, 2] as const, skipBadFiles: false, configuredScale: 1, warn: () => {} });
const isData = (file: string, re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof DataError, `expected a DataError, got ${(e as Error)?.stack ?? String(e)}`);
  assert.equal(e.file, file);
  assert.match(e.message, re);
  return true;
};

test('manifest entries without flip or labels, and with odd names, are named by their key (was a TypeError reading "includes")', () => {
  const root = path.join(tmp(), 'lat');
  const good = shardSet(root);
  const mf = path.join(root, 'manifest.json');
  const edit = (f: (m: typeof good) => void) => {
    const m = structuredClone(good);
    f(m);
    writeFileSync(mf, JSON.stringify(m));
  };
  const cases: [(m: typeof good) => void, RegExp][] = [
    [(m) => { delete m.shards[0].flip; }, /shards\[0\]\.flip: expected a plain file name inside the folder, or null, found nothing \(the key is missing\)/],
    [(m) => { delete m.shards[0].labels; }, /shards\[0\]\.labels: expected a plain file name inside the folder, found nothing/],
    [(m) => { m.shards[0].file = ''; }, /shards\[0\]\.file: expected a plain file name inside the folder, found ""/],
    [(m) => { m.shards[0].file = '..'; }, /shards\[0\]\.file: expected a plain file name/],
    [(m) => { m.shards[0].labels = 'a/b.npy'; }, /shards\[0\]\.labels: expected a plain file name/],
    [(m) => { m.shards[0].flip = null; }, /shards\[0\]\.flip: expected the flipped shard's file name \(flip is true\), found null/],
    [(m) => { m.shards[0].count = -1; }, /shards\[0\]\.count: expected a non-negative integer, found -1/],
    [(m) => { delete m.shards[0].first_image; }, /shards\[0\]\.first_image: expected a non-negative integer/],
    [(m) => { m.shards = [7 as unknown as Record<string, unknown>]; }, /shards\[0\]: expected an object/],
    [(m) => { delete m.vae; }, /vae: expected an object/],
    [(m) => { m.flip = 'yes'; }, /flip: expected true or false, found "yes"/],
    [(m) => { m.count = 5; }, /count 5 is not the sum of the shard counts \(6\)/],
  ];
  for (const [f, re] of cases) {
    edit(f);
    assert.throws(() => readManifest(root), isData(mf, re), re.source);
    assert.throws(() => new LatentShardsDataset(opts(root)), isData(mf, re), re.source);
  }
  writeFileSync(mf, '{"format": "speed-train-latents", "vers');
  assert.throws(() => readManifest(root), isData(mf, /invalid JSON .*run `speed-train encode` again/));
});

test('a shard file that is a folder, a link to one, or missing is named (was a raw EISDIR)', () => {
  const root = path.join(tmp(), 'lat');
  shardSet(root);
  const main = path.join(root, 'shard-00000.npy');
  const flip = path.join(root, 'shard-00000-flip.npy');
  const labels = path.join(root, 'shard-00000-labels.npy');
  rmSync(flip);
  mkdirSync(flip);
  assert.throws(() => new LatentShardsDataset(opts(root)), isData(flip, /manifest\.json names it as a shard file, but it is a folder/));
  rmSync(flip, { recursive: true });
  symlinkSync(tmpdir(), flip);
  assert.throws(() => new LatentShardsDataset(opts(root)), isData(flip, /but it is a folder/));
  rmSync(flip);
  assert.throws(() => new LatentShardsDataset(opts(root)), isData(flip, /cannot open the file manifest\.json names \(ENOENT\): the shard set is incomplete/));
  shardSet(root);
  rmSync(labels);
  mkdirSync(labels);
  assert.throws(() => new LatentShardsDataset(opts(root)), isData(labels, /but it is a folder/));
  rmSync(labels, { recursive: true });
  shardSet(root);
  rmSync(main);
  mkdirSync(main);
  assert.throws(() => new LatentShardsDataset(opts(root)), isData(main, /but it is a folder/));
});

test('a non-finite latent in shard-NNNNN-flip.npy is reported against that file and row', async () => {
  const root = path.join(tmp(), 'lat');
  shardSet(root, NaN);
  const ds = new LatentShardsDataset(opts(root));
  try {
    await ds.load(Int32Array.from([3]), Uint8Array.from([0])); // the unflipped row is fine
    await assert.rejects(async () => ds.load(Int32Array.from([2, 3]), Uint8Array.from([1, 1])),
      isData(path.join(root, 'shard-00000-flip.npy'), /^[^:]*-flip\.npy: row 3 holds a non-finite value \(NaN\)$/));
  } finally {
    await ds.close();
  }
});

test('a missing latents folder says to run `speed-train encode` first, naming the folder', () => {
  const dir = tmp();
  const file = path.join(dir, 'c.yaml');
  writeFileSync(file, `experiment_dir: ${dir}/exp\nmodel: {name: DiT-Ti/2, input_size: 4, in_channels: 4, num_classes: 2}\n` +
    `data: {name: latents, root: ${dir}/lat, num_classes: 2, batch_size: 2}\n`);
  const c = loadConfig(file, { overrides: [] }).config;
  assert.throws(() => makeDataset(c, () => {}), isData(path.join(dir, 'lat'), /not found: data\.root names the latents .*run `speed-train encode -c CONFIG` with this config first/));
});

function encodeConfig(dir: string, extra: string[] = []) {
  const images = path.join(dir, 'images');
  mkdirSync(path.join(images, 'a'), { recursive: true });
  const file = path.join(dir, 'c.yaml');
  writeFileSync(file, `experiment_dir: ${dir}/exp\nmodel: {name: DiT-Ti/2, input_size: 4, in_channels: 4, num_classes: 2}\n` +
    `data: {name: latents, root: ${dir}/lat, num_classes: 2, batch_size: 2}\nencode: {images: ${images}, image_size: 8, shard_size: 3}\n`);
  return loadConfig(file, { overrides: extra }).config;
}

test('encode checks vae.path before scanning the images: where the SD VAE comes from; a pickle gets the full convert command', async () => {
  const dir = tmp();
  const logs: string[] = [];
  const missing = path.join(dir, 'sd-vae-ft-ema');
  await assert.rejects(runEncode(encodeConfig(dir, [`vae.path=${missing}`]), { log: (m) => logs.push(m) }), (e: unknown) => {
    assert.ok(e instanceof CheckpointError, String(e));
    assert.match(e.message, /cannot open the VAE weight file \(ENOENT\); the SD VAE is diffusion_pytorch_model\.safetensors .*stabilityai\/sd-vae-ft-ema/);
    assert.match(e.message, /huggingface-cli download stabilityai\/sd-vae-ft-ema diffusion_pytorch_model\.safetensors config\.json --local-dir data\/sd-vae-ft-ema/);
    assert.match(e.message, /see docs\/latent\.md/);
    return true;
  });
  assert.ok(!logs.some((l) => /scanning/.test(l)), `the images were scanned first: ${logs.join('\n')}`);
  const pt = path.join(dir, 'vae.pt');
  writeFileSync(pt, Buffer.from([0x80, 0x02, 0x7d, 0x71]));
  await assert.rejects(runEncode(encodeConfig(dir, [`vae.path=${pt}`]), { log: (m) => logs.push(m) }),
    (e: unknown) => e instanceof CheckpointError && e.message.includes(`\`speed-train convert ${pt} ${path.join(dir, 'vae.safetensors')}\``));
  assert.ok(!logs.some((l) => /scanning/.test(l)));
});

test('encode.out and inference.out that cannot be created: a CheckpointError naming the key (was a raw ENOENT ... mkdir)', async () => {
  const dir = tmp();
  writeFileSync(path.join(dir, 'file'), 'x');
  const out = path.join(dir, 'file', 'lat');
  await assert.rejects(runEncode(encodeConfig(dir, [`encode.out=${out}`, 'vae.path=/nonexistent.safetensors']), { log: () => {} }),
    (e: unknown) => e instanceof CheckpointError && e.file === out && /encode\.out: cannot create the folder: a path component is a file/.test(e.message));
  // A read-only file system (needs root to mount one; skipped otherwise).
  const mnt = mkdtempSync(path.join(tmpdir(), 'latrob-ro-'));
  let mounted = false;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,ro', 'tmpfs', mnt], { stdio: 'pipe' });
    mounted = true;
  } catch { /* not root */ }
  try {
    if (mounted) {
      await assert.rejects(runEncode(encodeConfig(dir, [`encode.out=${mnt}/lat`, 'vae.path=/nonexistent.safetensors']), { log: () => {} }),
        (e: unknown) => e instanceof CheckpointError && /encode\.out: cannot create the folder: read-only file system \(EROFS\): encode\.out must be on a writable file system/.test(e.message));
      const { file } = tinyConfigFile();
      const trained = spawnSync(process.execPath, ['--import', 'tsx', path.resolve('src/cli.ts'), '-c', file, 'max_training_steps=2'], { encoding: 'utf8' });
      assert.equal(trained.status, 0, trained.stderr);
      const c = loadConfig(file, { overrides: [`inference.out=${mnt}/inf`], phase: 'inference' }).config;
      await assert.rejects(runInference(c, { log: () => {} }),
        (e: unknown) => e instanceof CheckpointError && /inference\.out: cannot create the folder: read-only file system \(EROFS\): inference\.out must be on a writable file system/.test(e.message));
    }
  } finally {
    if (mounted) execFileSync('umount', [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  }
});

test('-p inference removes the temporaries of a killed run (dead pid), keeps those of a live one', async () => {
  const { file, exp } = tinyConfigFile();
  const trained = spawnSync(process.execPath, ['--import', 'tsx', path.resolve('src/cli.ts'), '-c', file, 'max_training_steps=2'], { encoding: 'utf8' });
  assert.equal(trained.status, 0, trained.stderr);
  const dead = spawnSync('true').pid!; // a pid that has exited
  const out = path.join(exp, 'inference-0000002');
  mkdirSync(out, { recursive: true });
  const stale = `.samples.npz.${dead}.1733550000000.tmp`;
  const live = `.samples.npz.${process.ppid}.1733550000000.tmp`;
  writeFileSync(path.join(out, stale), Buffer.alloc(1000));
  writeFileSync(path.join(out, live), Buffer.alloc(10));
  const logs: string[] = [];
  const c = loadConfig(file, { overrides: [], phase: 'inference' }).config;
  const r = await runInference(c, { log: (m) => logs.push(m), progressStream: { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream });
  assert.equal(r.dir, out);
  const left = readdirSync(out);
  assert.ok(!left.includes(stale), `the dead run's temporary stays: ${left.join(', ')}`);
  assert.ok(left.includes(live), 'a live process\'s temporary is kept');
  assert.ok(existsSync(path.join(out, 'samples.npz')));
  assert.ok(logs.some((l) => l.includes(`removed 1 temporary file(s) of an interrupted run in ${out}: ${stale}`)), logs.join('\n'));
  // The helper's pattern is the atomic writers' naming only.
  writeFileSync(path.join(out, `.x.${dead}.5.tmp`), '');
  writeFileSync(path.join(out, `keep.${dead}.5.tmp`), '');
  assert.deepEqual(removeDeadTemporaries(out, ATOMIC_TEMPORARY), [`.x.${dead}.5.tmp`]);
});
