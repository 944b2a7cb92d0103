// Feature spaces: the maps from images to vectors in which the metrics are
// computed. A metric means little without its feature space, so every result
// carries the space's name. Built in: raw pixels at a reduced size, and
// 'inception-v3' (FID's network, loaded from its weights file on first use). A
// trained feature network plugs in through `registerFeatureSpaceResolver`.

import { INCEPTION_SPACE, loadInceptionFeatureSpace } from './inception-space.js';

export type { ClassifierInfo, FeatureOutputs, FeatureSpace, ImageBatch, ImageRows } from './space.js';
import type { FeatureSpace, ImageBatch, ImageRows } from './space.js';

export function checkImageBatch(images: ImageBatch, what: string): void {
  const { N, H, W, C, data } = images;
  for (const [k, v] of Object.entries({ N, H, W, C })) {
    if (!Number.isInteger(v) || v < (k === 'N' ? 0 : 1)) throw new RangeError(`${what}: ${k} must be a positive integer, got ${v}`);
  }
  if (!(data instanceof Uint8Array)) throw new TypeError(`${what}: image data must be a Uint8Array`);
  if (data.length !== N * H * W * C) {
    throw new RangeError(`${what}: image data has ${data.length} bytes, expected N·H·W·C = ${N}·${H}·${W}·${C} = ${N * H * W * C}`);
  }
}

/**
 * Box-filter weights for resampling `inSize` pixels to `outSize` (area
 * interpolation: each output pixel averages the input it covers, fractional
 * overlaps included, like OpenCV's INTER_AREA / PIL's BOX).
 */
export function areaWeights(inSize: number, outSize: number): { start: Int32Array; weights: Float64Array[] } {
  const scale = inSize / outSize;
  const start = new Int32Array(outSize);
  const weights: Float64Array[] = [];
  for (let o = 0; o < outSize; o++) {
    const lo = o * scale;
    const hi = (o + 1) * scale;
    const first = Math.floor(lo);
    const last = Math.min(inSize - 1, Math.ceil(hi) - 1);
    const w = new Float64Array(last - first + 1);
    for (let p = first; p <= last; p++) w[p - first] = (Math.min(hi, p + 1) - Math.max(lo, p)) / scale;
    start[o] = first;
    weights.push(w);
  }
  return { start, weights };
}

/**
 * Raw pixels, area-downsampled to size×size RGB and scaled to [0, 1]:
 * dim = size·size·3. Grey images are replicated to RGB; alpha is dropped.
 */
export function pixelFeatureSpace(size = 8): FeatureSpace {
  if (!Number.isInteger(size) || size < 1 || size > 256) throw new RangeError(`pixel feature size must be an integer in 1..256, got ${size}`);
  const dim = size * size * 3;
  return {
    name: `pixels-${size}x${size}`,
    dim,
    description: `raw RGB pixels, area-downsampled to ${size}x${size}, scaled to [0, 1]`,
    extract(images: ImageBatch): Float64Array {
      checkImageBatch(images, `feature space pixels-${size}x${size}`);
      const { data, N, H, W, C } = images;
      if (C !== 1 && C !== 3 && C !== 4) throw new RangeError(`pixels-${size}x${size}: expected 1, 3 or 4 channels, got ${C}`);
      const wy = areaWeights(H, size);
      const wx = areaWeights(W, size);
      const out = new Float64Array(N * dim);
      const rows = new Float64Array(size * W * 3); // after the vertical pass: [size, W, 3]
      for (let n = 0; n < N; n++) {
        const img = n * H * W * C;
        rows.fill(0);
        for (let oy = 0; oy < size; oy++) {
          const w = wy.weights[oy];
          for (let t = 0; t < w.length; t++) {
            const y = wy.start[oy] + t;
            const wt = w[t];
            for (let x = 0; x < W; x++) {
              const s = img + (y * W + x) * C;
              const d = (oy * W + x) * 3;
              if (C === 1) {
                const v = wt * data[s];
                rows[d] += v;
                rows[d + 1] += v;
                rows[d + 2] += v;
              } else {
                rows[d] += wt * data[s];
                rows[d + 1] += wt * data[s + 1];
                rows[d + 2] += wt * data[s + 2];
              }
            }
          }
        }
        const o = n * dim;
        for (let oy = 0; oy < size; oy++) {
          for (let ox = 0; ox < size; ox++) {
            const w = wx.weights[ox];
            let r = 0;
            let g = 0;
            let b = 0;
            for (let t = 0; t < w.length; t++) {
              const s = (oy * W + wx.start[ox] + t) * 3;
              r += w[t] * rows[s];
              g += w[t] * rows[s + 1];
              b += w[t] * rows[s + 2];
            }
            const d = o + (oy * size + ox) * 3;
            out[d] = r / 255;
            out[d + 1] = g / 255;
            out[d + 2] = b / 255;
          }
        }
      }
      return out;
    },
  };
}

/**
 * Runs a feature space over images in batches (a network needs bounded
 * memory) and checks what it returns: [N, dim] finite values.
 */
export async function extractFeatures(space: FeatureSpace, images: ImageBatch | ImageRows, batchSize = 256): Promise<Float64Array> {
  const streamed = 'rows' in images;
  if (!streamed) checkImageBatch(images, `images for ${space.name}`);
  const { N, H, W, C } = images;
  const per = H * W * C;
  const out = new Float64Array(N * space.dim);
  for (let i = 0; i < N; i += batchSize) {
    const n = Math.min(batchSize, N - i);
    // in order from the first image: a streamed set checks its file's CRC on the way
    const data = streamed ? images.rows(i, n) : images.data.subarray(i * per, (i + n) * per);
    const batch: ImageBatch = { data, N: n, H, W, C };
    const f = await space.extract(batch);
    if (f.length !== n * space.dim) {
      throw new RangeError(`feature space ${space.name} returned ${f.length} values for ${n} images; expected ${n}·${space.dim}`);
    }
    for (let j = 0; j < f.length; j++) {
      if (!Number.isFinite(f[j])) throw new RangeError(`feature space ${space.name} returned a non-finite feature for image ${i + Math.floor(j / space.dim)}`);
    }
    out.set(f, i * space.dim);
  }
  return out;
}

/** Features and the extra outputs of a whole set: [N, dim], [N, extras.logits], [N, extras.spatial]. */
export interface AllFeatures {
  features: Float64Array;
  logits: Float64Array | null;
  spatial: Float64Array | null;
}

function checkOutput(space: FeatureSpace, what: string, f: Float64Array | undefined, n: number, per: number, i0: number): Float64Array {
  if (!(f instanceof Float64Array) || f.length !== n * per) {
    throw new RangeError(`feature space ${space.name} returned ${f ? f.length : 'no'} ${what} values for ${n} images; expected ${n}·${per}`);
  }
  for (let j = 0; j < f.length; j++) {
    if (!Number.isFinite(f[j])) throw new RangeError(`feature space ${space.name} returned a non-finite ${what} value for image ${i0 + Math.floor(j / per)}`);
  }
  return f;
}

/**
 * Like extractFeatures, and also the space's extra outputs (logits for the
 * Inception Score and class accuracy, spatial features for sFID) in the same
 * pass over the images; without extractAll / extras they are null.
 */
export async function extractAllFeatures(space: FeatureSpace, images: ImageBatch | ImageRows, batchSize = 256): Promise<AllFeatures> {
  const nLogits = space.extractAll ? (space.extras?.logits ?? 0) : 0;
  const nSpatial = space.extractAll ? (space.extras?.spatial ?? 0) : 0;
  if (!space.extractAll || (nLogits === 0 && nSpatial === 0)) return { features: await extractFeatures(space, images, batchSize), logits: null, spatial: null };
  const streamed = 'rows' in images;
  if (!streamed) checkImageBatch(images, `images for ${space.name}`);
  const { N, H, W, C } = images;
  const per = H * W * C;
  const features = new Float64Array(N * space.dim);
  const logits = nLogits ? new Float64Array(N * nLogits) : null;
  const spatial = nSpatial ? new Float64Array(N * nSpatial) : null;
  for (let i = 0; i < N; i += batchSize) {
    const n = Math.min(batchSize, N - i);
    const data = streamed ? images.rows(i, n) : images.data.subarray(i * per, (i + n) * per);
    const o = await space.extractAll({ data, N: n, H, W, C });
    features.set(checkOutput(space, 'feature', o.features, n, space.dim, i), i * space.dim);
    if (logits) logits.set(checkOutput(space, 'logit', o.logits, n, nLogits, i), i * nLogits);
    if (spatial) spatial.set(checkOutput(space, 'spatial-feature', o.spatial, n, nSpatial, i), i * nSpatial);
  }
  return { features, logits, spatial };
}

/** Turns a feature-space spec into a space, or returns null when it does not recognise the spec. */
export type FeatureSpaceResolver = (spec: string) => FeatureSpace | null | Promise<FeatureSpace | null>;

const resolvers: { name: string; resolve: FeatureSpaceResolver; help: string }[] = [];

/**
 * Adds a way to name feature spaces (e.g. a path to a trained feature network).
 * `help` describes the accepted specs in error messages.
 */
export function registerFeatureSpaceResolver(name: string, resolve: FeatureSpaceResolver, help: string): void {
  const i = resolvers.findIndex((r) => r.name === name);
  if (i >= 0) resolvers.splice(i, 1);
  resolvers.push({ name, resolve, help });
}

export const DEFAULT_FEATURE_SPACE = 'pixels-8x8';

export interface ResolveOptions {
  /** the Inception-v3 weights file (needed for 'inception-v3') */
  inceptionPath?: string | null;
  device?: 'cpu' | 'cuda';
  threads?: number;
}

/** Resolves 'pixels' / 'pixels-NxN', 'inception-v3' and any registered spec; a FeatureSpace passes through. */
export async function resolveFeatureSpace(spec: string | FeatureSpace | undefined, opts: ResolveOptions = {}): Promise<FeatureSpace> {
  if (spec === undefined) spec = DEFAULT_FEATURE_SPACE;
  if (typeof spec !== 'string') return spec;
  if (spec === 'pixels') return pixelFeatureSpace(8);
  if (spec === INCEPTION_SPACE) return loadInceptionFeatureSpace(opts.inceptionPath, { device: opts.device, threads: opts.threads });
  const m = /^pixels-(\d+)x(\d+)$/.exec(spec);
  if (m) {
    if (m[1] !== m[2]) throw new RangeError(`feature space '${spec}': pixel features are square (pixels-NxN)`);
    return pixelFeatureSpace(Number(m[1]));
  }
  for (const r of resolvers) {
    const fs = await r.resolve(spec);
    if (fs) return fs;
  }
  const known = ["'pixels' (= pixels-8x8)", `'${INCEPTION_SPACE}' (FID's Inception network; needs its weights file)`, "'pixels-NxN' (N in 1..256)", ...resolvers.map((r) => r.help)];
  throw new RangeError(`unknown feature space '${spec}'; expected ${known.join(', ')}`);
}
