import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { readNpz, writeNpz, listNpz } from '../src/io/npz.js';
import { crc32 } from '../src/io/zip.js';
import { DataError } from '../src/errors.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'npz-test-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

function numpyPython(): string | null {
  for (const py of ['python3', '/usr/bin/python3']) {
    if (spawnSync(py, ['-c', 'import numpy'], { encoding: 'utf8' }).status === 0) return py;
  }
  return null;
}
const PY = numpyPython();

function samplesLike() {
  const N = 3, H = 4, W = 5, C = 3;
  const img = new Uint8Array(N * H * W * C);
  for (let i = 0; i < img.length; i++) img[i] = (i * 37) & 255;
  return {
    arr_0: { dtype: 'uint8' as const, shape: [N, H, W, C], data: img },
    arr_1: { dtype: 'int64' as const, shape: [N], data: new BigInt64Array([0n, 9n, 3n]) },
    f32: { dtype: 'float32' as const, shape: [2], data: new Float32Array([0.25, -8]) },
    f64: { dtype: 'float64' as const, shape: [1, 1], data: new Float64Array([1e-300]) },
    i32: { dtype: 'int32' as const, shape: [2], data: new Int32Array([-1, 1]) },
    b: { dtype: 'bool' as const, shape: [2], data: new Uint8Array([0, 1]) },
  };
}

test('crc32 matches the standard check value', () => {
  assert.equal(crc32([Buffer.from('123456789')]), 0xcbf43926);
  assert.equal(crc32([Buffer.from('1234'), Buffer.from('56789')]), 0xcbf43926);
});

test('npz round trip for every dtype, with and without ZIP64 records', () => {
  for (const forceZip64 of [false, true]) {
    const f = path.join(dir, `rt${forceZip64 ? '64' : ''}.npz`);
    const arrays = samplesLike();
    writeNpz(f, arrays, { forceZip64 });
    const back = readNpz(f);
    assert.deepEqual(Object.keys(back), Object.keys(arrays));
    for (const [k, a] of Object.entries(arrays)) {
      assert.equal(back[k].dtype, a.dtype, k);
      assert.deepEqual(back[k].shape, a.shape, k);
      assert.deepEqual(back[k].data, a.data, k);
    }
    assert.deepEqual(listNpz(f), Object.keys(arrays));
    const only = readNpz(f, { keys: ['arr_1'] });
    assert.deepEqual(Object.keys(only), ['arr_1']);
  }
});

test('npz: bad archives give DataErrors naming the file', () => {
  const f = path.join(dir, 'good.npz');
  writeNpz(f, samplesLike());
  const good = fs.readFileSync(f);

  const notZip = path.join(dir, 'notzip.npz');
  fs.writeFileSync(notZip, Buffer.alloc(100, 1));
  assert.throws(() => readNpz(notZip), (e: unknown) => e instanceof DataError && e.file === notZip && /not a zip archive/.test(e.message));

  const trunc = path.join(dir, 'trunc.npz');
  fs.writeFileSync(trunc, good.subarray(0, good.length - 40));
  assert.throws(() => readNpz(trunc), /trunc\.npz: .*(truncated|no end-of-central-directory)/);

  // flip one byte of the image payload: the CRC check must catch it
  const corrupt = path.join(dir, 'corrupt.npz');
  const bad = Buffer.from(good);
  const at = bad.indexOf(Buffer.from([37, 74, 111])); // arr_0 payload starts 0, 37, 74, 111
  assert.ok(at > 0);
  bad[at + 1] ^= 0xff;
  fs.writeFileSync(corrupt, bad);
  assert.throws(() => readNpz(corrupt), /corrupt\.npz: CRC-32 mismatch in zip entry 'arr_0\.npy'/);

  assert.throws(() => readNpz(f, { keys: ['mu'] }), /good\.npz: missing array\(s\) mu; the archive holds arr_0, arr_1/);
  assert.throws(() => writeNpz(path.join(dir, 'x.npz'), { a: { dtype: 'uint8', shape: [2], data: new Uint8Array(3) } }), /x\.npz\[a\]: data has 3 elements/);
  assert.throws(() => writeNpz(path.join(dir, 'x.npz'), {}), /needs at least one array/);
});

test('npz: deflated entries are read (hand-made archive)', () => {
  // Build a deflated archive by hand to exercise the inflate path without numpy.
  const f = path.join(dir, 'stored.npz');
  writeNpz(f, { v: { dtype: 'float64', shape: [3], data: new Float64Array([1, 2, 3]) } });
  const raw = fs.readFileSync(f);
  // Extract the .npy bytes (stored entry: after the 30-byte local header + name)
  const nameLen = raw.readUInt16LE(26);
  const size = raw.readUInt32LE(22);
  const npy = raw.subarray(30 + nameLen, 30 + nameLen + size);
  const comp = zlib.deflateRawSync(npy);
  const name = Buffer.from('v.npy');
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0); local.writeUInt16LE(20, 4); local.writeUInt16LE(8, 8);
  local.writeUInt32LE(crc32([npy]), 14); local.writeUInt32LE(comp.length, 18); local.writeUInt32LE(npy.length, 22);
  local.writeUInt16LE(name.length, 26);
  const cen = Buffer.alloc(46);
  cen.writeUInt32LE(0x02014b50, 0); cen.writeUInt16LE(20, 4); cen.writeUInt16LE(20, 6); cen.writeUInt16LE(8, 10);
  cen.writeUInt32LE(crc32([npy]), 16); cen.writeUInt32LE(comp.length, 20); cen.writeUInt32LE(npy.length, 24);
  cen.writeUInt16LE(name.length, 28); cen.writeUInt32LE(0, 42);
  const cdOff = 30 + name.length + comp.length;
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0); end.writeUInt16LE(1, 8); end.writeUInt16LE(1, 10);
  end.writeUInt32LE(46 + name.length, 12); end.writeUInt32LE(cdOff, 16);
  const d = path.join(dir, 'deflated.npz');
  fs.writeFileSync(d, Buffer.concat([local, name, comp, cen, name, end]));
  assert.deepEqual(readNpz(d).v.data, new Float64Array([1, 2, 3]));
  // a bad CRC in a deflated entry is caught too
  const bad = Buffer.concat([local, name, comp, cen, name, end]);
  bad.writeUInt32LE(1234, 30 + name.length + comp.length + 16);
  fs.writeFileSync(d, bad);
  assert.throws(() => readNpz(d), /CRC-32 mismatch in zip entry 'v\.npy'/);
});

test('npz interop with numpy (savez, savez_compressed, our files in numpy.load)', { skip: PY ? false : 'no python3 with numpy' }, () => {
  const ours = path.join(dir, 'ours.npz');
  const ours64 = path.join(dir, 'ours64.npz');
  writeNpz(ours, samplesLike());
  writeNpz(ours64, samplesLike(), { forceZip64: true });
  const script = `
import numpy as np, sys, zipfile
d = sys.argv[1]
for name in ('ours.npz', 'ours64.npz'):
    assert zipfile.ZipFile(d + '/' + name).testzip() is None
    z = np.load(d + '/' + name)
    assert sorted(z.files) == sorted(['arr_0', 'arr_1', 'f32', 'f64', 'i32', 'b']), z.files
    a = z['arr_0']; assert a.dtype == np.uint8 and a.shape == (3, 4, 5, 3)
    assert (a.reshape(-1) == (np.arange(a.size) * 37) % 256).all()
    assert z['arr_1'].dtype == np.int64 and z['arr_1'].tolist() == [0, 9, 3]
    assert z['b'].dtype == np.bool_
img = np.arange(2 * 3 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 3)
np.savez(d + '/np.npz', img, np.array([4, 5]), mu=np.array([0.5, 1.5]), sigma=np.eye(2))
np.savez_compressed(d + '/npc.npz', img, np.array([4, 5]), mu=np.array([0.5, 1.5]), sigma=np.eye(2))
print('ok')
`;
  const r = spawnSync(PY!, ['-c', script, dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'ok');
  for (const name of ['np.npz', 'npc.npz']) {
    const z = readNpz(path.join(dir, name));
    assert.deepEqual(Object.keys(z).sort(), ['arr_0', 'arr_1', 'mu', 'sigma']);
    assert.deepEqual(z.arr_0.shape, [2, 3, 3, 3]);
    assert.equal(z.arr_0.data[53], 53);
    assert.deepEqual(z.arr_1.data, new BigInt64Array([4n, 5n]));
    assert.deepEqual(z.mu.data, new Float64Array([0.5, 1.5]));
    assert.deepEqual(z.sigma.data, new Float64Array([1, 0, 0, 1]));
  }
});
