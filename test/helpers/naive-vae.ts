// A naive float64 AutoencoderKL forward (diffusers' definition, written as
// plain loops) for checking the native VAE on tiny configs: encoder moments
// (quant_conv output) and decoder output. Slow; only for a few small images.
import type { VaeConfig } from '../../src/vae/index.js';

type W = (name: string) => Float32Array;
interface T4 {
  c: number;
  h: number;
  w: number;
  d: Float64Array; // one image [c, h, w]
}

function conv(x: T4, wt: Float32Array, b: Float32Array, co: number, k: number, stride: number, pads: [number, number, number, number]): T4 {
  const [pt, pl, pb, pr] = pads;
  const ho = Math.floor((x.h + pt + pb - k) / stride) + 1;
  const wo = Math.floor((x.w + pl + pr - k) / stride) + 1;
  const d = new Float64Array(co * ho * wo);
  for (let o = 0; o < co; o++)
    for (let oy = 0; oy < ho; oy++)
      for (let ox = 0; ox < wo; ox++) {
        let s = b[o]!;
        for (let ci = 0; ci < x.c; ci++)
          for (let ky = 0; ky < k; ky++) {
            const iy = oy * stride - pt + ky;
            if (iy < 0 || iy >= x.h) continue;
            for (let kx = 0; kx < k; kx++) {
              const ix = ox * stride - pl + kx;
              if (ix < 0 || ix >= x.w) continue;
              s += x.d[(ci * x.h + iy) * x.w + ix]! * wt[((o * x.c + ci) * k + ky) * k + kx]!;
            }
          }
        d[(o * ho + oy) * wo + ox] = s;
      }
  return { c: co, h: ho, w: wo, d };
}
const conv3 = (x: T4, w: W, p: string, co: number): T4 => conv(x, w(`${p}.weight`), w(`${p}.bias`), co, 3, 1, [1, 1, 1, 1]);
const conv1 = (x: T4, w: W, p: string, co: number): T4 => conv(x, w(`${p}.weight`), w(`${p}.bias`), co, 1, 1, [0, 0, 0, 0]);

function gn(x: T4, w: W, p: string, groups: number, silu: boolean): T4 {
  const g = w(`${p}.weight`), b = w(`${p}.bias`);
  const hw = x.h * x.w, cpg = x.c / groups;
  const d = new Float64Array(x.d.length);
  for (let gi = 0; gi < groups; gi++) {
    const base = gi * cpg * hw, n = cpg * hw;
    let s = 0;
    for (let i = 0; i < n; i++) s += x.d[base + i]!;
    const mu = s / n;
    let ss = 0;
    for (let i = 0; i < n; i++) ss += (x.d[base + i]! - mu) ** 2;
    const rstd = 1 / Math.sqrt(ss / n + 1e-6);
    for (let i = 0; i < n; i++) {
      const ch = gi * cpg + Math.floor(i / hw);
      let v = (x.d[base + i]! - mu) * rstd * g[ch]! + b[ch]!;
      if (silu) v = v / (1 + Math.exp(-v));
      d[base + i] = v;
    }
  }
  return { ...x, d };
}
const add = (a: T4, b: T4): T4 => ({ ...a, d: a.d.map((v, i) => v + b.d[i]!) });

function resnet(x: T4, w: W, p: string, co: number, groups: number): T4 {
  let h = conv3(gn(x, w, `${p}.norm1`, groups, true), w, `${p}.conv1`, co);
  h = conv3(gn(h, w, `${p}.norm2`, groups, true), w, `${p}.conv2`, co);
  const sc = x.c !== co ? conv1(x, w, `${p}.conv_shortcut`, co) : x;
  return add(sc, h);
}

function attention(x: T4, w: W, p: string, groups: number): T4 {
  const C = x.c, L = x.h * x.w;
  const h = gn(x, w, `${p}.group_norm`, groups, false);
  const lin = (name: string): Float64Array => {
    // tokens [L, C] -> [L, C]
    const wt = w(`${p}.${name}.weight`), b = w(`${p}.${name}.bias`);
    const o = new Float64Array(L * C);
    for (let l = 0; l < L; l++)
      for (let j = 0; j < C; j++) {
        let s = b[j]!;
        for (let c = 0; c < C; c++) s += h.d[c * L + l]! * wt[j * C + c]!;
        o[l * C + j] = s;
      }
    return o;
  };
  const q = lin('to_q'), k = lin('to_k'), v = lin('to_v');
  const att = new Float64Array(L * C);
  const sc = 1 / Math.sqrt(C);
  for (let i = 0; i < L; i++) {
    const s = new Float64Array(L);
    let mx = -Infinity;
    for (let j = 0; j < L; j++) {
      let d = 0;
      for (let c = 0; c < C; c++) d += q[i * C + c]! * k[j * C + c]!;
      s[j] = d * sc;
      mx = Math.max(mx, s[j]!);
    }
    let sum = 0;
    for (let j = 0; j < L; j++) sum += s[j] = Math.exp(s[j]! - mx);
    for (let c = 0; c < C; c++) {
      let a = 0;
      for (let j = 0; j < L; j++) a += s[j]! * v[j * C + c]!;
      att[i * C + c] = a / sum;
    }
  }
  const wo = w(`${p}.to_out.0.weight`), bo = w(`${p}.to_out.0.bias`);
  const d = new Float64Array(x.d.length);
  for (let l = 0; l < L; l++)
    for (let j = 0; j < C; j++) {
      let s = bo[j]!;
      for (let c = 0; c < C; c++) s += att[l * C + c]! * wo[j * C + c]!;
      d[j * L + l] = x.d[j * L + l]! + s;
    }
  return { ...x, d };
}

function mid(x: T4, w: W, p: string, g: number): T4 {
  x = resnet(x, w, `${p}.resnets.0`, x.c, g);
  x = attention(x, w, `${p}.attentions.0`, g);
  return resnet(x, w, `${p}.resnets.1`, x.c, g);
}

/** One image [C, H, W] -> moments [2 zc, H/f, W/f] */
export function naiveEncode(c: VaeConfig, w: W, img: Float64Array, H: number, W: number): Float64Array {
  const g = c.normNumGroups, b = c.blockOutChannels;
  let x: T4 = conv3({ c: c.inChannels, h: H, w: W, d: img }, w, 'encoder.conv_in', b[0]!);
  for (let i = 0; i < b.length; i++) {
    for (let j = 0; j < c.layersPerBlock; j++) x = resnet(x, w, `encoder.down_blocks.${i}.resnets.${j}`, b[i]!, g);
    if (i < b.length - 1) {
      const p = `encoder.down_blocks.${i}.downsamplers.0.conv`;
      x = conv(x, w(`${p}.weight`), w(`${p}.bias`), x.c, 3, 2, [0, 0, 1, 1]);
    }
  }
  x = mid(x, w, 'encoder.mid_block', g);
  x = conv3(gn(x, w, 'encoder.conv_norm_out', g, true), w, 'encoder.conv_out', 2 * c.latentChannels);
  return conv1(x, w, 'quant_conv', 2 * c.latentChannels).d;
}

/** One latent [zc, h, w] -> image [out, h f, w f] */
export function naiveDecode(c: VaeConfig, w: W, z: Float64Array, h: number, wd: number): Float64Array {
  const g = c.normNumGroups, b = c.blockOutChannels, L = b.length;
  let x: T4 = conv1({ c: c.latentChannels, h, w: wd, d: z }, w, 'post_quant_conv', c.latentChannels);
  x = conv3(x, w, 'decoder.conv_in', b[L - 1]!);
  x = mid(x, w, 'decoder.mid_block', g);
  for (let i = 0; i < L; i++) {
    for (let j = 0; j <= c.layersPerBlock; j++) x = resnet(x, w, `decoder.up_blocks.${i}.resnets.${j}`, b[L - 1 - i]!, g);
    if (i < L - 1) {
      const u = new Float64Array(x.c * 4 * x.h * x.w);
      for (let ch = 0; ch < x.c; ch++)
        for (let yy = 0; yy < 2 * x.h; yy++)
          for (let xx = 0; xx < 2 * x.w; xx++) u[(ch * 2 * x.h + yy) * 2 * x.w + xx] = x.d[(ch * x.h + (yy >> 1)) * x.w + (xx >> 1)]!;
      x = conv3({ c: x.c, h: 2 * x.h, w: 2 * x.w, d: u }, w, `decoder.up_blocks.${i}.upsamplers.0.conv`, x.c);
    }
  }
  return conv3(gn(x, w, 'decoder.conv_norm_out', g, true), w, 'decoder.conv_out', c.outChannels).d;
}
