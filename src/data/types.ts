// What the training loop needs from a dataset.

export interface Batch {
  /** [N, C, H, W] in the model's scale ([-1, 1] for images) */
  x: Float32Array;
  /** [N] class labels */
  y: Int32Array;
}

export interface Dataset {
  /** samples per epoch */
  readonly size: number;
  /** [C, H, W] of one sample */
  readonly shape: readonly [number, number, number];
  readonly numClasses: number;
  /** one line for the log */
  readonly description: string;
  /**
   * The samples at `indices`, horizontally flipped where flips[i] is 1.
   * May compute synchronously before returning (the loader calls it while a
   * native step runs) or hand the work to a worker thread.
   */
  load(indices: Int32Array, flips: Uint8Array): Promise<Batch>;
  /** files skipped so far because they could not be read (data.skip_bad_files) */
  readonly badFiles: number;
  close(): Promise<void>;
}

/** Reverses each row of every channel of sample i in place (horizontal flip). */
export function flipSample(x: Float32Array, offset: number, C: number, H: number, W: number): void {
  for (let c = 0; c < C; c++) {
    for (let h = 0; h < H; h++) {
      const row = offset + (c * H + h) * W;
      for (let a = row, b = row + W - 1; a < b; a++, b--) {
        const t = x[a];
        x[a] = x[b];
        x[b] = t;
      }
    }
  }
}
