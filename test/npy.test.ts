import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { readNpy, readNpyHeader, writeNpy, npyHeaderBytes, type NdArrayInput } from '../src/io/npy.js';
import { DataError } from '../src/errors.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'npy-test-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

/** A python3 that imports numpy, or null (interop tests are skipped then). */
export function findNumpyPython(): string | null {
  for (const py of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(py, ['-c', 'import numpy'], { encoding: 'utf8' });
    if (r.status === 0) return py;
  }
  return null;
}
const PY = findNumpyPython();

const samples: Record<string, NdArrayInput> = {
  float32: { dtype: 'float32', shape: [2, 3], data: new Float32Array([1.5, -2, 3e-7, Infinity, -0, 42]) },
  float64: { dtype: 'float64', shape: [3], data: new Float64Array([Math.PI, -1e300, NaN]) },
  int32: { dtype: 'int32', shape: [2, 2], data: new Int32Array([-2147483648, 2147483647, 0, -1]) },
  int64: { dtype: 'int64', shape: [3, 1], data: new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, 7n]) },
  uint8: { dtype: 'uint8', shape: [2, 2, 2, 1], data: new Uint8Array([0, 1, 2, 3, 250, 251, 254, 255]) },
  bool: { dtype: 'bool', shape: [4], data: new Uint8Array([1, 0, 0, 1]) },
};

function sameData(a: ArrayLike<number | bigint>, b: ArrayLike<number | bigint>): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(Object.is(a[i], b[i]), `element ${i}: ${a[i]} vs ${b[i]}`);
}

test('npy round trip for every dtype', () => {
  for (const [name, arr] of Object.entries(samples)) {
    const f = path.join(dir, `${name}.npy`);
    writeNpy(f, arr);
    const back = readNpy(f);
    assert.equal(back.dtype, arr.dtype);
    assert.deepEqual(back.shape, arr.shape);
    sameData(back.data, arr.data as ArrayLike<number | bigint>);
    // numpy aligns the payload to 64 bytes
    assert.equal(readNpyHeader(f).dataOffset % 64, 0);
  }
});

test('npy: scalars, empty arrays and plain number arrays', () => {
  const f = path.join(dir, 'scalar.npy');
  writeNpy(f, { dtype: 'float64', shape: [], data: [2.5] });
  assert.deepEqual(readNpy(f), { dtype: 'float64', shape: [], data: new Float64Array([2.5]) });
  writeNpy(f, { dtype: 'float32', shape: [0, 5], data: new Float32Array(0) });
  const e = readNpy(f);
  assert.deepEqual(e.shape, [0, 5]);
  assert.equal(e.data.length, 0);
  writeNpy(f, { dtype: 'int64', shape: [2], data: [3, -4] });
  assert.deepEqual(readNpy(f).data, new BigInt64Array([3n, -4n]));
});

test('npy: a header too long for version 1.0 is written as 2.0 and read back', () => {
  const shape = new Array(30000).fill(1); // a header over 65535 bytes
  const h = npyHeaderBytes('uint8', shape);
  assert.equal(h[6], 2);
  const f = path.join(dir, 'v2.npy');
  writeNpy(f, { dtype: 'uint8', shape, data: new Uint8Array([9]) });
  const back = readNpy(f);
  assert.equal(back.shape.length, 30000);
  assert.deepEqual(back.data, new Uint8Array([9]));
});

test('npy: write errors name the file and what was expected', () => {
  const f = path.join(dir, 'bad.npy');
  assert.throws(() => writeNpy(f, { dtype: 'float32', shape: [2, 2], data: new Float32Array(3) }), /bad\.npy: data has 3 elements but shape \[2, 2\] needs 4/);
  assert.throws(() => writeNpy(f, { dtype: 'uint8', shape: [1], data: [256] }), /0\.\.255/);
  assert.throws(() => writeNpy(f, { dtype: 'complex64' as never, shape: [1], data: [1] }), /unsupported dtype 'complex64'/);
  assert.throws(() => writeNpy(f, { dtype: 'int64', shape: [1], data: [1.5] }), /not an integer/);
  assert.ok(!fs.existsSync(f));
});

function writeRaw(name: string, header: string, payload: Buffer, version = 1): string {
  let h = header;
  const pre = version === 1 ? 10 : 12;
  while ((pre + h.length + 1) % 64 !== 0) h += ' ';
  h += '\n';
  const b = Buffer.alloc(pre);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]).copy(b);
  if (version === 1) b.writeUInt16LE(h.length, 8);
  else b.writeUInt32LE(h.length, 8);
  const f = path.join(dir, name);
  fs.writeFileSync(f, Buffer.concat([b, Buffer.from(h, 'utf8'), payload]));
  return f;
}

test('npy: bad files give DataErrors naming the file and the problem', () => {
  const magic = path.join(dir, 'magic.npy');
  fs.writeFileSync(magic, 'PK\x03\x04 not numpy at all');
  assert.throws(() => readNpy(magic), (e: unknown) => e instanceof DataError && e.file === magic && /bad magic/.test(e.message));

  const big = writeRaw('bigendian.npy', "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", Buffer.alloc(4));
  assert.throws(() => readNpy(big), /bigendian\.npy: unsupported dtype '>f4' \(big-endian data is not supported\)/);
  const c8 = writeRaw('complex.npy', "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", Buffer.alloc(8));
  assert.throws(() => readNpy(c8), /unsupported dtype '<c8'.*expected one of float32/);
  const fo = writeRaw('fortran.npy', "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", Buffer.alloc(24));
  assert.throws(() => readNpy(fo), /fortran\.npy: Fortran-ordered arrays are not supported/);
  // a Fortran-ordered vector has C layout too and is accepted
  const fv = writeRaw('fortranvec.npy', "{'descr': '<i4', 'fortran_order': True, 'shape': (2,), }", Buffer.from([1, 0, 0, 0, 2, 0, 0, 0]));
  assert.deepEqual(readNpy(fv).data, new Int32Array([1, 2]));
  const tr = writeRaw('truncated.npy', "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", Buffer.alloc(31));
  assert.throws(() => readNpy(tr), /truncated\.npy: truncated \.npy data: float64 \[4\] needs 32 bytes after the header, file has 31/);
  const th = path.join(dir, 'shortheader.npy');
  fs.writeFileSync(th, fs.readFileSync(tr).subarray(0, 30));
  assert.throws(() => readNpy(th), /truncated \.npy header/);
  const v3 = writeRaw('v3.npy', "{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", Buffer.from([5, 0, 0, 0]), 3);
  assert.deepEqual(readNpy(v3).data, new Int32Array([5]));
  const v9 = writeRaw('v9.npy', "{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", Buffer.alloc(4), 9);
  assert.throws(() => readNpy(v9), /unsupported \.npy format version 9\.0/);
  const rec = writeRaw('record.npy', "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", Buffer.alloc(4));
  assert.throws(() => readNpy(rec), /structured \(record\) dtypes are not supported/);
  const boolBad = writeRaw('bool2.npy', "{'descr': '|b1', 'fortran_order': False, 'shape': (1,), }", Buffer.from([7]));
  assert.throws(() => readNpy(boolBad), /bool array holds byte 7/);
  assert.throws(() => readNpy(path.join(dir, 'missing.npy')), /missing\.npy: cannot open/);
});

test('npy interop with numpy', { skip: PY ? false : 'no python3 with numpy' }, () => {
  // numpy writes, we read
  const script = `
import numpy as np, sys
d = sys.argv[1]
np.save(d + '/np_f32.npy', np.arange(12, dtype=np.float32).reshape(3, 4) / 7)
np.save(d + '/np_i64.npy', np.array([[-5, 2**40], [3, 4]], dtype=np.int64))
np.save(d + '/np_bool.npy', np.array([True, False, True]))
np.save(d + '/np_u8.npy', np.arange(24, dtype=np.uint8).reshape(2, 3, 4, 1))
np.save(d + '/np_f64_T.npy', np.asfortranarray(np.ones((2, 2))) )
`;
  const r = spawnSync(PY!, ['-c', script, dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const f32 = readNpy(path.join(dir, 'np_f32.npy'));
  assert.deepEqual(f32.shape, [3, 4]);
  assert.equal(f32.dtype, 'float32');
  assert.equal(f32.data[5], Math.fround(Math.fround(5) / 7));
  assert.deepEqual(readNpy(path.join(dir, 'np_i64.npy')).data, new BigInt64Array([-5n, 2n ** 40n, 3n, 4n]));
  assert.deepEqual(readNpy(path.join(dir, 'np_bool.npy')), { dtype: 'bool', shape: [3], data: new Uint8Array([1, 0, 1]) });
  assert.deepEqual(readNpy(path.join(dir, 'np_u8.npy')).shape, [2, 3, 4, 1]);
  assert.throws(() => readNpy(path.join(dir, 'np_f64_T.npy')), /Fortran-ordered/);

  // we write, numpy reads and checks
  for (const [name, arr] of Object.entries(samples)) writeNpy(path.join(dir, `ours_${name}.npy`), arr);
  const check = `
import numpy as np, sys
d = sys.argv[1]
a = np.load(d + '/ours_float32.npy'); assert a.dtype == np.float32 and a.shape == (2, 3) and a[0, 0] == 1.5 and np.isinf(a[1, 0])
a = np.load(d + '/ours_float64.npy'); assert a.dtype == np.float64 and a[0] == np.pi and np.isnan(a[2])
a = np.load(d + '/ours_int32.npy'); assert a.dtype == np.int32 and a[0, 0] == -2**31
a = np.load(d + '/ours_int64.npy'); assert a.dtype == np.int64 and a.shape == (3, 1) and a[1, 0] == 2**63 - 1
a = np.load(d + '/ours_uint8.npy'); assert a.dtype == np.uint8 and a.shape == (2, 2, 2, 1) and a[1, 1, 1, 0] == 255
a = np.load(d + '/ours_bool.npy'); assert a.dtype == np.bool_ and a.tolist() == [True, False, False, True]
print('ok')
`;
  const c = spawnSync(PY!, ['-c', check, dir], { encoding: 'utf8' });
  assert.equal(c.status, 0, c.stderr);
  assert.equal(c.stdout.trim(), 'ok');
});
