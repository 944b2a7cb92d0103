// The built-in class-conditional data set: coloured shapes (one shape and
// colour per class) with jittered position, size and colour on a dark tinted
// background. Image i is a pure function of (seed, i), so nothing is stored and
// every run with the same seed sees the same data.
import { Rng } from '../rng.js';
import type { Batch, Dataset } from './types.js';
import { flipSample } from './types.js';

type Inside = (du: number, dv: number, r: number) => boolean;

export const SHAPES: { name: string; inside: Inside }[] = [
  { name: 'disc', inside: (u, v, r) => u * u + v * v < r * r },
  { name: 'square', inside: (u, v, r) => Math.abs(u) < 0.85 * r && Math.abs(v) < 0.85 * r },
  { name: 'triangle', inside: (u, v, r) => v > -r && v < 0.8 * r && Math.abs(u) < (v + r) / 1.8 },
  { name: 'plus', inside: (u, v, r) => (Math.abs(u) < 0.3 * r && Math.abs(v) < r) || (Math.abs(v) < 0.3 * r && Math.abs(u) < r) },
  { name: 'ring', inside: (u, v, r) => { const d = u * u + v * v; return d < r * r && d > 0.36 * r * r; } },
  { name: 'bar', inside: (u, v, r) => Math.abs(u) < 1.2 * r && Math.abs(v) < 0.35 * r },
  { name: 'diamond', inside: (u, v, r) => Math.abs(u) + Math.abs(v) < 1.1 * r },
  {
    name: 'cross',
    inside: (u, v, r) => {
      const a = (u + v) * Math.SQRT1_2;
      const b = (u - v) * Math.SQRT1_2;
      return (Math.abs(a) < 0.28 * r && Math.abs(b) < r) || (Math.abs(b) < 0.28 * r && Math.abs(a) < r);
    },
  },
  { name: 'frame', inside: (u, v, r) => { const m = Math.max(Math.abs(u), Math.abs(v)); return m < 0.9 * r && m > 0.5 * r; } },
  {
    name: 'two dots',
    inside: (u, v, r) => { const q = 0.45 * r; return (u - 0.55 * r) ** 2 + v * v < q * q || (u + 0.55 * r) ** 2 + v * v < q * q; },
  },
];

const COLOURS: [number, number, number][] = [
  [0.92, 0.15, 0.15], // red
  [0.15, 0.8, 0.2], // green
  [0.25, 0.4, 1.0], // blue
  [0.95, 0.9, 0.15], // yellow
  [0.9, 0.2, 0.9], // magenta
  [0.15, 0.9, 0.9], // cyan
  [0.95, 0.95, 0.95], // white
  [1.0, 0.55, 0.1], // orange
  [0.6, 0.3, 0.95], // purple
  [1.0, 0.6, 0.75], // pink
];

/** Human-readable name of class c (for grids and docs). */
export function syntheticClassName(c: number): string {
  const names = ['red', 'green', 'blue', 'yellow', 'magenta', 'cyan', 'white', 'orange', 'purple', 'pink'];
  return `${names[(c + 3 * Math.floor(c / 10)) % 10]} ${SHAPES[c % 10].name}`;
}

export interface SyntheticOptions {
  seed: number;
  size: number;
  imageSize: number;
  channels: number;
  numClasses: number;
}

/** Renders image `index` into out[offset ..] as [C, S, S] in [-1, 1]; returns its label. */
export function renderSynthetic(o: SyntheticOptions, index: number, out: Float32Array, offset: number): number {
  const numClasses = Math.max(1, o.numClasses);
  // A per-image generator keyed by (seed, index): images are independent of order.
  const rng = new Rng(o.seed * 1_000_003 + index + 7);
  const label = rng.int(numClasses);
  const shape = SHAPES[label % 10].inside;
  const base = COLOURS[(label + 3 * Math.floor(label / 10)) % 10];
  const col = base.map((v) => Math.min(1, Math.max(0, v + (rng.uniform() - 0.5) * 0.2)));
  const bg = [0, 1, 2].map(() => 0.05 + rng.uniform() * 0.2);
  // Radius 0.26-0.36 of the image: at 16x16 the plus and cross arms are ~3 px wide
  // and the two dots ~2.5 px across (at 0.2-0.32 they were 1-2 px, and a DiT
  // drew them as blobs in the README's main job); centre within +-0.12.
  const r = 0.26 + rng.uniform() * 0.1;
  const cx = 0.5 + (rng.uniform() - 0.5) * 0.24;
  const cy = 0.5 + (rng.uniform() - 0.5) * 0.24;
  const S = o.imageSize;
  const C = o.channels;
  const plane = S * S;
  const SS = 3; // supersampling per axis: soft, anti-aliased edges
  for (let py = 0; py < S; py++) {
    for (let px = 0; px < S; px++) {
      let cover = 0;
      for (let sy = 0; sy < SS; sy++) {
        for (let sx = 0; sx < SS; sx++) {
          const u = (px + (sx + 0.5) / SS) / S - cx;
          const v = (py + (sy + 0.5) / SS) / S - cy;
          if (shape(u, v, r)) cover++;
        }
      }
      const a = cover / (SS * SS);
      for (let c = 0; c < C; c++) {
        const v = a * col[c % 3] + (1 - a) * bg[c % 3];
        out[offset + c * plane + py * S + px] = 2 * v - 1;
      }
    }
  }
  return label;
}

export class SyntheticDataset implements Dataset {
  readonly size: number;
  readonly shape: readonly [number, number, number];
  readonly numClasses: number;
  readonly description: string;
  readonly badFiles = 0;

  constructor(private readonly o: SyntheticOptions) {
    this.size = o.size;
    this.shape = [o.channels, o.imageSize, o.imageSize];
    this.numClasses = o.numClasses;
    this.description = `synthetic shapes: ${o.size} images ${o.channels}x${o.imageSize}x${o.imageSize}, ${o.numClasses} classes (seed ${o.seed})`;
  }

  load(indices: Int32Array, flips: Uint8Array): Promise<Batch> {
    const [C, H, W] = this.shape;
    const n = indices.length;
    const x = new Float32Array(n * C * H * W);
    const y = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      y[i] = renderSynthetic(this.o, indices[i], x, i * C * H * W);
      if (flips[i]) flipSample(x, i * C * H * W, C, H, W);
    }
    return Promise.resolve({ x, y });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
