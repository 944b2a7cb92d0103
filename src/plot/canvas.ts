// A small RGBA raster with the primitives charts need, written as PNG by pngjs.
import { writeFileSync } from 'node:fs';
import { PNG } from 'pngjs';
import { ADVANCE, GLYPH_H, GLYPH_W, glyphPixel } from './font.js';

/** [r, g, b] or [r, g, b, alpha 0..1] */
export type Color = readonly [number, number, number] | readonly [number, number, number, number];

export class Canvas {
  readonly data: Buffer;

  constructor(
    readonly width: number,
    readonly height: number,
    background: Color = [255, 255, 255],
  ) {
    if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || width * height > 1 << 26) {
      throw new RangeError(`Canvas: width and height must be positive integers (at most 2^26 pixels), got ${width} x ${height}`);
    }
    this.data = Buffer.alloc(width * height * 4);
    for (let i = 0; i < width * height; i++) {
      this.data[4 * i] = background[0];
      this.data[4 * i + 1] = background[1];
      this.data[4 * i + 2] = background[2];
      this.data[4 * i + 3] = 255;
    }
  }

  /** Blends `c` over pixel (x, y); outside the canvas nothing happens. */
  pixel(x: number, y: number, c: Color): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = 4 * (y * this.width + x);
    const a = c.length > 3 ? (c[3] as number) : 1;
    for (let k = 0; k < 3; k++) this.data[i + k] = Math.round(a * c[k] + (1 - a) * this.data[i + k]);
  }

  fillRect(x: number, y: number, w: number, h: number, c: Color): void {
    const x0 = Math.max(0, Math.round(x));
    const y0 = Math.max(0, Math.round(y));
    const x1 = Math.min(this.width, Math.round(x + w));
    const y1 = Math.min(this.height, Math.round(y + h));
    for (let yy = y0; yy < y1; yy++) for (let xx = x0; xx < x1; xx++) this.pixel(xx, yy, c);
  }

  /** A line of the given width (square brush stepped along the longer axis). */
  line(x0: number, y0: number, x1: number, y1: number, c: Color, width = 1): void {
    const dx = x1 - x0;
    const dy = y1 - y0;
    const steps = Math.max(1, Math.ceil(Math.max(Math.abs(dx), Math.abs(dy))));
    const r = (width - 1) / 2;
    for (let s = 0; s <= steps; s++) {
      const x = x0 + (dx * s) / steps;
      const y = y0 + (dy * s) / steps;
      if (width <= 1) this.pixel(x, y, c);
      else this.fillRect(x - r, y - r, width, width, [c[0], c[1], c[2]]);
    }
  }

  /** Width in pixels of `s` drawn at `scale`. */
  static textWidth(s: string, scale = 1): number {
    return s.length === 0 ? 0 : (s.length * ADVANCE - 1) * scale;
  }
  static textHeight(scale = 1): number {
    return GLYPH_H * scale;
  }

  /** Text with its top-left corner at (x, y); `vertical` draws it bottom-to-top (rotated 90° left). */
  text(x: number, y: number, s: string, c: Color, scale = 1, vertical = false): void {
    x = Math.round(x);
    y = Math.round(y);
    for (let k = 0; k < s.length; k++) {
      for (let col = 0; col < GLYPH_W; col++) {
        for (let row = 0; row < GLYPH_H; row++) {
          if (!glyphPixel(s[k], col, row)) continue;
          const u = (k * ADVANCE + col) * scale;
          const v = row * scale;
          if (vertical) this.fillRect(x + v, y - u - scale, scale, scale, c);
          else this.fillRect(x + u, y + v, scale, scale, c);
        }
      }
    }
  }

  toPNG(): Buffer {
    const png = new PNG({ width: this.width, height: this.height });
    this.data.copy(png.data);
    return PNG.sync.write(png);
  }

  save(path: string): void {
    writeFileSync(path, this.toPNG());
  }
}
