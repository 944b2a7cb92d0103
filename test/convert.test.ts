// speed-train convert: .pt files written by PyTorch (tools/make_pt_fixtures.py with
// Debian's python3-torch 1.13) through the restricted unpickler, compared with the
// SHA-256 and first values the script recorded; a malicious pickle is refused.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { convertPt } from '../src/convert/index.js';
import { gather, openPt } from '../src/convert/pt.js';
import { unpickle, unpickleAt, type PtTensor } from '../src/convert/unpickle.js';
import { CheckpointError } from '../src/errors.js';
import { asFloat32, readSafetensors } from '../src/io/safetensors.js';

const FIX = path.resolve('test/fixtures/pt');
type Want = { shape: number[]; dtype: string; sha256: string; first: number[] };
const expected = JSON.parse(readFileSync(path.join(FIX, 'expected.json'), 'utf8')) as { tensors: Record<string, Record<string, Want>> };
const tmp = () => mkdtempSync(path.join(tmpdir(), 'conv-'));

function checkAgainst(out: string, want: Record<string, Want>) {
  const { tensors } = readSafetensors(out);
  assert.deepEqual([...tensors.keys()].sort(), Object.keys(want).sort());
  for (const [name, w] of Object.entries(want)) {
    const t = tensors.get(name)!;
    assert.equal(t.dtype, w.dtype, name);
    assert.deepEqual(t.shape, w.shape, name);
    assert.equal(createHash('sha256').update(t.bytes).digest('hex'), w.sha256, `${name}: bytes differ from torch's`);
    const b = t.bytes;
    const first = t.dtype === 'I64' ? [...new BigInt64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength))].map(Number)
      : t.dtype === 'I32' ? [...new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength))]
      : [...asFloat32(t, out, name)];
    assert.deepEqual(first.slice(0, w.first.length), w.first, name);
  }
}

test('a tiny DiT state dict in F32, F16 and BF16 converts to the bytes torch holds', () => {
  const dir = tmp();
  for (const name of ['tiny_f32', 'tiny_f16', 'tiny_bf16']) {
    const out = path.join(dir, `${name}.safetensors`);
    const logs: string[] = [];
    const r = convertPt(path.join(FIX, `${name}.pt`), out, { log: (m) => logs.push(m) });
    assert.equal(r.key, null);
    assert.equal(r.tensors, Object.keys(expected.tensors[name]).length);
    checkAgainst(out, expected.tensors[name]);
    assert.match(logs[0], new RegExp(`${name}\\.pt -> .*: ${r.tensors} tensors, ${name === 'tiny_f32' ? 'F32' : name === 'tiny_f16' ? 'F16' : 'BF16'}`));
  }
});

test('a nested checkpoint: ema by default, --key model, a bad --key names what the file holds', () => {
  const dir = tmp();
  const logs: string[] = [];
  const a = path.join(dir, 'a.safetensors');
  assert.equal(convertPt(path.join(FIX, 'nested.pt'), a, { log: (m) => logs.push(m) }).key, 'ema');
  checkAgainst(a, expected.tensors['nested.ema']);
  assert.match(logs[0], /\[ema\].*the file also holds model \(choose with --key\)/);
  const b = path.join(dir, 'b.safetensors');
  convertPt(path.join(FIX, 'nested.pt'), b, { key: 'model', log: () => {} });
  checkAgainst(b, expected.tensors['nested.model']);
  assert.throws(() => convertPt(path.join(FIX, 'nested.pt'), path.join(dir, 'c.safetensors'), { key: 'steps' }),
    /nested\.pt: --key steps: is number, not a state dict; the file holds: model \(a state dict of \d+ tensors\), ema .*steps \(number\), args \(record\)/);
});

test('non-contiguous tensors (transpose, offsets, shared and expanded storages) are gathered in row-major order', () => {
  const dir = tmp();
  const out = path.join(dir, 's.safetensors');
  convertPt(path.join(FIX, 'strided.pt'), out, { log: () => {} });
  checkAgainst(out, expected.tensors.strided);
  const t = readSafetensors(out).tensors;
  assert.deepEqual([...asFloat32(t.get('transposed')!, out, 't').subarray(0, 6)], [0, 6, 12, 18, 1, 7]);
  assert.deepEqual([...asFloat32(t.get('sliced')!, out, 's')], [8, 9, 10, 14, 15, 16]);
  // a view running past its storage is refused
  const storage = { kind: 'storage' as const, dtype: 'F32' as const, key: '0', numel: 4 };
  assert.throws(() => gather({ kind: 'tensor', storage, offset: 2, size: [2, 2], stride: [2, 1] }, new Uint8Array(16), 'x.pt'), /x\.pt: tensor view .* runs past its storage of 4 elements/);
});

test('a pickle that would call os.system is refused, naming the callable, and runs nothing', () => {
  const marker = '/tmp/speed-train-pwned';
  const dir = tmp();
  assert.throws(() => convertPt(path.join(FIX, 'malicious.pt'), path.join(dir, 'm.safetensors')), (e: unknown) => {
    assert.ok(e instanceof CheckpointError);
    assert.match(e.message, /malicious\.pt: pickle byte \d+: refusing to load posix\.system: a \.pt may only hold tensors/);
    return true;
  });
  assert.equal(existsSync(marker), false);
  assert.equal(existsSync(path.join(dir, 'm.safetensors')), false);
});

test('hostile or foreign pickles and archives give CheckpointErrors', () => {
  const dir = tmp();
  const cases: [Uint8Array, RegExp][] = [
    [Uint8Array.from([0x80, 0x02, 0x63, ...Buffer.from('builtins\neval\n'), 0x2e]), /refusing to load builtins\.eval/],
    [Uint8Array.from([0x80, 0x04, 0x8c, 2, ...Buffer.from('os'), 0x8c, 6, ...Buffer.from('system'), 0x93, 0x2e]), /refusing to load os\.system/],
    [Uint8Array.from([0x80, 0x02, 0x7d]), /truncated/],
    [Uint8Array.from([0x80, 0x02, 0x68, 5, 0x2e]), /memo key 5 is not set/],
    [Uint8Array.from([0x80, 0x02, 0x30, 0x2e]), /stack underflow/],
    [Uint8Array.from([0x80, 0x02, 0x69, 0x2e]), /INST .* is refused/],
    [Uint8Array.from([0x80, 0x02, 0x8d, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x2e]), /length .* exceeds/],
    [Uint8Array.from([0x28, 0x2e]), /not a pickle of protocol 2/],
  ];
  for (const [bytes, re] of cases) assert.throws(() => unpickle(bytes, 'p.pkl'), (e: unknown) => e instanceof CheckpointError && re.test(e.message), String(re));
  // A plain protocol-2 dict with a list, a tuple, numbers and strings decodes.
  const ok = unpickle(Uint8Array.from([0x80, 0x02, 0x7d, 0x58, 1, 0, 0, 0, 0x61, 0x5d, 0x4b, 7, 0x61, 0x73, 0x2e]), 'p.pkl');
  assert.ok(ok instanceof Map);
  assert.deepEqual(ok.get('a'), [7]);
  const legacy = path.join(dir, 'old.pt');
  writeFileSync(legacy, Uint8Array.from([0x80, 0x02, 0x8a, 0x0a]));
  assert.throws(() => convertPt(legacy, path.join(dir, 'x.safetensors')), /old\.pt: pickle byte 4: truncated \(needs 10 more bytes\)/);
  const text = path.join(dir, 'text.pt');
  writeFileSync(text, 'hello');
  assert.throws(() => convertPt(text, path.join(dir, 'x.safetensors')), /text\.pt: not a PyTorch checkpoint: neither a zip archive .* nor a pickle .*; it starts with 68656c6c/);
  const trunc = path.join(dir, 'trunc.pt');
  writeFileSync(trunc, readFileSync(path.join(FIX, 'tiny_f32.pt')).subarray(0, 5000));
  assert.throws(() => convertPt(trunc, path.join(dir, 'y.safetensors')), (e: unknown) => e instanceof CheckpointError && /trunc\.pt/.test(e.message));
  assert.throws(() => convertPt(path.join(FIX, 'tiny_f32.pt'), path.join(dir, 'y.bin')), /must be a \.safetensors file/);
});

test('the CLI converts, and a converted DiT state dict samples with its architecture inferred', async () => {
  const { spawnSync } = await import('node:child_process');
  const dir = tmp();
  const out = path.join(dir, 'tiny.safetensors');
  const ok = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'convert', path.join(FIX, 'tiny_bf16.pt'), out], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /convert: .*tiny_bf16\.pt -> .*tiny\.safetensors: \d+ tensors, BF16/);
  const bad = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'convert', path.join(FIX, 'malicious.pt'), path.join(dir, 'm.safetensors')], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /speed-train: error: .*malicious\.pt: pickle byte \d+: refusing to load posix\.system/);
  const { loadForGeneration } = await import('../src/generate/model.js');
  const { defaultsOf } = await import('../src/config/schema.js');
  const c = structuredClone(defaultsOf()) as unknown as import('../src/config/schema.js').Config;
  c.model = { ...c.model, name: 'DiT-S/2', input_size: 4, in_channels: 3, num_classes: 2, depth: null, hidden_size: null, num_heads: 2, init_from: null };
  c.threads = 1;
  const logs: string[] = [];
  const g = loadForGeneration(c, out, (m) => logs.push(m));
  try {
    assert.deepEqual({ ...g.model.config }, { inputSize: 4, patchSize: 2, inChannels: 3, hiddenSize: 16, depth: 1, numHeads: 2, mlpRatio: 4, numClasses: 2, classDropoutProb: 0.1, learnSigma: true });
    const want = expected.tensors.tiny_bf16['blocks.0.attn.qkv.weight'].first;
    assert.deepEqual([...g.model.readParam('blocks.0.attn.qkv.weight', 'ema').subarray(0, 4)], want);
  } finally {
    g.model.dispose();
  }
  assert.match(logs[0], /inferred DiT-S\/2 depth 1 hidden 16, input 4x4x3/);
});

// ---- the legacy layout (torch < 1.6; torch.save(..., _use_new_zipfile_serialization=False)) ----

/** Byte offsets in a legacy file: after each of its five pickles. */
function legacyPickleEnds(bytes: Uint8Array): number[] {
  const ends: number[] = [];
  let pos = 0;
  for (let i = 0; i < 5; i++) ends.push((pos = unpickleAt(bytes, pos, 'x.pth').end));
  return ends;
}

test('legacy torch.save files convert to the bytes torch holds: a state dict of mixed dtypes and shared views, a nested checkpoint', () => {
  const dir = tmp();
  const a = path.join(dir, 'a.safetensors');
  const logs: string[] = [];
  assert.equal(convertPt(path.join(FIX, 'legacy.pth'), a, { log: (m) => logs.push(m) }).key, null);
  checkAgainst(a, expected.tensors.legacy);
  assert.match(logs[0], /legacy\.pth -> .*: 11 tensors, F32\/I64\/F16\/BF16\/I32, .*; read from the legacy \(pre-1\.6\) torch\.save layout$/);
  const b = path.join(dir, 'b.safetensors');
  assert.equal(convertPt(path.join(FIX, 'legacy_nested.pth'), b, { log: () => {} }).key, 'ema');
  checkAgainst(b, expected.tensors['legacy_nested.ema']);
  const c = path.join(dir, 'c.safetensors');
  convertPt(path.join(FIX, 'legacy_nested.pth'), c, { key: 'model', log: () => {} });
  checkAgainst(c, expected.tensors['legacy_nested.model']);
  assert.throws(() => convertPt(path.join(FIX, 'legacy_nested.pth'), path.join(dir, 'd.safetensors'), { key: 'args' }),
    /legacy_nested\.pth: --key args: is record, not a state dict; the file holds: model \(a state dict of 5 tensors\), ema .*steps \(number\), args \(record\)/);
  // The public reader gives the same structure for both layouts (what an Inception loader uses).
  const pt = openPt(path.join(FIX, 'legacy.pth'));
  try {
    assert.equal(pt.format, 'legacy');
    assert.ok(pt.root instanceof Map);
    const w = pt.root.get('fc.weight') as PtTensor;
    assert.deepEqual(w.size, [6, 5]);
    assert.equal(pt.tensorBytes(w).byteLength, 120);
  } finally {
    pt.close();
  }
});

test('legacy files: truncation, storage counts that disagree with the pickle or the file size, trailing bytes, a foreign pickle and code are refused', () => {
  const dir = tmp();
  const src = readFileSync(path.join(FIX, 'legacy.pth'));
  const ends = legacyPickleEnds(src);
  const keys = unpickleAt(src, ends[3], 'x.pth').value as string[];
  const put = (name: string, b: Uint8Array) => { const f = path.join(dir, name); writeFileSync(f, b); return f; };
  const conv = (f: string) => () => convertPt(f, path.join(dir, 'o.safetensors'), { log: () => {} });
  const refused = (f: string, re: RegExp) => (e: unknown) => e instanceof CheckpointError && e.message.startsWith(`${f}: `) && re.test(e.message);
  // Truncated anywhere: in the pickles, in a storage count, in a storage's data.
  for (const cut of [3, ends[1] + 5, ends[3] - 2, ends[4] + 3, ends[4] + 20, src.length - 1]) {
    const f = put(`cut${cut}.pth`, src.subarray(0, cut));
    assert.throws(conv(f), refused(f, /truncated/), `cut at ${cut}`);
  }
  const f1 = put('cut-data.pth', src.subarray(0, src.length - 1));
  assert.throws(conv(f1), refused(f1, new RegExp(`storage ${keys[keys.length - 1]}: .* run past the end of the file \\(${src.length - 1} bytes\\): the file is truncated`)));
  // The first storage's count disagrees with its persistent id: named by key.
  const b = Buffer.from(src);
  b.writeBigUInt64LE(b.readBigUInt64LE(ends[4]) + 1n, ends[4]);
  const f2 = put('count.pth', b);
  assert.throws(conv(f2), refused(f2, new RegExp(`storage ${keys[0]}: the file holds \\d+ elements at byte ${ends[4]}, the pickle says \\d+`)));
  const f3 = put('trailing.pth', Buffer.concat([src, Buffer.from('xx')]));
  assert.throws(conv(f3), refused(f3, /2 bytes after the last storage/));
  // A pickle that is not torch.save's: no magic number.
  const f4 = put('plain.pkl', Uint8Array.from([0x80, 0x02, 0x7d, 0x2e]));
  assert.throws(conv(f4), refused(f4, /a pickle that is not a torch\.save file: it starts with \{\}, not torch's magic number 0x1950a86a20f9469cfc6c/));
  // A legacy file whose object would call os.system: refused by the same unpickler.
  const evil = Buffer.concat([src.subarray(0, ends[2]), Buffer.from([0x80, 2, 0x63, ...Buffer.from('posix\nsystem\n'), 0x8c, 4, ...Buffer.from('true'), 0x85, 0x52, 0x2e])]);
  const f5 = put('evil.pth', evil);
  assert.throws(conv(f5), refused(f5, /refusing to load posix\.system/));
});
