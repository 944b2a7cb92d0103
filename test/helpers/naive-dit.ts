// An independent, naive float64 DiT forward pass written straight from
// the DiT equations (DiT's models.py: patchify, adaLN-Zero blocks, final layer), for checking
// the native forward. It shares no code with the kernels: every step (patchify,
// position embedding, timestep embedding, LayerNorm, attention, GELU, unpatchify)
// is spelled out with plain loops, one sample at a time. Slow on purpose; use
// small models only.

export interface NaiveConfig {
  inputSize: number;
  patchSize: number;
  inChannels: number;
  hiddenSize: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  numClasses: number;
  learnSigma: boolean;
}

/** Parameters by DiT state_dict name, row-major as in PyTorch. */
export type NaiveParams = Record<string, Float64Array>;

function param(p: NaiveParams, name: string): Float64Array {
  const v = p[name];
  if (!v) throw new Error(`naive DiT: missing parameter ${name}`);
  return v;
}

/** y[o] = b[o] + Σ_i W[o, i] x[i] for W [out, in] (torch.nn.Linear). */
function linear(x: Float64Array, w: Float64Array, b: Float64Array | null, inF: number, outF: number): Float64Array {
  const y = new Float64Array(outF);
  for (let o = 0; o < outF; o++) {
    let s = b ? b[o] : 0;
    for (let i = 0; i < inF; i++) s += w[o * inF + i] * x[i];
    y[o] = s;
  }
  return y;
}

const silu = (v: number): number => v / (1 + Math.exp(-v));
const geluTanh = (v: number): number => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)));

/** LayerNorm without affine (eps 1e-6, biased variance) of one vector. */
function layerNorm(x: Float64Array): Float64Array {
  const D = x.length;
  let mean = 0;
  for (let i = 0; i < D; i++) mean += x[i];
  mean /= D;
  let v = 0;
  for (let i = 0; i < D; i++) v += (x[i] - mean) ** 2;
  v /= D;
  const r = 1 / Math.sqrt(v + 1e-6);
  return x.map((xi) => (xi - mean) * r);
}

/**
 * Fixed 2D sin-cos position embedding [L, D]: first D/2 channels from the token's
 * column index, last D/2 from its row index; each half [sin(pos w_i), cos(pos w_i)],
 * w_i = 10000^(-i/(D/4)).
 */
export function naivePosEmbed(D: number, grid: number): Float64Array {
  const out = new Float64Array(grid * grid * D);
  const q = D / 4;
  for (let row = 0; row < grid; row++) {
    for (let col = 0; col < grid; col++) {
      const l = row * grid + col;
      for (let i = 0; i < q; i++) {
        const w = Math.pow(10000, -i / q);
        out[l * D + i] = Math.sin(col * w);
        out[l * D + q + i] = Math.cos(col * w);
        out[l * D + 2 * q + i] = Math.sin(row * w);
        out[l * D + 3 * q + i] = Math.cos(row * w);
      }
    }
  }
  return out;
}

/** 256 frequencies exp(-ln(10000) i / 128): [cos(t f_i) ..., sin(t f_i) ...]. */
function timestepFrequencies(t: number): Float64Array {
  const half = 128;
  const e = new Float64Array(2 * half);
  for (let i = 0; i < half; i++) {
    const f = Math.exp((-Math.log(10000) * i) / half);
    e[i] = Math.cos(t * f);
    e[half + i] = Math.sin(t * f);
  }
  return e;
}

/** Multi-head self-attention on tokens [L, D] given the qkv Linear output [L, 3D]. */
function attention(qkv: Float64Array[], L: number, D: number, heads: number): Float64Array[] {
  const hd = D / heads;
  const scale = 1 / Math.sqrt(hd);
  const out = Array.from({ length: L }, () => new Float64Array(D));
  for (let h = 0; h < heads; h++) {
    // qkv splits as [3][heads][hd]
    const q = (l: number, k: number) => qkv[l][0 * D + h * hd + k];
    const kk = (l: number, k: number) => qkv[l][1 * D + h * hd + k];
    const v = (l: number, k: number) => qkv[l][2 * D + h * hd + k];
    for (let i = 0; i < L; i++) {
      const s = new Float64Array(L);
      let max = -Infinity;
      for (let j = 0; j < L; j++) {
        let dot = 0;
        for (let k = 0; k < hd; k++) dot += q(i, k) * kk(j, k);
        s[j] = dot * scale;
        max = Math.max(max, s[j]);
      }
      let sum = 0;
      for (let j = 0; j < L; j++) {
        s[j] = Math.exp(s[j] - max);
        sum += s[j];
      }
      for (let k = 0; k < hd; k++) {
        let acc = 0;
        for (let j = 0; j < L; j++) acc += (s[j] / sum) * v(j, k);
        out[i][h * hd + k] = acc;
      }
    }
  }
  return out;
}

/**
 * DiT forward: x [N, C, H, W], t [N], y [N] -> [N, Cout, H, W] (Cout = 2C with
 * learned sigma). `posEmbed` [L, D] defaults to naivePosEmbed.
 */
export function naiveDiTForward(
  cfg: NaiveConfig,
  p: NaiveParams,
  x: Float64Array,
  t: ArrayLike<number>,
  y: ArrayLike<number>,
  posEmbed?: Float64Array,
): Float64Array {
  const { inputSize: H, patchSize: P, inChannels: C, hiddenSize: D, numHeads: heads } = cfg;
  const G = H / P;
  const L = G * G;
  const Cout = cfg.learnSigma ? 2 * C : C;
  const M = Math.trunc(D * cfg.mlpRatio);
  const N = t.length;
  const pos = posEmbed ?? naivePosEmbed(D, G);
  const out = new Float64Array(N * Cout * H * H);

  for (let n = 0; n < N; n++) {
    // ---- patchify: Conv2d(C, D, kernel = stride = P), weight [D, C, P, P]
    const pw = param(p, 'x_embedder.proj.weight');
    const pb = param(p, 'x_embedder.proj.bias');
    const tok: Float64Array[] = [];
    for (let gy = 0; gy < G; gy++) {
      for (let gx = 0; gx < G; gx++) {
        const v = new Float64Array(D);
        for (let d = 0; d < D; d++) {
          let s = pb[d];
          for (let c = 0; c < C; c++)
            for (let i = 0; i < P; i++)
              for (let j = 0; j < P; j++)
                s += pw[((d * C + c) * P + i) * P + j] * x[((n * C + c) * H + gy * P + i) * H + gx * P + j];
          v[d] = s + pos[(gy * G + gx) * D + d];
        }
        tok.push(v);
      }
    }

    // ---- conditioning c = t_emb + y_emb
    let temb = linear(timestepFrequencies(t[n]), param(p, 't_embedder.mlp.0.weight'), param(p, 't_embedder.mlp.0.bias'), 256, D);
    temb = temb.map(silu);
    const cvec = linear(temb, param(p, 't_embedder.mlp.2.weight'), param(p, 't_embedder.mlp.2.bias'), D, D);
    if (cfg.numClasses > 0) {
      const table = param(p, 'y_embedder.embedding_table.weight');
      for (let d = 0; d < D; d++) cvec[d] += table[y[n] * D + d];
    }
    const siluC = cvec.map(silu);

    // ---- blocks
    for (let b = 0; b < cfg.depth; b++) {
      const pre = `blocks.${b}.`;
      const mod = linear(siluC, param(p, pre + 'adaLN_modulation.1.weight'), param(p, pre + 'adaLN_modulation.1.bias'), D, 6 * D);
      const chunk = (k: number) => mod.subarray(k * D, (k + 1) * D);
      const [shift1, scale1, gate1, shift2, scale2, gate2] = [0, 1, 2, 3, 4, 5].map(chunk);
      const modulate = (v: Float64Array, shift: Float64Array, scale: Float64Array) => {
        const ln = layerNorm(v);
        return ln.map((u, d) => u * (1 + scale[d]) + shift[d]);
      };
      // attention branch
      const qkv = tok.map((v) => linear(modulate(v, shift1, scale1), param(p, pre + 'attn.qkv.weight'), param(p, pre + 'attn.qkv.bias'), D, 3 * D));
      const att = attention(qkv, L, D, heads);
      for (let l = 0; l < L; l++) {
        const o = linear(att[l], param(p, pre + 'attn.proj.weight'), param(p, pre + 'attn.proj.bias'), D, D);
        for (let d = 0; d < D; d++) tok[l][d] += gate1[d] * o[d];
      }
      // MLP branch
      for (let l = 0; l < L; l++) {
        const h = linear(modulate(tok[l], shift2, scale2), param(p, pre + 'mlp.fc1.weight'), param(p, pre + 'mlp.fc1.bias'), D, M).map(geluTanh);
        const o = linear(h, param(p, pre + 'mlp.fc2.weight'), param(p, pre + 'mlp.fc2.bias'), M, D);
        for (let d = 0; d < D; d++) tok[l][d] += gate2[d] * o[d];
      }
    }

    // ---- final layer: shift, scale = Linear(SiLU(c)); LN; modulate; Linear(D, P*P*Cout)
    const fmod = linear(siluC, param(p, 'final_layer.adaLN_modulation.1.weight'), param(p, 'final_layer.adaLN_modulation.1.bias'), D, 2 * D);
    const K = P * P * Cout;
    for (let gy = 0; gy < G; gy++) {
      for (let gx = 0; gx < G; gx++) {
        const l = gy * G + gx;
        const ln = layerNorm(tok[l]).map((u, d) => u * (1 + fmod[D + d]) + fmod[d]);
        const o = linear(ln, param(p, 'final_layer.linear.weight'), param(p, 'final_layer.linear.bias'), D, K);
        // ---- unpatchify: each token's output is [P][P][Cout]
        for (let i = 0; i < P; i++)
          for (let j = 0; j < P; j++)
            for (let c = 0; c < Cout; c++)
              out[((n * Cout + c) * H + gy * P + i) * H + gx * P + j] = o[(i * P + j) * Cout + c];
      }
    }
  }
  return out;
}

/** Deterministic uniform numbers in [0, 1) (mulberry32), for test data. */
export function seededUniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let r = Math.imul(a ^ (a >>> 15), 1 | a);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}
