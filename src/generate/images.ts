// Model outputs ([N, C, H, W] in [-1, 1]) to 8-bit images, PNG files and grids.
import { PNG } from 'pngjs';

import { writeFileAtomic } from '../io/npy.js';

/** [N, C, H, W] floats in [-1, 1] -> [N, H, W, C] uint8, as DiT's sample.py ((x + 1) * 127.5, clamped). */
export function toUint8NHWC(x: Float32Array, N: number, C: number, H: number, W: number): Uint8Array {
  const out = new Uint8Array(N * H * W * C);
  const plane = H * W;
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const src = (n * C + c) * plane;
      for (let p = 0; p < plane; p++) {
        const v = Math.round((x[src + p] + 1) * 127.5);
        out[(n * plane + p) * C + c] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
    }
  }
  return out;
}

/** Encodes HWC uint8 (C = 1 or 3) as PNG bytes. */
export function encodePng(hwc: Uint8Array, W: number, H: number, C: number): Buffer {
  const png = new PNG({ width: W, height: H });
  for (let p = 0; p < W * H; p++) {
    const r = hwc[p * C];
    png.data[p * 4] = r;
    png.data[p * 4 + 1] = C >= 3 ? hwc[p * C + 1] : r;
    png.data[p * 4 + 2] = C >= 3 ? hwc[p * C + 2] : r;
    png.data[p * 4 + 3] = 255;
  }
  return PNG.sync.write(png);
}

export function writePng(file: string, hwc: Uint8Array, W: number, H: number, C: number): void {
  writeFileAtomic(file, [encodePng(hwc, W, H, C)]);
}

/**
 * Lays out N = rows * cols images ([N, H, W, C] uint8) as a grid with `pad`
 * pixels of grey between them, each upscaled by an integer `zoom` (small
 * images are hard to judge at 1:1).
 */
export function grid(imgs: Uint8Array, rows: number, cols: number, H: number, W: number, C: number, pad = 2, zoom = 1): { hwc: Uint8Array; W: number; H: number } {
  const GW = cols * (W * zoom + pad) + pad;
  const GH = rows * (H * zoom + pad) + pad;
  const out = new Uint8Array(GW * GH * C).fill(128);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const n = r * cols + c;
      const ox = pad + c * (W * zoom + pad);
      const oy = pad + r * (H * zoom + pad);
      for (let y = 0; y < H * zoom; y++) {
        for (let x = 0; x < W * zoom; x++) {
          const s = ((n * H + Math.floor(y / zoom)) * W + Math.floor(x / zoom)) * C;
          const d = ((oy + y) * GW + ox + x) * C;
          for (let k = 0; k < C; k++) out[d + k] = imgs[s + k];
        }
      }
    }
  }
  return { hwc: out, W: GW, H: GH };
}
