// Child process of fuzz.test.ts: feeds seeded mutations of valid (and, for .pt, hostile) inputs to one
// reader and classifies each outcome. Before each input it writes the input
// and its index to the work folder, so the parent can name the input that
// crashed or hung this process. Prints one JSON summary line at the end.
//
//   node --import tsx test/fuzz-worker.ts <target> <seed> <maxIters> <budgetMs> <workDir>
import { closeSync, copyFileSync, cpSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { resourceUsage } from 'node:process';
import * as zlib from 'node:zlib';

import { loadCheckpoint, checkStoredConfig, checkTrainState, readState, writeCheckpoint } from '../src/checkpoint/index.js';
import { loadConfig } from '../src/config/load.js';
import { defaultsOf } from '../src/config/schema.js';
import { SpeedTrainError } from '../src/errors.js';
import { npyHeaderBytes, readNpy, writeNpy } from '../src/io/npy.js';
import { readNpz, writeNpz } from '../src/io/npz.js';
import { crc32 } from '../src/io/zip.js';
import { asFloat32, encodeSafetensors, readSafetensors, type SafeTensor } from '../src/io/safetensors.js';
import { Rng } from '../src/rng.js';
import { convertPt, selectStateDict } from '../src/convert/index.js';
import { unpickle, unpickleAt } from '../src/convert/unpickle.js';
import { readZipDirectory, zipEntryDataOffset } from '../src/io/zip.js';
import { FakeModel } from './checkpoint-fake.js';
import * as hostile from './helpers/hostile-pt.js';
import { TINY, useAddon } from './helpers-e2e.js';
import { loadConfig as loadConfigFile } from '../src/config/index.js';
import { LatentShardsDataset } from '../src/data/latent-shards.js';
import { loadForGeneration } from '../src/generate/model.js';
import { createModel } from '../src/train/model.js';
import { VAE } from '../src/vae/index.js';
import { writeTinyVae } from './helpers/tiny-vae.js';

const [target, seedArg, itersArg, budgetArg, work] = process.argv.slice(2);
const rng = new Rng(Number(seedArg));
const maxIters = Number(itersArg);
const budgetMs = Number(budgetArg);
/** Peak RSS allowed for this process (the parent also caps the JS heap). */
const MAX_RSS = Number(process.env.FUZZ_MAX_RSS_MB ?? 768) * 2 ** 20;

mkdirSync(work, { recursive: true });
const pick = <T>(a: readonly T[]): T => a[rng.int(a.length)];

// ---- mutations -------------------------------------------------------------

const HUGE32 = [0xffffffff, 0xfffffff0, 0x7fffffff, 0x80000000, 0x10000, 0];
const HUGE64 = [2n ** 64n - 1n, 2n ** 63n, 2n ** 50n, 2n ** 53n + 1n, 2n ** 32n, 0n];
const TOKENS = [
  '0', '-1', '1e309', '-0', '4294967296', '9007199254740993', '1.5', 'NaN', 'null', 'true', '""', '[]', '{}', '[[[[[[[[', '}}}}',
  '"__proto__"', '__proto__', 'constructor', '*a', '&a', '<<: *a', '!!binary', ':', '\n', '\t', '- ', '\u0000', '\uffff', '"\\u0000"',
];

function mutate(src: Buffer, text: boolean): Buffer {
  let b = Buffer.from(src);
  const rounds = 1 + (rng.uniform() < 0.3 ? rng.int(4) : 0);
  for (let r = 0; r < rounds; r++) {
    const at = b.length > 0 ? rng.int(b.length) : 0;
    switch (rng.int(text ? 9 : 8)) {
      case 0: // bit flips
        if (b.length) for (let k = 1 + rng.int(3); k > 0; k--) b[rng.int(b.length)] ^= 1 << rng.int(8);
        break;
      case 1: // a byte set to an edge value
        if (b.length) b[at] = pick([0, 0xff, 0x7f, 0x80, 0x20, 0x22, 0x5b, 0x7b, rng.int(256)]);
        break;
      case 2: // truncation
        b = b.subarray(0, rng.int(b.length + 1));
        break;
      case 3: { // insertion of random bytes
        const ins = Buffer.from(Array.from({ length: 1 + rng.int(16) }, () => rng.int(256)));
        b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
        break;
      }
      case 4: { // deletion of a range
        const len = 1 + rng.int(Math.min(64, Math.max(1, b.length - at)));
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + len)]);
        break;
      }
      case 5: { // duplication of a chunk
        const len = 1 + rng.int(Math.min(256, Math.max(1, b.length - at)));
        b = Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)]);
        break;
      }
      case 6: // a 32-bit length field set huge
        if (b.length >= 4) b.writeUInt32LE(pick(HUGE32), rng.int(b.length - 3));
        break;
      case 7: // a 64-bit length field set huge (aligned: where u64 sizes live)
        if (b.length >= 8) b.writeBigUInt64LE(pick(HUGE64), 8 * rng.int(Math.floor(b.length / 8)));
        break;
      case 8: { // text: a number or token replaced / spliced in
        const s = b.toString('utf8');
        const nums = [...s.matchAll(/-?\d+(\.\d+)?(e[+-]?\d+)?/g)];
        const tok = pick(TOKENS);
        if (nums.length && rng.uniform() < 0.6) {
          const m = pick(nums);
          b = Buffer.from(s.slice(0, m.index) + tok + s.slice(m.index! + m[0].length));
        } else {
          b = Buffer.concat([b.subarray(0, at), Buffer.from(tok), b.subarray(at)]);
        }
        break;
      }
    }
  }
  return b;
}

// ---- targets ---------------------------------------------------------------

interface Target {
  seeds: Buffer[];
  text?: boolean;
  /** which file of a multi-file input the mutation goes to */
  run(input: Buffer, seedIndex: number): void | Promise<void>;
}

const f32 = (a: number[]): SafeTensor => ({ dtype: 'F32', shape: [a.length], bytes: new Uint8Array(Float32Array.from(a).buffer) });

function safetensorsTarget(): Target {
  const seeds = [
    Buffer.concat(encodeSafetensors([['w', { ...f32([1, 2, 3, 4, 5, 6]), shape: [2, 3] }], ['b', f32([7])]], { format: 'pt' })),
    Buffer.concat(encodeSafetensors([
      ['h', { dtype: 'F16', shape: [3], bytes: new Uint8Array(Uint16Array.from([0x3c00, 0xc100, 0x7c00]).buffer) }],
      ['bf', { dtype: 'BF16', shape: [1, 2], bytes: new Uint8Array(Uint16Array.from([0x3f80, 0x7fc0]).buffer) }],
      ['d', { dtype: 'F64', shape: [1], bytes: new Uint8Array(Float64Array.from([0.1]).buffer) }],
      ['e', { dtype: 'F32', shape: [0, 4], bytes: new Uint8Array(0) }],
    ])),
    Buffer.concat(encodeSafetensors([])),
  ];
  const file = path.join(work, 'in.safetensors');
  return {
    seeds,
    run(input) {
      writeFileSync(file, input);
      const r = readSafetensors(file);
      for (const [k, t] of r.tensors) if (t.dtype !== 'I32' && t.dtype !== 'I64' && t.dtype !== 'U8') asFloat32(t, file, k);
    },
  };
}

function checkpointTarget(): Target {
  const model = FakeModel.make(4);
  model.fill(7);
  const seedExp = path.join(work, 'seed-exp');
  rmSync(seedExp, { recursive: true, force: true });
  const train = {
    rng: { algo: 'xoshiro128**', s: [1, 2, 3, 4], spare: null },
    data: { epoch: 1, batch: 2, rng: { algo: 'xoshiro128**', s: [5, 6, 7, 8], spare: -0.25 } },
    accum: { steps: 1, samples: 8, loss: 0.5, mse: 0.5, vb: 0, gradNorm: 1, skipped: 0, tHist: [1, 0], bucketLoss: [0.5, 0] },
  };
  const seedDir = writeCheckpoint(model, seedExp, { step: 7, config: defaultsOf(), train });
  const files = readdirSync(seedDir).sort();
  const want = FakeModel.make(4);
  loadCheckpoint(want, seedDir);
  const wantState = JSON.stringify(readState(seedDir));
  const dir = path.join(work, 'ckpt');
  rmSync(dir, { recursive: true, force: true });
  cpSync(seedDir, dir, { recursive: true });
  return {
    // One seed per file: the mutation goes into that file, the others stay good.
    seeds: files.map((f) => readFileSync(path.join(seedDir, f))),
    run(input, i) {
      const f = path.join(dir, files[i]);
      writeFileSync(f, input);
      try {
        const m = FakeModel.make(4);
        const st = loadCheckpoint(m, dir, { note: () => {} });
        checkTrainState(st.train, path.join(dir, 'state.json'));
        checkStoredConfig(st.config, path.join(dir, 'state.json'));
        // Accepted: it must be the same checkpoint (no silent damage).
        for (const p of m.params()) for (const s of ['model', 'ema', 'adam_m', 'adam_v'] as const) {
          if (!p.trainable && s.startsWith('adam')) continue;
          if (!p.trainable && s === 'ema') continue;
          const a = m.readParam(p.name, s);
          const b = want.readParam(p.name, s);
          if (!a.every((v, j) => Object.is(v, b[j]))) throw new Error(`SILENT: ${files[i]} mutation accepted with different ${s} ${p.name}`);
        }
        if (JSON.stringify(st) !== wantState) throw new Error(`SILENT: ${files[i]} mutation accepted with a different state`);
      } finally {
        copyFileSync(path.join(seedDir, files[i]), f);
      }
    },
  };
}

function npyTarget(): Target {
  const mk = (name: string, arr: Parameters<typeof writeNpy>[1]) => {
    const f = path.join(work, name);
    writeNpy(f, arr);
    return readFileSync(f);
  };
  const seeds = [
    mk('s0.npy', { dtype: 'float32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) }),
    mk('s1.npy', { dtype: 'int64', shape: [2], data: new BigInt64Array([1n, -2n]) }),
    mk('s2.npy', { dtype: 'bool', shape: [3], data: new Uint8Array([0, 1, 1]) }),
    mk('s3.npy', { dtype: 'uint8', shape: [1, 2, 2, 1], data: new Uint8Array([1, 2, 3, 4]) }),
    Buffer.concat([npyHeaderBytes('float64', [1]), Buffer.alloc(8)]),
  ];
  const file = path.join(work, 'in.npy');
  return { seeds, run(input) { writeFileSync(file, input); readNpy(file); } };
}

function npzTarget(): Target {
  const mk = (name: string, zip64: boolean) => {
    const f = path.join(work, name);
    writeNpz(f, {
      arr_0: { dtype: 'uint8', shape: [2, 2, 2, 3], data: new Uint8Array(24).map((_, i) => i) },
      arr_1: { dtype: 'int64', shape: [2], data: new BigInt64Array([3n, 1n]) },
    }, { forceZip64: zip64 });
    return readFileSync(f);
  };
  // A deflated entry (numpy.savez_compressed layout).
  const npy = Buffer.concat([npyHeaderBytes('float32', [3]), Buffer.from(new Float32Array([1, 2, 3]).buffer)]);
  const comp = zlib.deflateRawSync(npy);
  const name = Buffer.from('v.npy');
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0); local.writeUInt16LE(20, 4); local.writeUInt16LE(8, 8);
  local.writeUInt32LE(crc32([npy]), 14); local.writeUInt32LE(comp.length, 18); local.writeUInt32LE(npy.length, 22); local.writeUInt16LE(name.length, 26);
  const cen = Buffer.alloc(46);
  cen.writeUInt32LE(0x02014b50, 0); cen.writeUInt16LE(20, 4); cen.writeUInt16LE(20, 6); cen.writeUInt16LE(8, 10);
  cen.writeUInt32LE(crc32([npy]), 16); cen.writeUInt32LE(comp.length, 20); cen.writeUInt32LE(npy.length, 24); cen.writeUInt16LE(name.length, 28);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0); end.writeUInt16LE(1, 8); end.writeUInt16LE(1, 10);
  end.writeUInt32LE(46 + name.length, 12); end.writeUInt32LE(30 + name.length + comp.length, 16);
  const seeds = [mk('s0.npz', false), mk('s1.npz', true), Buffer.concat([local, name, comp, cen, name, end])];
  const file = path.join(work, 'in.npz');
  return { seeds, run(input) { writeFileSync(file, input); readNpz(file); } };
}

function yamlTarget(): Target {
  const exp = path.join(work, 'yaml-exp');
  const seeds = [
    Buffer.from(TINY.replace('EXP', exp)),
    Buffer.from(`experiment_dir: ${exp}\nmodel:\n  name: DiT-S/2\n  input_size: 8\ndata:\n  image_size: 8\n  batch_size: 4\ndiffusion:\n  sampling: speed\n  tau: 700\n  k: 5\nsample:\n  steps: ddim10\n`),
  ];
  const file = path.join(work, 'in.yaml');
  return { seeds, text: true, run(input) { writeFileSync(file, input); loadConfig(file); } };
}

// ---- .pt targets (speed-train convert) --------------------------------------
// Real torch.save files (test/fixtures/pt, written by tools/make_pt_fixtures.py)
// and hostile inputs (test/helpers/hostile-pt.ts, at small sizes) are mutated.

const PT_FIX = path.resolve('test/fixtures/pt');

/** The data.pkl of a zip .pt, and the object pickle of a legacy one. */
function ptPickles(): Buffer[] {
  const out: Buffer[] = [];
  for (const name of ['tiny_f16.pt', 'nested.pt', 'strided.pt', 'malicious.pt']) {
    const file = path.join(PT_FIX, name);
    const bytes = readFileSync(file);
    const fd = openSync(file, 'r');
    try {
      const e = readZipDirectory(fd, file).find((x) => x.name.endsWith('/data.pkl'))!;
      const start = zipEntryDataOffset(fd, e, file);
      out.push(bytes.subarray(start, start + e.size));
    } finally {
      closeSync(fd);
    }
  }
  for (const name of ['legacy.pth', 'legacy_nested.pth']) {
    const bytes = readFileSync(path.join(PT_FIX, name));
    let pos = 0;
    for (let i = 0; i < 3; i++) pos = unpickleAt(bytes, pos, name).end;
    out.push(bytes.subarray(pos, unpickleAt(bytes, pos, name).end));
  }
  return out;
}

function ptPickleTarget(): Target {
  const seeds = [
    ...ptPickles(),
    hostile.memoBomb(2000), hostile.longInt(40), hostile.dagKeyDict(30), hostile.deepListKeyDict(3000),
    hostile.deepTupleKeyDict(3000), hostile.bigAppendsDict(3000), hostile.tensorPickle(64, 16),
  ];
  return {
    seeds,
    run(input) {
      const root = unpickle(input, 'in.pkl');
      selectStateDict(root, 'in.pkl'); // describes what the pickle holds when it finds no state dict
    },
  };
}

function ptZipTarget(): Target {
  const files = ['tiny_f16.pt', 'nested.pt', 'strided.pt'].map((n) => readFileSync(path.join(PT_FIX, n)));
  const seeds = [...files, hostile.inflateBombPt(4), hostile.inflateBombPt(96)];
  const file = path.join(work, 'in.pt');
  const out = path.join(work, 'out.safetensors');
  // What each seed converts to: an accepted mutation must convert to the same bytes (every entry has a CRC-32).
  const want = seeds.map((b) => {
    writeFileSync(file, b);
    try {
      convertPt(file, out, { log: () => {} });
      return readFileSync(out);
    } catch {
      return null; // the 96 MiB bomb: refused before inflating
    }
  });
  return {
    seeds,
    run(input, i) {
      writeFileSync(file, input);
      rmSync(out, { force: true });
      convertPt(file, out, { log: () => {} });
      if (want[i] === null || !readFileSync(out).equals(want[i]!)) throw new Error(`SILENT: a mutation of .pt seed ${i} converted to other bytes`);
    },
  };
}

function ptLegacyTarget(): Target {
  const seeds = ['legacy.pth', 'legacy_nested.pth'].map((n) => readFileSync(path.join(PT_FIX, n)));
  const file = path.join(work, 'in.pth');
  const out = path.join(work, 'out.safetensors');
  // The legacy layout has no checksum: a flipped storage byte converts to another value, as in torch.load.
  return { seeds, run(input) { writeFileSync(file, input); convertPt(file, out, { log: () => {} }); } };
}

// ---- latent shard folders, state.json against its tensors, the VAE's config.json ----

/**
 * A shard folder (manifest.json, shard, flipped shard, labels): one seed per file,
 * the mutation goes into that file; one input in eight instead turns that file
 * into a folder, a link to one, or renames the manifest's entry to "", ".." or a
 * missing name. The data set is built and every row read, flipped and not.
 */
function shardsTarget(): Target {
  const dir = path.join(work, 'lat');
  mkdirSync(dir, { recursive: true });
  const n = 5;
  const x = new Float32Array(n * 16).map((_, i) => Math.sin(i));
  writeNpy(path.join(dir, 'shard-00000.npy'), { dtype: 'float32', shape: [n, 4, 2, 2], data: x });
  writeNpy(path.join(dir, 'shard-00000-flip.npy'), { dtype: 'float32', shape: [n, 4, 2, 2], data: x.map((v) => -v) });
  writeNpy(path.join(dir, 'shard-00000-labels.npy'), { dtype: 'int64', shape: [n], data: BigInt64Array.from({ length: n }, (_, i) => BigInt(i % 3)) });
  writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({
    format: 'speed-train-latents', version: 1, count: n, shape: [4, 2, 2], dtype: 'float32', latent_scale: 0.18215,
    vae: { file: 'vae.safetensors', sha256: 'ab'.repeat(32), down_factor: 8, sample_posterior: false, seed: null }, image_size: 16, crop: 'adm_center_crop',
    flip: true, source: '/images', classes: ['a', 'b', 'c'], num_classes: 3, skipped: 0, created: '2026-01-01T00:00:00.000Z',
    shards: [{ file: 'shard-00000.npy', labels: 'shard-00000-labels.npy', flip: 'shard-00000-flip.npy', count: n, first_image: 0, skipped: 0 }],
  }, null, 1));
  const files = ['manifest.json', 'shard-00000.npy', 'shard-00000-flip.npy', 'shard-00000-labels.npy'];
  const good = files.map((f) => readFileSync(path.join(dir, f)));
  const opts = { root: dir, numClasses: 3, shape: [4, 2, 2] as const, skipBadFiles: rng.uniform() < 0.5, configuredScale: 1, warn: () => {} };
  return {
    seeds: good,
    text: false,
    run(input, i) {
      const f = path.join(dir, files[i]);
      try {
        if (rng.int(8) === 0) {
          rmSync(f, { force: true });
          const how = rng.int(3);
          if (how === 0) mkdirSync(f);
          else if (how === 1) symlinkSync(work, f);
          else {
            const m = JSON.parse(good[0].toString()) as { shards: Record<string, unknown>[] };
            m.shards[0][pick(['file', 'labels', 'flip'])] = pick(['', '..', '.', 'missing.npy', 'shard-00000.npy', null, 7]);
            writeFileSync(f, good[i]);
            writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
          }
        } else writeFileSync(f, input);
        const ds = new LatentShardsDataset(opts);
        try {
          const k = Math.min(ds.size, 64);
          void ds.load(Int32Array.from({ length: k }, (_, j) => j), new Uint8Array(k));
          void ds.load(Int32Array.from({ length: k }, (_, j) => j), new Uint8Array(k).fill(1));
        } finally {
          void ds.close();
        }
      } finally {
        rmSync(f, { recursive: true, force: true });
        files.forEach((name, j) => writeFileSync(path.join(dir, name), good[j]));
      }
    },
  };
}

/**
 * A checkpoint of the tiny DiT whose state.json is mutated as text and then given a
 * valid self-checksum (a consistent file that lies: the checksum stops nothing
 * here), sampled from with loadForGeneration. A config naming a bigger network
 * must be refused before it is allocated (the worker's RSS bound catches that).
 */
function stateTarget(): Target {
  useAddon();
  const cfgFile = path.join(work, 'tiny.yaml');
  writeFileSync(cfgFile, TINY.replace('EXP', path.join(work, 'state-exp')));
  const c = loadConfigFile(cfgFile, { phase: 'sample' }).config;
  const { model } = createModel(c);
  const train = {
    rng: { algo: 'xoshiro128**', s: [1, 2, 3, 4], spare: null },
    data: { epoch: 0, batch: 1, rng: { algo: 'xoshiro128**', s: [5, 6, 7, 8], spare: null } },
    accum: { steps: 0, samples: 0, loss: 0, mse: 0, vb: 0, gradNorm: 0, skipped: 0, tHist: [0], bucketLoss: [0] },
  };
  const dir = writeCheckpoint(model, path.join(work, 'state-exp'), { step: 3, config: c as unknown as Record<string, unknown>, train } as Parameters<typeof writeCheckpoint>[2]);
  const want = model.readParam('pos_embed', 'ema');
  model.dispose();
  const stateFile = path.join(dir, 'state.json');
  const good = readFileSync(stateFile);
  const { state_crc32: _, ...unsigned } = JSON.parse(good.toString()) as Record<string, unknown>;
  return {
    seeds: [Buffer.from(JSON.stringify(unsigned, null, 1))],
    text: true,
    run(input) {
      try {
        // Re-signed when it still parses as an object: the mutation reaches the validation.
        let text = input.toString('utf8');
        try {
          const o = JSON.parse(text) as unknown;
          if (o !== null && typeof o === 'object' && !Array.isArray(o)) {
            const model = ((o as { config?: { model?: Record<string, unknown> } }).config?.model);
            // One in eight: a consistent config of a bigger network (it must not be allocated).
            if (model && typeof model === 'object' && rng.int(8) === 0) {
              Object.assign(model, { name: pick(['DiT-S/2', 'DiT-B/4', 'DiT-Ti/2']), depth: null, hidden_size: null, num_heads: null, input_size: pick([8, 16, 32]) });
            }
            delete (o as Record<string, unknown>).state_crc32;
            const body = JSON.stringify(o);
            text = JSON.stringify({ ...(o as object), state_crc32: (zlib.crc32(body) >>> 0).toString(16).padStart(8, '0') });
          }
        } catch { /* not JSON: the reader says so */ }
        writeFileSync(stateFile, text);
        const g = loadForGeneration(c, dir, () => {}, () => {});
        try {
          const got = g.model.readParam('pos_embed', 'ema');
          if (!got.every((v, j) => Object.is(v, want[j]))) throw new Error('SILENT: a state.json mutation was accepted with different weights');
        } finally {
          g.model.dispose();
        }
      } finally {
        writeFileSync(stateFile, good);
      }
    },
  };
}

/** The tiny VAE's diffusers config.json, mutated as text, loaded with its weight file. */
function vaeConfigTarget(): Target {
  useAddon();
  const dir = mkdtempSync(path.join(work, 'vae-'));
  const weights = writeTinyVae(dir, { naming: 'diffusers', seed: 1 });
  const cfg = path.join(dir, 'config.json');
  const good = readFileSync(cfg);
  return {
    seeds: [good],
    text: true,
    async run(input) {
      let text = input;
      // One in four: a key set to a small integer (in range, but maybe not consistent:
      // norm_num_groups that does not divide the channels, layers_per_block 0).
      if (rng.int(4) === 0) {
        try {
          const o = JSON.parse(good.toString()) as Record<string, unknown>;
          o[pick(['norm_num_groups', 'layers_per_block', 'latent_channels', 'in_channels', 'out_channels', 'block_out_channels'])] = rng.int(2) ? rng.int(40) : [rng.int(40), rng.int(40)];
          text = Buffer.from(JSON.stringify(o));
        } catch { /* the seed is JSON */ }
      }
      writeFileSync(cfg, text);
      try {
        (await VAE.load(weights, { threads: 1 })).dispose();
      } finally {
        writeFileSync(cfg, good);
      }
    },
  };
}

const TARGETS: Record<string, () => Target> = {
  safetensors: safetensorsTarget, checkpoint: checkpointTarget, npy: npyTarget, npz: npzTarget, yaml: yamlTarget,
  'pt-pickle': ptPickleTarget, 'pt-zip': ptZipTarget, 'pt-legacy': ptLegacyTarget,
  shards: shardsTarget, state: stateTarget, 'vae-config': vaeConfigTarget,
};

// ---- loop ------------------------------------------------------------------

const t = TARGETS[target]();
const counts = { target, inputs: 0, clean_errors: 0, accepted: 0, untyped: 0, silent: 0, memory: 0, ms: 0 };
const failures: string[] = [];
const status = path.join(work, 'status');
const t0 = Date.now();
for (let i = 0; i < maxIters && Date.now() - t0 < budgetMs; i++) {
  const si = rng.int(t.seeds.length);
  const input = mutate(t.seeds[si], t.text === true);
  // The parent reads these if this process dies or stops answering.
  writeFileSync(path.join(work, 'current.bin'), input);
  writeFileSync(status, `${i} ${si}\n`);
  counts.inputs++;
  try {
    await t.run(input, si);
    counts.accepted++;
  } catch (e) {
    if (e instanceof SpeedTrainError) counts.clean_errors++;
    else {
      const silent = e instanceof Error && e.message.startsWith('SILENT');
      if (silent) counts.silent++;
      else counts.untyped++;
      if (failures.length < 5) {
        const keep = path.join(work, `failure-${i}.bin`);
        writeFileSync(keep, input);
        failures.push(`input ${i} (seed ${si}, saved as ${keep}): ${String((e as Error)?.stack ?? e).split('\n').slice(0, 3).join(' | ')}`);
      }
    }
  }
  if (resourceUsage().maxRSS * 1024 > MAX_RSS) {
    counts.memory++;
    const keep = path.join(work, `failure-${i}.bin`);
    writeFileSync(keep, input);
    failures.push(`input ${i} (saved as ${keep}): peak RSS ${(resourceUsage().maxRSS / 1024).toFixed(0)} MiB exceeds ${MAX_RSS / 2 ** 20} MiB`);
    break;
  }
}
counts.ms = Date.now() - t0;
process.stdout.write(JSON.stringify({ ...counts, peak_rss_mb: Math.round(resourceUsage().maxRSS / 1024), failures }) + '\n');
