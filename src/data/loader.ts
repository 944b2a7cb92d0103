// Batches in a seeded order. Each epoch's permutation and flips come from the
// data generator's state at the start of that epoch, so the position
// {epoch, index, state} in a checkpoint is enough to continue exactly. The next
// batch is requested as soon as one is handed out (prefetch), so loading runs
// while the native step does.
import { Rng, type RngState } from '../rng.js';
import type { Batch, Dataset } from './types.js';

export interface DataPosition {
  epoch: number;
  /** batches of this epoch already handed out */
  batch: number;
  /** data generator state at the start of `epoch` */
  rng: RngState;
}

export class BatchLoader {
  private pos: DataPosition;
  private order: Int32Array = new Int32Array(0);
  private flips: Uint8Array = new Uint8Array(0);
  private orderEpoch = -1;
  private nextRng: RngState | undefined;
  private prefetched: { at: DataPosition; promise: Promise<Batch> } | undefined;
  readonly batchesPerEpoch: number;

  constructor(
    readonly dataset: Dataset,
    readonly batchSize: number,
    seed: number,
    private readonly randomFlip: boolean,
    start?: DataPosition,
    /** data parallelism (src/dist): load only samples [offset, offset + count) of each batch */
    private readonly slice?: { offset: number; count: number },
  ) {
    if (batchSize > dataset.size) {
      throw new RangeError(`data.batch_size ${batchSize} exceeds the data set's ${dataset.size} samples (${dataset.description})`);
    }
    // Incomplete last batches are dropped, as DiT's DataLoader(drop_last=True).
    this.batchesPerEpoch = Math.floor(dataset.size / batchSize);
    this.pos = start ? structuredClone(start) : { epoch: 0, batch: 0, rng: new Rng(seed * 4 + 1).state() };
  }

  /** Where the next batch comes from (what a checkpoint saves). */
  position(): DataPosition {
    return structuredClone(this.pos);
  }

  private ensureOrder(pos: DataPosition): void {
    if (this.orderEpoch === pos.epoch) return;
    const rng = Rng.fromState(pos.rng);
    const n = this.dataset.size;
    const order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      const t = order[i]; order[i] = order[j]; order[j] = t;
    }
    const flips = new Uint8Array(n);
    if (this.randomFlip) for (let i = 0; i < n; i++) flips[i] = rng.uniform() < 0.5 ? 1 : 0;
    this.order = order;
    this.flips = flips;
    this.orderEpoch = pos.epoch;
    this.nextRng = rng.state();
  }

  private advance(pos: DataPosition): DataPosition {
    this.ensureOrder(pos);
    if (pos.batch + 1 < this.batchesPerEpoch) return { ...pos, batch: pos.batch + 1 };
    return { epoch: pos.epoch + 1, batch: 0, rng: this.nextRng! };
  }

  private request(pos: DataPosition): Promise<Batch> {
    this.ensureOrder(pos);
    const a = pos.batch * this.batchSize + (this.slice?.offset ?? 0);
    const n = this.slice?.count ?? this.batchSize;
    const p = this.dataset.load(this.order.slice(a, a + n), this.flips.slice(a, a + n));
    p.catch(() => {}); // rejections surface when the batch is taken
    return p;
  }

  /** The next batch; also starts loading the one after it. */
  async next(): Promise<Batch & { epoch: number }> {
    const at = this.pos;
    const promise = this.prefetched && samePos(this.prefetched.at, at) ? this.prefetched.promise : this.request(at);
    const after = this.advance(at);
    this.pos = after;
    this.prefetched = { at: after, promise: this.request(after) };
    const b = await promise;
    return { ...b, epoch: at.epoch };
  }

  async close(): Promise<void> {
    await this.dataset.close();
  }
}

function samePos(a: DataPosition, b: DataPosition): boolean {
  return a.epoch === b.epoch && a.batch === b.batch;
}
