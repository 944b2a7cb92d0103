// A random-weight VAE of any AutoencoderKL config written as a safetensors file
// in either naming (diffusers or original LDM), for tests that need a real VAE
// file without downloading one. The parameter list is written here from the
// published architecture (diffusers' AutoencoderKL), independently of the
// native model, so loading it also checks the native names and shapes.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { encodeSafetensors, type SafeDtype, type SafeTensor } from '../../src/io/safetensors.js';
import { Rng } from '../../src/rng.js';
import type { VaeConfig } from '../../src/vae/index.js';

export const TINY_VAE_CONFIG: VaeConfig = {
  inChannels: 3,
  outChannels: 3,
  latentChannels: 4,
  blockOutChannels: [8, 16],
  layersPerBlock: 1,
  normNumGroups: 4,
};

export interface TinyVaeOptions {
  naming: 'diffusers' | 'ldm';
  seed: number;
  dtype?: 'F32' | 'F16' | 'BF16';
  config?: Partial<VaeConfig>;
  /** diffusers' older attention names query/key/value/proj_attn (default false: to_q/to_k/to_v/to_out.0) */
  legacyAttention?: boolean;
  /** put the VAE under first_stage_model. beside a few UNet-like tensors (an SD checkpoint) */
  fullCheckpoint?: boolean;
  /** write a diffusers config.json beside the file (default true) */
  configJson?: boolean;
  /** file name (default diffusion_pytorch_model.safetensors / vae.safetensors) */
  fileName?: string;
}

/** Canonical (diffusers) names and shapes of AutoencoderKL, in state_dict order. */
export function vaeParamShapes(c: VaeConfig): [string, number[]][] {
  const out: [string, number[]][] = [];
  const conv = (p: string, ci: number, co: number, k: number): void => {
    out.push([`${p}.weight`, [co, ci, k, k]], [`${p}.bias`, [co]]);
  };
  const norm = (p: string, ch: number): void => {
    out.push([`${p}.weight`, [ch]], [`${p}.bias`, [ch]]);
  };
  const res = (p: string, ci: number, co: number): void => {
    norm(`${p}.norm1`, ci);
    conv(`${p}.conv1`, ci, co, 3);
    norm(`${p}.norm2`, co);
    conv(`${p}.conv2`, co, co, 3);
    if (ci !== co) conv(`${p}.conv_shortcut`, ci, co, 1);
  };
  const mid = (p: string, ch: number): void => {
    res(`${p}.resnets.0`, ch, ch);
    norm(`${p}.attentions.0.group_norm`, ch);
    for (const k of ['to_q', 'to_k', 'to_v', 'to_out.0']) out.push([`${p}.attentions.0.${k}.weight`, [ch, ch]], [`${p}.attentions.0.${k}.bias`, [ch]]);
    res(`${p}.resnets.1`, ch, ch);
  };
  const b = c.blockOutChannels;
  const L = b.length;
  conv('encoder.conv_in', c.inChannels, b[0]!, 3);
  let ch = b[0]!;
  for (let i = 0; i < L; i++) {
    for (let j = 0; j < c.layersPerBlock; j++) {
      res(`encoder.down_blocks.${i}.resnets.${j}`, ch, b[i]!);
      ch = b[i]!;
    }
    if (i < L - 1) conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, ch, ch, 3);
  }
  mid('encoder.mid_block', ch);
  norm('encoder.conv_norm_out', ch);
  conv('encoder.conv_out', ch, 2 * c.latentChannels, 3);
  conv('decoder.conv_in', c.latentChannels, b[L - 1]!, 3);
  ch = b[L - 1]!;
  mid('decoder.mid_block', ch);
  for (let i = 0; i < L; i++) {
    const co = b[L - 1 - i]!;
    for (let j = 0; j <= c.layersPerBlock; j++) {
      res(`decoder.up_blocks.${i}.resnets.${j}`, ch, co);
      ch = co;
    }
    if (i < L - 1) conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, ch, ch, 3);
  }
  norm('decoder.conv_norm_out', ch);
  conv('decoder.conv_out', ch, c.outChannels, 3);
  conv('quant_conv', 2 * c.latentChannels, 2 * c.latentChannels, 1);
  conv('post_quant_conv', c.latentChannels, c.latentChannels, 1);
  return out;
}

const LDM_ATTN: Record<string, string> = { group_norm: 'norm', to_q: 'q', to_k: 'k', to_v: 'v', 'to_out.0': 'proj_out' };
const OLD_ATTN: Record<string, string> = { to_q: 'query', to_k: 'key', to_v: 'value', 'to_out.0': 'proj_attn' };

/** A canonical name in LDM's naming (levels = number of resolution levels). */
export function toLdmName(name: string, levels: number): string {
  let m: RegExpExecArray | null;
  const rp = (s: string): string => s.replace(/^conv_shortcut\./, 'nin_shortcut.');
  if ((m = /^(encoder|decoder)\.conv_norm_out\.(.+)$/.exec(name))) return `${m[1]}.norm_out.${m[2]}`;
  if ((m = /^(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)$/.exec(name))) return `${m[1]}.mid.block_${Number(m[2]) + 1}.${rp(m[3]!)}`;
  if ((m = /^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/.exec(name))) {
    return `${m[1]}.mid.attn_1.${LDM_ATTN[m[2]!]}.${m[3]}`;
  }
  if ((m = /^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/.exec(name))) return `encoder.down.${m[1]}.block.${m[2]}.${rp(m[3]!)}`;
  if ((m = /^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$/.exec(name))) return `encoder.down.${m[1]}.downsample.conv.${m[2]}`;
  if ((m = /^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$/.exec(name))) return `decoder.up.${levels - 1 - Number(m[1])}.block.${m[2]}.${rp(m[3]!)}`;
  if ((m = /^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$/.exec(name))) return `decoder.up.${levels - 1 - Number(m[1])}.upsample.conv.${m[2]}`;
  return name;
}

/** The random float32 values of parameter `name` (shape `shape`) for `seed`: the same in every naming and dtype. */
export function tinyVaeValues(seed: number, name: string, shape: number[]): Float32Array {
  let h = seed >>> 0;
  for (let i = 0; i < name.length; i++) h = (Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0);
  const r = new Rng(h);
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  const isNormW = /norm[^.]*\.weight$/.test(name) || /group_norm\.weight$/.test(name);
  const fanIn = shape.length > 1 ? n / shape[0]! : 1;
  for (let i = 0; i < n; i++) {
    const u = 2 * r.uniform() - 1;
    v[i] = isNormW ? 1 + 0.2 * u : shape.length === 1 ? 0.1 * u : u * Math.sqrt(3 / fanIn);
  }
  return v;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** float32 -> IEEE half bits, round to nearest even (finite, normal-range inputs as in weights). */
export function floatToHalfBits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const e = ((b >>> 23) & 0xff) - 127 + 15;
  let m = b & 0x7fffff;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    m |= 0x800000;
    const shift = 14 - e;
    let hm = m >>> shift;
    const rem = m & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rem > half || (rem === half && hm & 1)) hm++;
    return sign | hm;
  }
  let hm = m >>> 13;
  const rem = m & 0x1fff;
  let he = e;
  if (rem > 0x1000 || (rem === 0x1000 && hm & 1)) {
    hm++;
    if (hm === 0x400) {
      hm = 0;
      he++;
      if (he >= 31) return sign | 0x7c00;
    }
  }
  return sign | (he << 10) | hm;
}
/** float32 -> bf16 bits, round to nearest even. */
export function floatToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}
function encodeAs(v: Float32Array, dtype: SafeDtype): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(v.buffer.slice(0));
  const out = new Uint8Array(v.length * 2);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < v.length; i++) dv.setUint16(2 * i, dtype === 'F16' ? floatToHalfBits(v[i]!) : floatToBf16Bits(v[i]!), true);
  return out;
}

/** Writes the file (and config.json) into dir; returns the weight file's path. */
export function writeTinyVae(dir: string, opts: TinyVaeOptions): string {
  const c: VaeConfig = { ...TINY_VAE_CONFIG, ...(opts.config ?? {}) };
  const dtype = opts.dtype ?? 'F32';
  mkdirSync(dir, { recursive: true });
  const L = c.blockOutChannels.length;
  const tensors: [string, SafeTensor][] = [];
  const prefix = opts.fullCheckpoint ? 'first_stage_model.' : '';
  for (const [name, shape] of vaeParamShapes(c)) {
    const values = tinyVaeValues(opts.seed, name, shape);
    let key = name;
    let sh = shape;
    if (opts.naming === 'ldm') {
      key = toLdmName(name, L);
      if (/\.attn_1\.(q|k|v|proj_out)\.weight$/.test(key)) sh = [...shape, 1, 1];
    } else if (opts.legacyAttention) {
      key = name.replace(/attentions\.0\.(to_q|to_k|to_v|to_out\.0)\./, (_, k: string) => `attentions.0.${OLD_ATTN[k]}.`);
    }
    tensors.push([prefix + key, { dtype, shape: sh, bytes: encodeAs(values, dtype) }]);
  }
  if (opts.fullCheckpoint) {
    const junk = new Float32Array([1, 2, 3, 4]);
    tensors.push(['model.diffusion_model.input_blocks.0.0.weight', { dtype: 'F32', shape: [4], bytes: new Uint8Array(junk.buffer) }]);
    tensors.push(['cond_stage_model.transformer.text_model.embeddings.position_ids', { dtype: 'F32', shape: [2, 2], bytes: new Uint8Array(junk.buffer.slice(0)) }]);
  }
  const file = join(dir, opts.fileName ?? (opts.naming === 'diffusers' ? 'diffusion_pytorch_model.safetensors' : 'vae.safetensors'));
  writeFileSync(file, Buffer.concat(encodeSafetensors(tensors)));
  if (opts.configJson ?? true) {
    const cfg = {
      _class_name: 'AutoencoderKL',
      in_channels: c.inChannels,
      out_channels: c.outChannels,
      latent_channels: c.latentChannels,
      block_out_channels: c.blockOutChannels,
      layers_per_block: c.layersPerBlock,
      norm_num_groups: c.normNumGroups,
      act_fn: 'silu',
      down_block_types: Array(L).fill('DownEncoderBlock2D'),
      up_block_types: Array(L).fill('UpDecoderBlock2D'),
      scaling_factor: 0.18215,
    };
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg, null, 2));
  }
  return file;
}
