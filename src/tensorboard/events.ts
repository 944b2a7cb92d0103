// TensorBoard event files (events.out.tfevents.<time>.<host>.<pid>), written
// by hand: a TFRecord stream of tensorflow.Event protobufs. Each record is
//   u64 length (LE) | u32 masked CRC-32C of those 8 bytes | data | u32 masked CRC-32C of data
// and the first event carries file_version "brain.Event:2". Field numbers are
// those of tensorflow/core/util/event.proto and framework/summary.proto.
import { closeSync, existsSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';

import { SpeedTrainError } from '../errors.js';
import { crc32c, maskCrc } from './crc32c.js';
import { ProtoWriter } from './proto.js';

/** tensorflow.HistogramProto: bucket i counts values in [bucketLimit[i-1], bucketLimit[i]) (the first from min). */
export interface Histogram {
  min: number;
  max: number;
  num: number;
  sum: number;
  sumSquares: number;
  bucketLimit: number[];
  bucket: number[];
}

/** Event field numbers. */
const EV = { wallTime: 1, step: 2, fileVersion: 3, summary: 5, sessionLog: 6 } as const;
/** Summary.Value field numbers. */
const VAL = { tag: 1, simpleValue: 2, image: 4, histo: 5 } as const;

/** One TFRecord: the framing TensorBoard's reader checks. */
export function tfRecord(data: Uint8Array): Buffer {
  const out = Buffer.alloc(8 + 4 + data.length + 4);
  out.writeBigUInt64LE(BigInt(data.length), 0);
  out.writeUInt32LE(maskCrc(crc32c(out.subarray(0, 8))), 8);
  out.set(data, 12);
  out.writeUInt32LE(maskCrc(crc32c(data)), 12 + data.length);
  return out;
}

function event(step: number, wallTime: number): ProtoWriter {
  return new ProtoWriter().double(EV.wallTime, wallTime).int(EV.step, step);
}

function histogramProto(h: Histogram): ProtoWriter {
  if (h.bucket.length !== h.bucketLimit.length) {
    throw new RangeError(`histogram: ${h.bucket.length} bucket counts but ${h.bucketLimit.length} bucket limits`);
  }
  return new ProtoWriter()
    .double(1, h.min)
    .double(2, h.max)
    .double(3, h.num)
    .double(4, h.sum)
    .double(5, h.sumSquares)
    .packedDoubles(6, h.bucketLimit)
    .packedDoubles(7, h.bucket);
}

/**
 * Appends events to a new file in `dir`. Writes go straight to the file (one
 * write per record), so TensorBoard sees a run while it trains and a crash
 * loses at most the record being written.
 */
export class EventWriter {
  readonly file: string;
  private fd: number | null;
  private readonly now: () => number;

  constructor(dir: string, opts: { now?: () => number } = {}) {
    this.now = opts.now ?? (() => Date.now() / 1000);
    try {
      mkdirSync(dir, { recursive: true });
      const base = `events.out.tfevents.${Math.floor(this.now())}.${hostname()}.${process.pid}`;
      // A second writer in the same second and process (the end-of-training
      // grid after training) gets its own file rather than a second header.
      let name = base;
      for (let k = 1; existsSync(path.join(dir, name)); k++) name = `${base}.${k}`;
      this.file = path.join(dir, name);
      this.fd = openSync(this.file, 'wx');
    } catch (e) {
      throw new SpeedTrainError(`tensorboard: cannot create an event file in ${dir}: ${(e as Error).message} (set tensorboard=false to run without one)`);
    }
    this.write(new ProtoWriter().double(EV.wallTime, this.now()).string(EV.fileVersion, 'brain.Event:2'));
  }

  private write(ev: ProtoWriter): void {
    if (this.fd === null) throw new SpeedTrainError(`tensorboard: ${this.file} is closed`);
    const rec = tfRecord(ev.finish());
    let off = 0;
    while (off < rec.length) off += writeSync(this.fd, rec, off, rec.length - off);
  }

  private summary(step: number, values: ProtoWriter[]): void {
    const s = new ProtoWriter();
    for (const v of values) s.message(1, v);
    this.write(event(step, this.now()).message(EV.summary, s));
  }

  /** Scalars (Summary.Value.simple_value, float32), one event for all of them. */
  scalars(step: number, values: Record<string, number>): void {
    const vs = Object.entries(values).map(([tag, v]) => new ProtoWriter().string(VAL.tag, tag).float(VAL.simpleValue, v));
    if (vs.length > 0) this.summary(step, vs);
  }

  histogram(step: number, tag: string, h: Histogram): void {
    this.summary(step, [new ProtoWriter().string(VAL.tag, tag).message(VAL.histo, histogramProto(h))]);
  }

  /** An encoded image (PNG) with its size; channels 1 (grey), 3 (RGB) or 4 (RGBA). */
  image(step: number, tag: string, encoded: Uint8Array, width: number, height: number, channels: number): void {
    const img = new ProtoWriter().int(1, height).int(2, width).int(3, channels).bytes(4, encoded);
    this.summary(step, [new ProtoWriter().string(VAL.tag, tag).message(VAL.image, img)]);
  }

  /**
   * SessionLog START at `step`: TensorBoard then drops the events of earlier
   * files at steps >= `step`, which a resumed run replaces.
   */
  sessionStart(step: number): void {
    this.write(event(step, this.now()).message(EV.sessionLog, new ProtoWriter().int(1, 1)));
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}
