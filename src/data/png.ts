// PNG helpers for image folders: a cheap header check (signature + IHDR) for
// the scan at start-up, and the full decode with centre crop, area resize,
// optional flip and scaling to [-1, 1] that the decode worker runs.
import { closeSync, openSync, readSync } from 'node:fs';
import { PNG } from 'pngjs';

const SIG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Width and height from the IHDR chunk; throws Error with the reason. */
export function readPngSize(file: string): { width: number; height: number } {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(24);
    const got = readSync(fd, b, 0, 24, 0);
    if (got < 24) throw new Error(`truncated: ${got} bytes, not a PNG`);
    if (!b.subarray(0, 8).equals(SIG)) throw new Error('not a PNG file (bad signature)');
    if (b.toString('latin1', 12, 16) !== 'IHDR') throw new Error('malformed PNG: the first chunk is not IHDR');
    const width = b.readUInt32BE(16);
    const height = b.readUInt32BE(20);
    if (width === 0 || height === 0) throw new Error(`malformed PNG: size ${width}x${height}`);
    return { width, height };
  } finally {
    closeSync(fd);
  }
}

/** Source index ranges and weights of an area (box) resampling from n to m. */
function areaWeights(n: number, m: number): { idx: Int32Array; w: Float32Array; start: Int32Array } {
  const scale = n / m;
  const idx: number[] = [];
  const w: number[] = [];
  const start = new Int32Array(m + 1);
  for (let o = 0; o < m; o++) {
    start[o] = idx.length;
    const a = o * scale;
    const b = (o + 1) * scale;
    if (scale <= 1) {
      // Upsampling: take the source pixel under the output pixel's centre.
      idx.push(Math.min(n - 1, Math.floor((a + b) / 2)));
      w.push(1);
      continue;
    }
    for (let s = Math.floor(a); s < Math.ceil(b) && s < n; s++) {
      const cover = Math.min(b, s + 1) - Math.max(a, s);
      if (cover > 1e-9) { idx.push(s); w.push(cover / scale); }
    }
  }
  start[m] = idx.length;
  return { idx: Int32Array.from(idx), w: Float32Array.from(w), start };
}

export interface DecodeOptions {
  size: number;
  channels: number;
  /** centre crop + resize; when false the image must already be size x size */
  centerCrop: boolean;
}

/**
 * Decodes a PNG into out[offset ..] as [C, size, size] in [-1, 1] (RGB; a
 * grey image is repeated, alpha ignored). Throws Error with the reason.
 */
export function decodePng(buf: Buffer, o: DecodeOptions, flip: boolean, out: Float32Array, offset: number): void {
  const png = PNG.sync.read(buf);
  const { width: w, height: h, data } = png;
  const S = o.size;
  if (!o.centerCrop && (w !== S || h !== S)) {
    throw new Error(`image is ${w}x${h}, expected ${S}x${S} (data.image_size; set data.center_crop: true to crop and resize)`);
  }
  const side = Math.min(w, h);
  const x0 = Math.floor((w - side) / 2);
  const y0 = Math.floor((h - side) / 2);
  const wx = areaWeights(side, S);
  const C = o.channels;
  const plane = S * S;
  const tmp = new Float32Array(side * S * 3); // horizontally resized rows
  for (let r = 0; r < side; r++) {
    const rowBase = ((y0 + r) * w + x0) * 4;
    for (let ox = 0; ox < S; ox++) {
      let a0 = 0, a1 = 0, a2 = 0;
      for (let k = wx.start[ox]; k < wx.start[ox + 1]; k++) {
        const p = rowBase + wx.idx[k] * 4;
        const ww = wx.w[k];
        a0 += ww * data[p]; a1 += ww * data[p + 1]; a2 += ww * data[p + 2];
      }
      const t = (r * S + ox) * 3;
      tmp[t] = a0; tmp[t + 1] = a1; tmp[t + 2] = a2;
    }
  }
  for (let oy = 0; oy < S; oy++) {
    for (let ox = 0; ox < S; ox++) {
      let a0 = 0, a1 = 0, a2 = 0;
      for (let k = wx.start[oy]; k < wx.start[oy + 1]; k++) {
        const t = (wx.idx[k] * S + ox) * 3;
        const ww = wx.w[k];
        a0 += ww * tmp[t]; a1 += ww * tmp[t + 1]; a2 += ww * tmp[t + 2];
      }
      const dx = flip ? S - 1 - ox : ox;
      const rgb = [a0, a1, a2];
      for (let c = 0; c < C; c++) out[offset + c * plane + oy * S + dx] = rgb[c % 3] / 127.5 - 1;
    }
  }
}
