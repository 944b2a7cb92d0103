// ADM / DiT's `center_crop_arr`, reproducing Pillow's resampling arithmetic:
//
//   while min(*img.size) >= 2 * image_size:
//       img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
//   scale = image_size / min(*img.size)
//   img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
//   arr = np.array(img); crop the centre image_size x image_size
//
// Why not sharp's resize: libvips' kernels, shrink-on-load and rounding differ
// from Pillow's, and DiT/SpeeD latents (and the FID reference batches) were
// made with Pillow. This module follows Pillow's Resample.c: separable
// two-pass (horizontal, then vertical) convolution with coefficients
// normalised to sum 1, quantised to 22-bit fixed point, accumulated in
// integers with a half-unit bias and clamped to 0..255 after each pass. Only the
// output pixels inside the final crop are computed (each depends only on its
// own coefficients, so the values are those of the whole resized image).
// Test: test/center-crop.test.ts against a fixture made by Pillow.

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

type Filter = { support: number; f: (x: number) => number };

const BOX: Filter = { support: 0.5, f: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) };
const BICUBIC: Filter = {
  support: 2,
  f: (x) => {
    const a = -0.5;
    if (x < 0) x = -x;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
  },
};

interface Coeffs {
  ksize: number;
  /** per output index: first source index and count */
  bounds: Int32Array;
  /** fixed-point weights, ksize per output index */
  kk: Int32Array;
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for output indices [o0, o1). */
function coeffs(inSize: number, outSize: number, filter: Filter, o0: number, o1: number): Coeffs {
  const scale = inSize / outSize;
  const filterscale = Math.max(1, scale);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const n = o1 - o0;
  const bounds = new Int32Array(2 * n);
  const kk = new Int32Array(n * ksize);
  const k = new Float64Array(ksize);
  const ss = 1 / filterscale;
  for (let i = 0; i < n; i++) {
    const xx = o0 + i;
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.f((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? k[x] / ww : k[x];
      kk[i * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    bounds[2 * i] = xmin;
    bounds[2 * i + 1] = Math.max(0, xmax);
  }
  return { ksize, bounds, kk };
}

const clip8 = (ss: number): number => {
  const v = Math.floor(ss / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
};

/**
 * Pillow's Image.resize(size, filter) of an RGB image [h, w, 3], restricted to
 * the output window x in [x0, x0 + cw), y in [y0, y0 + ch); returns [ch, cw, 3].
 */
export function resizeRgbWindow(
  src: Uint8Array, w: number, h: number, ow: number, oh: number, filter: 'box' | 'bicubic',
  x0 = 0, y0 = 0, cw = ow, ch = oh,
): Uint8Array {
  const f = filter === 'box' ? BOX : BICUBIC;
  if (ow === w && oh === h) {
    // Pillow returns a copy when the size does not change.
    const out = new Uint8Array(cw * ch * 3);
    for (let y = 0; y < ch; y++) out.set(src.subarray(((y0 + y) * w + x0) * 3, ((y0 + y) * w + x0 + cw) * 3), y * cw * 3);
    return out;
  }
  const needH = ow !== w;
  const needV = oh !== h;
  const cv = coeffs(h, oh, f, y0, y0 + ch);
  // Source rows the vertical pass reads.
  let r0 = h;
  let r1 = 0;
  if (needV) {
    for (let i = 0; i < ch; i++) {
      r0 = Math.min(r0, cv.bounds[2 * i]);
      r1 = Math.max(r1, cv.bounds[2 * i] + cv.bounds[2 * i + 1]);
    }
  } else { r0 = y0; r1 = y0 + ch; }
  if (r1 < r0) r1 = r0;
  // Horizontal pass over rows r0..r1 into tmp [r1 - r0, cw, 3].
  const rows = r1 - r0;
  let tmp: Uint8Array;
  if (needH) {
    const c = coeffs(w, ow, f, x0, x0 + cw);
    tmp = new Uint8Array(rows * cw * 3);
    for (let r = 0; r < rows; r++) {
      const base = (r0 + r) * w * 3;
      for (let i = 0; i < cw; i++) {
        const xmin = c.bounds[2 * i];
        const xmax = c.bounds[2 * i + 1];
        const kb = i * c.ksize;
        let s0 = HALF, s1 = HALF, s2 = HALF;
        for (let x = 0; x < xmax; x++) {
          const kv = c.kk[kb + x];
          const p = base + (xmin + x) * 3;
          s0 += src[p] * kv; s1 += src[p + 1] * kv; s2 += src[p + 2] * kv;
        }
        const t = (r * cw + i) * 3;
        tmp[t] = clip8(s0); tmp[t + 1] = clip8(s1); tmp[t + 2] = clip8(s2);
      }
    }
  } else {
    tmp = new Uint8Array(rows * cw * 3);
    for (let r = 0; r < rows; r++) tmp.set(src.subarray(((r0 + r) * w + x0) * 3, ((r0 + r) * w + x0 + cw) * 3), r * cw * 3);
  }
  if (!needV) return tmp; // rows were exactly y0..y0+ch
  const out = new Uint8Array(ch * cw * 3);
  for (let j = 0; j < ch; j++) {
    const ymin = cv.bounds[2 * j] - r0;
    const ymax = cv.bounds[2 * j + 1];
    const kb = j * cv.ksize;
    for (let i = 0; i < cw; i++) {
      let s0 = HALF, s1 = HALF, s2 = HALF;
      for (let y = 0; y < ymax; y++) {
        const kv = cv.kk[kb + y];
        const p = ((ymin + y) * cw + i) * 3;
        s0 += tmp[p] * kv; s1 += tmp[p + 1] * kv; s2 += tmp[p + 2] * kv;
      }
      const t = (j * cw + i) * 3;
      out[t] = clip8(s0); out[t + 1] = clip8(s1); out[t + 2] = clip8(s2);
    }
  }
  return out;
}

/** Python 3's round(): half to even. */
export function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** ADM's center_crop_arr of an RGB image [h, w, 3] -> [size, size, 3]. */
export function centerCropArr(src: Uint8Array, w: number, h: number, size: number): Uint8Array {
  let img = src;
  while (Math.min(w, h) >= 2 * size) {
    const nw = Math.floor(w / 2);
    const nh = Math.floor(h / 2);
    img = resizeRgbWindow(img, w, h, nw, nh, 'box');
    w = nw;
    h = nh;
  }
  const scale = size / Math.min(w, h);
  const ow = pyRound(w * scale);
  const oh = pyRound(h * scale);
  if (ow < size || oh < size) throw new RangeError(`center crop: resized ${ow}x${oh} is smaller than ${size}`);
  const cy = Math.floor((oh - size) / 2);
  const cx = Math.floor((ow - size) / 2);
  return resizeRgbWindow(img, w, h, ow, oh, 'bicubic', cx, cy, size, size);
}

/**
 * RGB uint8 [S, S, 3] -> float [C, S, S] in [-1, 1] at out[offset ..] (x / 127.5 - 1,
 * as DiT's Normalize(0.5, 0.5) after ToTensor), mirrored when `flip`; C = 1 takes
 * red, C > 3 repeats the channels.
 */
export function rgbToChw(rgb: Uint8Array, S: number, C: number, flip: boolean, out: Float32Array, offset: number): void {
  const plane = S * S;
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      const p = (y * S + x) * 3;
      const dx = flip ? S - 1 - x : x;
      for (let c = 0; c < C; c++) out[offset + c * plane + y * S + dx] = rgb[p + (c % 3)] / 127.5 - 1;
    }
  }
}
