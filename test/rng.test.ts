import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, type RngState } from '../src/rng.js';

test('xoshiro128** core matches the reference C implementation', () => {
  // Values printed by Vigna's reference next() compiled with gcc.
  const r = Rng.fromState({ algo: 'xoshiro128**', s: [1, 2, 3, 4], spare: null });
  assert.deepEqual([0, 1, 2, 3, 4, 5].map(() => r.nextUint32()), [11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
  const q = Rng.fromState({ algo: 'xoshiro128**', s: [0xdeadbeef, 0x12345678, 0xffffffff, 0x80000001], spare: null });
  for (let i = 0; i < 1000; i++) q.nextUint32();
  assert.deepEqual([q.nextUint32(), q.nextUint32()], [3329624312, 518030111]);
});

test('same seed, same stream; different seeds differ', () => {
  const a = new Rng(42);
  const b = new Rng(42);
  const c = new Rng(43);
  const xa = Array.from({ length: 50 }, () => a.uniform());
  const xb = Array.from({ length: 50 }, () => b.uniform());
  const xc = Array.from({ length: 50 }, () => c.uniform());
  assert.deepEqual(xa, xb);
  assert.notDeepEqual(xa, xc);
  assert.ok(xa.every((u) => u >= 0 && u < 1));
});

test('state save/restore continues identically (through JSON, mid Box-Muller pair)', () => {
  const a = new Rng(7);
  for (let i = 0; i < 17; i++) a.uniform();
  a.normal(); // leaves a spare normal in the state
  const saved: RngState = JSON.parse(JSON.stringify(a.state()));
  assert.notEqual(saved.spare, null);
  const b = Rng.fromState(saved);
  const seqA = Array.from({ length: 40 }, (_, i) => (i % 3 === 0 ? a.normal() : i % 3 === 1 ? a.int(1000) : a.uniform()));
  const seqB = Array.from({ length: 40 }, (_, i) => (i % 3 === 0 ? b.normal() : i % 3 === 1 ? b.int(1000) : b.uniform()));
  assert.deepEqual(seqA, seqB);
  const c = new Rng(99);
  c.setState(saved);
  assert.equal(c.normal(), saved.spare);
});

test('setState rejects malformed states with a message', () => {
  const r = new Rng(1);
  assert.throws(() => r.setState({ algo: 'xoshiro128**', s: [0, 0, 0, 0], spare: null }), /all-zero/);
  assert.throws(() => r.setState({ algo: 'pcg' as 'xoshiro128**', s: [1, 2, 3, 4], spare: null }), /expected/);
  assert.throws(() => r.setState({ algo: 'xoshiro128**', s: [1, 2, 3, 2 ** 32], spare: null }), /word/);
  assert.throws(() => new Rng(0.5), /seed/);
});

test('int(n) is unbiased: chi-square over 7 bins, and rejects bad n', () => {
  const r = new Rng(3);
  const n = 7;
  const draws = 70000;
  const counts = new Array(n).fill(0);
  for (let i = 0; i < draws; i++) counts[r.int(n)]++;
  const e = draws / n;
  const chi2 = counts.reduce((s, c) => s + (c - e) ** 2 / e, 0);
  assert.ok(chi2 < 22.46, `chi2 ${chi2} (df 6, p = 0.001 bound 22.46)`);
  // A large n where modulo bias would be visible: 3 * 2^30 keeps 1/3 of outputs.
  const big = 3 * 2 ** 30;
  let low = 0;
  for (let i = 0; i < 30000; i++) if (r.int(big) < 2 ** 30) low++;
  assert.ok(Math.abs(low / 30000 - 1 / 3) < 0.015, `share ${low / 30000}`);
  assert.throws(() => r.int(0), /n must be/);
  assert.throws(() => r.int(2.5), /n must be/);
});

test('normal() has mean 0, variance 1 and normal tails', () => {
  const r = new Rng(11);
  const n = 40000;
  let s = 0;
  let s2 = 0;
  let beyond2 = 0;
  for (let i = 0; i < n; i++) {
    const z = r.normal();
    s += z;
    s2 += z * z;
    if (Math.abs(z) > 2) beyond2++;
  }
  assert.ok(Math.abs(s / n) < 0.02);
  assert.ok(Math.abs(s2 / n - 1) < 0.03);
  assert.ok(Math.abs(beyond2 / n - 0.0455) < 0.006);
});
