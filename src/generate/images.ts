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

/** Escapes text for an SVG text node. */
export function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** The font every rendered label and chart uses (Debian: fonts-dejavu-core). */
export const FONT_FAMILY = 'DejaVu Sans, Verdana, sans-serif';

/** Label text size for rows `rowH` pixels tall. */
export function labelFontSize(rowH: number): number {
  return Math.max(8, Math.min(18, Math.floor(0.45 * rowH)));
}

/** Width of the label column: the longest label (DejaVu Sans digits are 0.64 em, letters up to ~0.7 em) plus margins. */
export function labelColumnWidth(rowLabels: string[], rowH: number): number {
  const longest = Math.max(1, ...rowLabels.map((s) => s.length));
  return Math.ceil(0.7 * labelFontSize(rowH) * longest) + 12;
}

export interface LabelledGrid {
  png: Buffer;
  W: number;
  H: number;
  /** width of the label column on the left */
  labelWidth: number;
}

/**
 * The grid of `grid()` with a white column on the left in which each row's
 * label (e.g. its class index) is written, vertically centred on the row.
 * The text is an SVG composited by sharp, which renders it with the system's
 * fonts; the image pixels stay exactly those of `grid()`.
 */
export async function labelledGridPng(
  imgs: Uint8Array, rows: number, cols: number, H: number, W: number, C: number,
  rowLabels: string[], pad = 2, zoom = 1,
): Promise<LabelledGrid> {
  if (rowLabels.length !== rows) throw new RangeError(`labelledGridPng: ${rowLabels.length} labels for ${rows} rows`);
  if (C !== 1 && C !== 3) throw new RangeError(`labelledGridPng: images must have 1 or 3 channels, got ${C}`);
  const g = grid(imgs, rows, cols, H, W, C, pad, zoom);
  const rowH = H * zoom + pad;
  const fontSize = labelFontSize(rowH);
  const labelWidth = labelColumnWidth(rowLabels, rowH);
  const { default: sharp } = await import('sharp');
  const texts = rowLabels.map((s, r) => {
    const cy = pad + r * rowH + (H * zoom) / 2;
    return `<text x="${labelWidth - 6}" y="${cy.toFixed(1)}" text-anchor="end" dominant-baseline="central">${xmlEscape(s)}</text>`;
  });
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${labelWidth}" height="${g.H}">` +
    `<g font-family="${FONT_FAMILY}" font-size="${fontSize}" fill="#222">${texts.join('')}</g></svg>`;
  const png = await sharp(Buffer.from(g.hwc), { raw: { width: g.W, height: g.H, channels: C } })
    .extend({ left: labelWidth, background: { r: 255, g: 255, b: 255 } })
    .composite([{ input: Buffer.from(svg), left: 0, top: 0 }])
    .toColourspace(C === 1 ? 'b-w' : 'srgb')
    .png()
    .toBuffer();
  return { png, W: g.W + labelWidth, H: g.H, labelWidth };
}
