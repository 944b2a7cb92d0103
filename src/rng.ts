// A seeded pseudo-random generator for everything TypeScript decides at random
// (time steps, label dropout, data order). xoshiro128** (Blackman & Vigna) on
// four 32-bit words: fast with Math.imul, passes BigCrush, and its whole state is
// four integers, so a checkpoint stores it as JSON and a restored generator
// continues exactly. Seeded through splitmix64 so that nearby seeds (0, 1, 2, ...)
// give unrelated streams.

/** JSON-serialisable generator state (what a checkpoint stores). */
export interface RngState {
  algo: 'xoshiro128**';
  /** the four 32-bit state words, as unsigned integers */
  s: [number, number, number, number];
  /** a second Box-Muller normal kept for the next normal() call, or null */
  spare: number | null;
}

const MASK64 = (1n << 64n) - 1n;

function splitmix64(state: bigint): [bigint, bigint] {
  const next = (state + 0x9e3779b97f4a7c15n) & MASK64;
  let z = next;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  z = z ^ (z >> 31n);
  return [next, z];
}

const TWO_POW_32 = 4294967296;

export class Rng {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;
  private spare: number | null = null;

  /** `seed`: any safe integer (negative values are taken modulo 2^64). */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) {
      throw new RangeError(`Rng: seed must be a safe integer, got ${String(seed)}`);
    }
    let st = BigInt.asUintN(64, BigInt(seed));
    let a: bigint;
    let b: bigint;
    [st, a] = splitmix64(st);
    [st, b] = splitmix64(st);
    this.s0 = Number(a & 0xffffffffn);
    this.s1 = Number(a >> 32n);
    this.s2 = Number(b & 0xffffffffn);
    this.s3 = Number(b >> 32n);
    // The all-zero state is the one fixed point of xoshiro; splitmix64 cannot
    // produce two zero outputs in a row, but guard anyway.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** The next 32-bit output as an unsigned integer. */
  nextUint32(): number {
    const s0 = this.s0;
    const s1 = this.s1;
    let s2 = this.s2;
    let s3 = this.s3;
    const m = Math.imul(s1, 5);
    const result = Math.imul((m << 7) | (m >>> 25), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    this.s1 = s1 ^ s2;
    this.s0 = s0 ^ s3;
    this.s2 = s2 ^ t;
    this.s3 = (s3 << 11) | (s3 >>> 21);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  uniform(): number {
    const a = this.nextUint32() >>> 5; // 27 bits
    const b = this.nextUint32() >>> 6; // 26 bits
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** Uniform integer in [0, n), without modulo bias (rejection sampling). */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_32) {
      throw new RangeError(`Rng.int: n must be an integer in [1, 2^32], got ${String(n)}`);
    }
    if (n === 1) return 0;
    // Accept x below the largest multiple of n that fits in 2^32.
    const limit = TWO_POW_32 - (TWO_POW_32 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }

  /** Standard normal (Box-Muller; the second value of each pair is kept). */
  normal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    // 1 - uniform() is in (0, 1], so the log is finite.
    const u1 = 1 - this.uniform();
    const u2 = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u1));
    const th = 2 * Math.PI * u2;
    this.spare = r * Math.sin(th);
    return r * Math.cos(th);
  }

  /** In-place Fisher-Yates shuffle. */
  shuffle<T>(a: T[] | Int32Array | Uint32Array | Float64Array): void {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = a[i];
      a[i] = a[j];
      a[j] = tmp;
    }
  }

  state(): RngState {
    return { algo: 'xoshiro128**', s: [this.s0 >>> 0, this.s1 >>> 0, this.s2 >>> 0, this.s3 >>> 0], spare: this.spare };
  }

  setState(st: RngState): void {
    const what = 'Rng.setState: expected { algo: "xoshiro128**", s: [4 uint32, not all 0], spare: number | null }';
    if (st === null || typeof st !== 'object' || st.algo !== 'xoshiro128**' || !Array.isArray(st.s) || st.s.length !== 4) {
      throw new TypeError(`${what}, got ${JSON.stringify(st)}`);
    }
    for (const w of st.s) {
      if (!Number.isInteger(w) || w < 0 || w >= TWO_POW_32) throw new TypeError(`${what}, got word ${String(w)}`);
    }
    if ((st.s[0] | st.s[1] | st.s[2] | st.s[3]) === 0) throw new TypeError(`${what}, got all-zero words`);
    if (st.spare !== null && (typeof st.spare !== 'number' || !Number.isFinite(st.spare))) {
      throw new TypeError(`${what}, got spare ${String(st.spare)}`);
    }
    this.s0 = st.s[0] | 0;
    this.s1 = st.s[1] | 0;
    this.s2 = st.s[2] | 0;
    this.s3 = st.s[3] | 0;
    this.spare = st.spare;
  }

  static fromState(st: RngState): Rng {
    const r = new Rng(0);
    r.setState(st);
    return r;
  }
}
