// A protobuf encoder for the handful of field types TensorBoard's Event needs:
// varint (int32/int64), 64-bit (double), 32-bit (float) and length-delimited
// (string, bytes, sub-messages, packed doubles). Fields are appended in the
// order written; zero/empty values are still written when asked (proto3 readers
// accept explicit defaults).

export class ProtoWriter {
  private readonly parts: Uint8Array[] = [];
  private size = 0;

  private push(b: Uint8Array): void {
    this.parts.push(b);
    this.size += b.length;
  }

  private key(field: number, wire: number): void {
    this.varintRaw(BigInt((field << 3) | wire));
  }

  private varintRaw(v: bigint): void {
    // negative int64 values are sent as their two's complement (10 bytes)
    let u = BigInt.asUintN(64, v);
    const out: number[] = [];
    do {
      let b = Number(u & 0x7fn);
      u >>= 7n;
      if (u !== 0n) b |= 0x80;
      out.push(b);
    } while (u !== 0n);
    this.push(Uint8Array.from(out));
  }

  /** int32 / int64 / enum (wire type 0). */
  int(field: number, v: number | bigint): this {
    if (typeof v === 'number' && !Number.isInteger(v)) throw new RangeError(`protobuf field ${field}: ${v} is not an integer`);
    this.key(field, 0);
    this.varintRaw(BigInt(v));
    return this;
  }

  /** double (wire type 1, little-endian). */
  double(field: number, v: number): this {
    this.key(field, 1);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, true);
    this.push(b);
    return this;
  }

  /** float (wire type 5, little-endian). */
  float(field: number, v: number): this {
    this.key(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.push(b);
    return this;
  }

  /** bytes / sub-message (wire type 2). */
  bytes(field: number, b: Uint8Array): this {
    this.key(field, 2);
    this.varintRaw(BigInt(b.length));
    this.push(b);
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  message(field: number, m: ProtoWriter): this {
    return this.bytes(field, m.finish());
  }

  /** packed repeated double. */
  packedDoubles(field: number, vs: ArrayLike<number>): this {
    const b = new Uint8Array(8 * vs.length);
    const dv = new DataView(b.buffer);
    for (let i = 0; i < vs.length; i++) dv.setFloat64(8 * i, vs[i], true);
    return this.bytes(field, b);
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.size);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}
