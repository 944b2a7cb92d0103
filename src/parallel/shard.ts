// Which samples of the global batch a rank trains on: the global
// batch (data.batch_size) is drawn identically on every rank, from the shared
// seed; rank r takes samples [r*n, (r+1)*n), n = batch / world size.
import { ConfigError } from '../errors.js';
import type { World } from './world.js';

export interface Shard {
  /** first global sample of this rank */
  offset: number;
  /** samples of this rank */
  count: number;
  globalBatch: number;
}

export function shardOf(w: Pick<World, 'rank' | 'size'>, globalBatch: number): Shard {
  if (globalBatch % w.size !== 0) {
    throw new ConfigError('data.batch_size', `${globalBatch} is the global batch and must divide evenly over the ${w.size} processes ` +
      `(for example ${Math.max(1, Math.round(globalBatch / w.size)) * w.size})`);
  }
  const count = globalBatch / w.size;
  return { offset: w.rank * count, count, globalBatch };
}

/** Rows [offset, offset + count) of a [globalBatch, per] array. */
export function sliceRows<A extends Float32Array | Int32Array>(a: A, per: number, s: Shard): A {
  return a.subarray(s.offset * per, (s.offset + s.count) * per) as A;
}

/** A [globalBatch] array holding `rows` (this rank's values) at the shard's place, zeros elsewhere. */
export function placeRows(rows: Int32Array, s: Shard): Int32Array {
  const out = new Int32Array(s.globalBatch);
  out.set(rows, s.offset);
  return out;
}
