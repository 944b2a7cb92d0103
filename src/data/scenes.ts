// A harder generated data set for the speed-up experiment: scenes of
// 1-4 objects on a textured background. Unlike the built-in `synthetic` set
// (one object whose shape and colour are fixed by the class), every factor here
// is independent: the shape, colour, size and position of each object, the
// number of objects, and the background texture (stripes at any angle, a
// checkerboard, a gradient or a plaid of two colours). A model cannot learn
// the set by remembering ten templates.
//
// Image i is a pure function of (seed, i), so nothing is stored and images past
// the training range are a held-out set from the same distribution.
//
// The set is meant for unconditional training (data.num_classes: 0). It still
// carries a label per image for the feature network of the evaluation: the
// number of objects and the shape of the largest (drawn last, so it is never
// occluded): label = 10 * (count - 1) + shape, SCENE_CLASSES = 40 classes.
import { Rng } from '../rng.js';
import { SHAPES } from './synthetic.js';
import type { Batch, Dataset } from './types.js';
import { flipSample } from './types.js';

export const SCENE_MAX_OBJECTS = 4;
export const SCENE_CLASSES = SCENE_MAX_OBJECTS * SHAPES.length;

export interface SceneOptions {
  seed: number;
  size: number;
  imageSize: number;
  channels: number;
}

interface SceneObject {
  shape: number;
  colour: number[];
  r: number;
  cx: number;
  cy: number;
}

/** What image `index` shows (for tests and the docs): its objects, largest last, and its background kind. */
export function describeScene(o: SceneOptions, index: number): { label: number; count: number; largestShape: number; background: string } {
  const s = planScene(o, index);
  return { label: s.label, count: s.objects.length, largestShape: s.objects[s.objects.length - 1].shape, background: s.bgName };
}

function planScene(o: SceneOptions, index: number) {
  // A per-image generator keyed by (seed, index), independent of the synthetic set's keys.
  const rng = new Rng(((o.seed * 2_654_435_761) % 2 ** 31) + index * 7 + 1_000_003);
  const colour = () => [rng.uniform(), rng.uniform(), rng.uniform()];
  const bgKind = rng.int(4);
  const c1 = colour().map((v) => 0.1 + 0.5 * v);
  const c2 = colour().map((v) => 0.1 + 0.5 * v);
  const angle = rng.uniform() * Math.PI;
  const freq = 1.5 + rng.uniform() * 3.5; // periods across the image
  const phase = rng.uniform() * 2 * Math.PI;
  const count = 1 + rng.int(SCENE_MAX_OBJECTS);
  const objects: SceneObject[] = [];
  for (let k = 0; k < count; k++) {
    const r = 0.1 + rng.uniform() * 0.13;
    objects.push({ shape: rng.int(SHAPES.length), colour: colour(), r, cx: r + rng.uniform() * (1 - 2 * r), cy: r + rng.uniform() * (1 - 2 * r) });
  }
  // the largest is drawn last, on top: its shape is always fully visible
  objects.sort((a, b) => a.r - b.r);
  const largest = objects[objects.length - 1];
  const ca = Math.cos(angle);
  const sa = Math.sin(angle);
  const texture: (u: number, v: number) => number = [
    (u: number, v: number) => 0.5 + 0.5 * Math.sin(2 * Math.PI * freq * (u * ca + v * sa) + phase), // stripes
    (u: number, v: number) => ((Math.floor(u * freq * 2) + Math.floor(v * freq * 2)) % 2 === 0 ? 1 : 0), // checkerboard
    (u: number, v: number) => Math.min(1, Math.max(0, 0.5 + (u - 0.5) * ca + (v - 0.5) * sa)), // gradient
    (u: number, v: number) => 0.25 * (2 + Math.sin(2 * Math.PI * freq * u + phase) + Math.sin(2 * Math.PI * freq * v - phase)), // plaid
  ][bgKind];
  return {
    objects, c1, c2, texture, label: 10 * (count - 1) + largest.shape,
    bgName: ['stripes', 'checkerboard', 'gradient', 'plaid'][bgKind],
  };
}

/** Renders image `index` into out[offset ..] as [C, S, S] in [-1, 1]; returns its (feature-network) label. */
export function renderScene(o: SceneOptions, index: number, out: Float32Array, offset: number): number {
  const s = planScene(o, index);
  const S = o.imageSize;
  const C = o.channels;
  const plane = S * S;
  const SS = 3; // supersampling per axis: anti-aliased edges and textures
  const px3 = [0, 0, 0];
  for (let py = 0; py < S; py++) {
    for (let px = 0; px < S; px++) {
      px3[0] = px3[1] = px3[2] = 0;
      for (let sy = 0; sy < SS; sy++) {
        for (let sx = 0; sx < SS; sx++) {
          const u = (px + (sx + 0.5) / SS) / S;
          const v = (py + (sy + 0.5) / SS) / S;
          // the topmost object covering (u, v), else the background
          let col: number[] | null = null;
          for (let k = s.objects.length - 1; k >= 0 && col === null; k--) {
            const ob = s.objects[k];
            if (SHAPES[ob.shape].inside(u - ob.cx, v - ob.cy, ob.r)) col = ob.colour;
          }
          if (col === null) {
            const a = s.texture(u, v);
            for (let c = 0; c < 3; c++) px3[c] += a * s.c1[c] + (1 - a) * s.c2[c];
          } else {
            for (let c = 0; c < 3; c++) px3[c] += col[c];
          }
        }
      }
      for (let c = 0; c < C; c++) out[offset + c * plane + py * S + px] = (2 * px3[c % 3]) / (SS * SS) - 1;
    }
  }
  return s.label;
}

/** Images up to this many floats are kept once rendered (10k 16x16x3 images: 7.7M floats, 31 MB). */
const CACHE_FLOATS = 64 << 20;

export class SceneDataset implements Dataset {
  readonly size: number;
  readonly shape: readonly [number, number, number];
  /** labels of the feature network (count and largest shape); the DiT trains unconditionally */
  readonly numClasses = SCENE_CLASSES;
  readonly description: string;
  readonly badFiles = 0;
  // Rendering costs ~10k operations per 16x16 image, more than a GPU training
  // step spends per image: each image is rendered once and kept (when the set
  // fits in CACHE_FLOATS), so every epoch after the first costs a copy.
  readonly #cache: { x: Float32Array; y: Int32Array; done: Uint8Array } | null;

  constructor(private readonly o: SceneOptions) {
    if (!Number.isInteger(o.size) || o.size < 1) throw new RangeError(`scenes: size must be a positive integer, found ${o.size}`);
    this.size = o.size;
    this.shape = [o.channels, o.imageSize, o.imageSize];
    const per = o.channels * o.imageSize * o.imageSize;
    this.#cache = o.size * per <= CACHE_FLOATS ? { x: new Float32Array(o.size * per), y: new Int32Array(o.size), done: new Uint8Array(o.size) } : null;
    this.description = `generated scenes: ${o.size} images ${o.channels}x${o.imageSize}x${o.imageSize}, 1-${SCENE_MAX_OBJECTS} objects on textured backgrounds (seed ${o.seed})`;
  }

  load(indices: Int32Array, flips: Uint8Array): Promise<Batch> {
    const [C, H, W] = this.shape;
    const n = indices.length;
    const x = new Float32Array(n * C * H * W);
    const y = new Int32Array(n);
    const per = C * H * W;
    const cache = this.#cache;
    for (let i = 0; i < n; i++) {
      const k = indices[i];
      if (cache && k >= 0 && k < this.size) {
        if (!cache.done[k]) {
          cache.y[k] = renderScene(this.o, k, cache.x, k * per);
          cache.done[k] = 1;
        }
        x.set(cache.x.subarray(k * per, (k + 1) * per), i * per);
        y[i] = cache.y[k];
      } else {
        y[i] = renderScene(this.o, k, x, i * per);
      }
      if (flips[i]) flipSample(x, i * per, C, H, W);
    }
    return Promise.resolve({ x, y });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
