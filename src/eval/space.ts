// The shapes every feature space shares: the images it takes and what it returns.
// A leaf module, so the spaces (features.ts, inception-space.ts) can import it without a circle.

/** Images as uint8 [N, H, W, C], row-major (the samples.npz layout). */
export interface ImageBatch {
  data: Uint8Array;
  N: number;
  H: number;
  W: number;
  C: number;
}

/** Images read on demand, rows [i0, i0 + n) at a time (a set larger than memory). */
export interface ImageRows {
  N: number;
  H: number;
  W: number;
  C: number;
  rows(i0: number, n: number): Uint8Array;
}

export interface FeatureOutputs { features: Float64Array; logits?: Float64Array; spatial?: Float64Array }

/** A space defined by a classifier trained on the data's own classes (logit k = data label k). */
export interface ClassifierInfo {
  numClasses: number;
  /** top-1 accuracy on images it was not trained on */
  heldOutAccuracy: number;
  heldOutSize: number;
}

export interface FeatureSpace {
  /** a stable name that identifies the space, e.g. "pixels-8x8" (cached statistics are matched by it) */
  name: string;
  /** feature vector length */
  dim: number;
  /** free text for reports, e.g. a feature network's held-out accuracy */
  description?: string;
  /** features [N, dim], row-major */
  extract(images: ImageBatch): Promise<Float64Array> | Float64Array;
  /** lengths of the extra outputs a space provides (Inception-v3: logits 1008, spatial 2023) */
  extras?: { logits?: number; spatial?: number };
  /** the features plus the extra outputs, for the Inception Score and sFID */
  extractAll?(images: ImageBatch): Promise<FeatureOutputs>;
  /** set when the space is a classifier of the data's classes: its logits (extras.logits) score samples against their labels */
  classifier?: ClassifierInfo;
}
