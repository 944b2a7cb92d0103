// Reading a VAE weight file: safetensors only (a pickle can run code), in any
// of the namings users have, mapped onto the canonical (diffusers) names the
// native VAE uses (native/include/speed/vae.h):
//   - diffusers AutoencoderKL: encoder.down_blocks.0.resnets.0.conv1.weight, ...;
//     attention as Linear [C, C] named to_q/to_k/to_v/to_out.0 (newer) or
//     query/key/value/proj_attn (older); config.json beside the file (optional).
//   - original LDM / CompVis: encoder.down.0.block.0.conv1.weight, nin_shortcut,
//     mid.block_1, mid.attn_1.{norm,q,k,v,proj_out} (1x1 conv [C, C, 1, 1]),
//     norm_out, decoder.up.{level}.block / upsample (levels counted from the
//     top resolution, so diffusers' up_blocks.i is LDM's up.(L-1-i));
//     also inside a full SD checkpoint under first_stage_model.
// The config (block_out_channels, ...) comes from a diffusers config.json beside
// the file when present (whatever the naming), else it is inferred from the
// tensor shapes; what was inferred is reported.
import { existsSync, openSync, readdirSync, readFileSync, readSync, closeSync, statSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';

import { CheckpointError } from '../errors.js';
import { asFloat32, withSafetensors, type SafetensorsReader } from '../io/safetensors.js';

export interface VaeConfig {
  inChannels: number;
  outChannels: number;
  latentChannels: number;
  blockOutChannels: number[];
  layersPerBlock: number;
  normNumGroups: number;
}

export type VaeNaming = 'diffusers' | 'ldm';

export interface VaeWeights {
  file: string;
  naming: VaeNaming;
  /** true when the tensors came from a full SD checkpoint (first_stage_model.*) */
  fromFullCheckpoint: boolean;
  config: VaeConfig;
  /** diffusers' scaling_factor from config.json, when given (SD: 0.18215) */
  scalingFactor?: number;
  /** canonical name -> tensor (attention weights already [C, C]) */
  tensors: Map<string, { shape: number[]; data: Float32Array; source: string }>;
  /** human-readable notes: which naming, which config keys were inferred */
  notes: string[];
}

/** Where SD's VAE comes from, for the message when vae.path names no file. */
export const VAE_SOURCE = 'the SD VAE is diffusion_pytorch_model.safetensors (with its config.json) of the Hugging Face repository stabilityai/sd-vae-ft-ema: ' +
  '`huggingface-cli download stabilityai/sd-vae-ft-ema diffusion_pytorch_model.safetensors config.json --local-dir data/sd-vae-ft-ema`, ' +
  'then vae.path: data/sd-vae-ft-ema (see docs/latent.md)';

const PICKLE_EXT = new Set(['.ckpt', '.pt', '.pth', '.bin', '.pkl']);

function convertHint(file: string): string {
  const out = file.replace(/\.[^./]+$/, '') + '.safetensors';
  return (
    `convert it to safetensors first: \`speed-train convert ${file} ${out}\` (runs no code from the file), then point vae.path at ${out}; or in Python (on a machine where you trust the file): ` +
    `python3 -c "import torch, safetensors.torch as st; sd = torch.load('${file}', map_location='cpu', weights_only=True); ` +
    `sd = sd.get('state_dict', sd); st.save_file({k: v.contiguous() for k, v in sd.items() if hasattr(v, 'contiguous')}, '${out}')"`
  );
}

/** diffusers' weight file names in a model folder (`vae/` of a pipeline, or `sd-vae-ft-ema/`), preferred first. */
const DIFFUSERS_FILES = ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors'];

/**
 * A folder (what diffusers' `from_pretrained` takes) stands for the weight file in
 * it: diffusers' name, else its only .safetensors file; anything else is an error
 * listing what the folder holds.
 */
export function resolveVaeFile(path: string): string {
  let dir = false;
  try {
    dir = statSync(path).isDirectory();
  } catch {
    return path; // missing: refusePickle names it
  }
  if (!dir) return path;
  for (const name of DIFFUSERS_FILES) if (existsSync(join(path, name))) return join(path, name);
  const st = readdirSync(path).filter((n) => n.toLowerCase().endsWith('.safetensors')).sort();
  if (st.length === 1) return join(path, st[0]);
  throw new CheckpointError(
    path,
    st.length === 0
      ? `is a folder without a .safetensors file (expected ${DIFFUSERS_FILES[0]}, diffusers' name); point vae.path at the weight file`
      : `is a folder with ${st.length} .safetensors files (${st.slice(0, 4).join(', ')}${st.length > 4 ? ', ...' : ''}) and none named ${DIFFUSERS_FILES[0]}; point vae.path at one of them`,
  );
}

/** Refuses pickles (by extension or by content) with a message saying how to convert. */
function refusePickle(file: string): void {
  const ext = extname(file).toLowerCase();
  if (PICKLE_EXT.has(ext)) {
    throw new CheckpointError(file, `is a PyTorch pickle (${ext}); speed-train reads only safetensors, because loading a pickle can run arbitrary code: ${convertHint(file)}`);
  }
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CheckpointError(file, `cannot open the VAE weight file (${code ?? (e as Error).message})` + (code === 'ENOENT' ? `; ${VAE_SOURCE}` : ''));
  }
  const head = Buffer.alloc(4);
  let got = 0;
  try {
    got = readSync(fd, head, 0, 4, 0);
  } finally {
    closeSync(fd);
  }
  const zip = got >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
  const pickle = got >= 2 && head[0] === 0x80 && head[1] >= 2 && head[1] <= 5;
  if (zip || pickle) {
    throw new CheckpointError(file, `is a PyTorch pickle (${zip ? 'zip archive' : 'pickle protocol'} signature), not safetensors; loading a pickle can run arbitrary code: ${convertHint(file)}`);
  }
}

const ATTN_DIFFUSERS_OLD: Record<string, string> = { query: 'to_q', key: 'to_k', value: 'to_v', proj_attn: 'to_out.0' };
const ATTN_LDM: Record<string, string> = { norm: 'group_norm', q: 'to_q', k: 'to_k', v: 'to_v', proj_out: 'to_out.0' };

/** Keys of a VAE-only LDM file that are not part of the model (its training losses). */
const isLdmTrainingKey = (k: string): boolean => k.startsWith('loss.');

function mapDiffusers(k: string): string {
  const m = /^(encoder|decoder)\.mid_block\.attentions\.0\.(query|key|value|proj_attn)\.(weight|bias)$/.exec(k);
  if (m) return `${m[1]}.mid_block.attentions.0.${ATTN_DIFFUSERS_OLD[m[2]!]}.${m[3]}`;
  return k;
}

function mapLdm(k: string, levels: number): string | undefined {
  let m: RegExpExecArray | null;
  if ((m = /^(encoder|decoder)\.norm_out\.(weight|bias)$/.exec(k))) return `${m[1]}.conv_norm_out.${m[2]}`;
  if ((m = /^(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)$/.exec(k))) return k;
  if ((m = /^(quant_conv|post_quant_conv)\.(weight|bias)$/.exec(k))) return k;
  if ((m = /^(encoder|decoder)\.mid\.block_([12])\.(.+)$/.exec(k))) return `${m[1]}.mid_block.resnets.${Number(m[2]) - 1}.${resnetPart(m[3]!)}`;
  if ((m = /^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$/.exec(k))) {
    return `${m[1]}.mid_block.attentions.0.${ATTN_LDM[m[2]!]}.${m[3]}`;
  }
  if ((m = /^encoder\.down\.(\d+)\.block\.(\d+)\.(.+)$/.exec(k))) return `encoder.down_blocks.${m[1]}.resnets.${m[2]}.${resnetPart(m[3]!)}`;
  if ((m = /^encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)$/.exec(k))) return `encoder.down_blocks.${m[1]}.downsamplers.0.conv.${m[2]}`;
  if ((m = /^decoder\.up\.(\d+)\.block\.(\d+)\.(.+)$/.exec(k))) {
    return `decoder.up_blocks.${levels - 1 - Number(m[1])}.resnets.${m[2]}.${resnetPart(m[3]!)}`;
  }
  if ((m = /^decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)$/.exec(k))) {
    return `decoder.up_blocks.${levels - 1 - Number(m[1])}.upsamplers.0.conv.${m[2]}`;
  }
  return undefined;
}
const resnetPart = (p: string): string => p.replace(/^nin_shortcut\./, 'conv_shortcut.');

const levelsOf = (keys: string[], re: RegExp): number => {
  let n = 0;
  for (const k of keys) {
    const m = re.exec(k);
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
};

interface DiffusersJson {
  config: Partial<VaeConfig>;
  scalingFactor?: number;
}

/** Reads and checks diffusers' config.json (the AutoencoderKL keys we use; the rest must not change the architecture). */
export function readDiffusersConfig(file: string): DiffusersJson {
  let j: unknown;
  try {
    j = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new CheckpointError(file, `cannot read the VAE's config.json (${(e as Error).message})`);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new CheckpointError(file, 'config.json is not a JSON object');
  const o = j as Record<string, unknown>;
  if (o._class_name !== undefined && o._class_name !== 'AutoencoderKL') {
    throw new CheckpointError(file, `_class_name is ${JSON.stringify(o._class_name)}, expected "AutoencoderKL" (SD's VAE)`);
  }
  const int = (key: string, lo: number, hi: number): number | undefined => {
    const v = o[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
      throw new CheckpointError(file, `${key} must be an integer in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const cfg: Partial<VaeConfig> = {};
  const set = <K extends keyof VaeConfig>(k: K, v: VaeConfig[K] | undefined): void => {
    if (v !== undefined) cfg[k] = v;
  };
  set('inChannels', int('in_channels', 1, 64));
  set('outChannels', int('out_channels', 1, 64));
  set('latentChannels', int('latent_channels', 1, 256));
  set('layersPerBlock', int('layers_per_block', 1, 16));
  set('normNumGroups', int('norm_num_groups', 1, 1024));
  if (o.block_out_channels !== undefined) {
    const b = o.block_out_channels;
    if (!Array.isArray(b) || b.length < 1 || b.length > 8 || !b.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 1 && x <= 8192)) {
      throw new CheckpointError(file, `block_out_channels must be a list of 1 to 8 positive integers, got ${JSON.stringify(b)}`);
    }
    cfg.blockOutChannels = b as number[];
  }
  if (o.act_fn !== undefined && o.act_fn !== 'silu') throw new CheckpointError(file, `act_fn is ${JSON.stringify(o.act_fn)}; only "silu" (SD's VAE) is supported`);
  for (const key of ['use_quant_conv', 'use_post_quant_conv', 'mid_block_add_attention']) {
    if (o[key] === false) throw new CheckpointError(file, `${key} is false; only SD's AutoencoderKL layout (with it) is supported`);
  }
  const types = (key: string, want: string): void => {
    const v = o[key];
    if (v !== undefined && (!Array.isArray(v) || v.some((t) => t !== want))) {
      throw new CheckpointError(file, `${key} must all be "${want}" (SD's VAE), got ${JSON.stringify(v)}`);
    }
  };
  types('down_block_types', 'DownEncoderBlock2D');
  types('up_block_types', 'UpDecoderBlock2D');
  let scalingFactor: number | undefined;
  if (o.scaling_factor !== undefined) {
    if (typeof o.scaling_factor !== 'number' || !(o.scaling_factor > 0) || !Number.isFinite(o.scaling_factor)) {
      throw new CheckpointError(file, `scaling_factor must be a positive number, got ${JSON.stringify(o.scaling_factor)}`);
    }
    scalingFactor = o.scaling_factor;
  }
  return { config: cfg, scalingFactor };
}

/** The keys of VaeConfig as diffusers' config.json spells them (for messages). */
export const VAE_CONFIG_KEYS: Record<keyof VaeConfig, string> = {
  inChannels: 'in_channels', outChannels: 'out_channels', latentChannels: 'latent_channels',
  blockOutChannels: 'block_out_channels', layersPerBlock: 'layers_per_block', normNumGroups: 'norm_num_groups',
};

/** A VaeConfig in config.json's spelling, for messages. */
export const vaeConfigJson = (c: VaeConfig): string =>
  JSON.stringify(Object.fromEntries((Object.keys(VAE_CONFIG_KEYS) as (keyof VaeConfig)[]).map((k) => [VAE_CONFIG_KEYS[k], c[k]])));

/** The native VAE's limits (native/src/core/vae.cpp VAEConfig::validate), checked where the file is known. */
export function checkVaeConfig(c: VaeConfig, fail: (key: keyof VaeConfig, msg: string) => never): void {
  const range = (k: keyof VaeConfig, lo: number, hi: number) => {
    const v = c[k] as number;
    if (!Number.isInteger(v) || v < lo || v > hi) fail(k, `must be an integer in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  };
  range('inChannels', 1, 64);
  range('outChannels', 1, 64);
  range('latentChannels', 1, 256);
  range('layersPerBlock', 1, 16);
  range('normNumGroups', 1, 1024);
  const b = c.blockOutChannels;
  if (b.length < 1 || b.length > 8) fail('blockOutChannels', `must list 1 to 8 levels, got ${b.length}`);
  b.forEach((v, i) => {
    if (!Number.isInteger(v) || v < 1 || v > 8192) fail('blockOutChannels', `element ${i}: must be an integer in [1, 8192], got ${JSON.stringify(v)}`);
    if (v % c.normNumGroups !== 0) fail('normNumGroups', `${c.normNumGroups} does not divide block_out_channels[${i}] = ${v} (group norm splits the channels into equal groups)`);
  });
}

/**
 * The cheap checks of a VAE weight file (it exists, is no pickle, has a readable
 * safetensors header), for commands that would otherwise find a wrong vae.path
 * only after minutes of other work. Returns the weight file.
 */
export function checkVaeFile(path: string): string {
  const file = resolveVaeFile(path);
  refusePickle(file);
  withSafetensors(file, () => undefined);
  return file;
}

/**
 * Reads a VAE weight file into canonical names. Checks naming and consistency;
 * the per-tensor shape check against the architecture is done by the loader
 * (src/vae/index.ts) from the native model's own parameter list.
 */
export function readVaeWeights(path: string, override: Partial<VaeConfig> = {}, configFile?: string): VaeWeights {
  const file = resolveVaeFile(path);
  refusePickle(file);
  return withSafetensors(file, (r) => readVaeWeightsFrom(r, file, override, configFile));
}

// Names, shapes and dtypes come from the header; only the VAE's own tensors are
// read, one at a time (a full SD checkpoint holds ~4 GB of UNet and text encoder).
function readVaeWeightsFrom(r: SafetensorsReader, file: string, override: Partial<VaeConfig>, configFile: string | undefined): VaeWeights {
  const st = { tensors: new Map(r.entries.map((e) => [e.name, e])) };
  const notes: string[] = [];
  let keys = [...st.tensors.keys()];
  let fromFull = false;
  let prefix = '';
  if (keys.some((k) => k.startsWith('first_stage_model.'))) {
    fromFull = true;
    prefix = 'first_stage_model.';
    const others = keys.filter((k) => !k.startsWith(prefix)).length;
    keys = keys.filter((k) => k.startsWith(prefix));
    notes.push(`full checkpoint: using its ${keys.length} first_stage_model.* tensors, ignoring ${others} others (UNet, text encoder, ...)`);
  }
  const bare = keys.map((k) => k.slice(prefix.length));
  let naming: VaeNaming;
  if (bare.some((k) => k.startsWith('encoder.down_blocks.') || k.startsWith('decoder.up_blocks.'))) naming = 'diffusers';
  else if (bare.some((k) => k.startsWith('encoder.down.') || k.startsWith('decoder.up.'))) naming = 'ldm';
  else {
    throw new CheckpointError(
      file,
      `does not look like an SD VAE: no encoder.down_blocks.* (diffusers) or encoder.down.* (LDM) tensors among its ${st.tensors.size} tensors (first: ${[...st.tensors.keys()].slice(0, 5).join(', ')})`,
    );
  }
  const ldmLevels = naming === 'ldm' ? levelsOf(bare, /^decoder\.up\.(\d+)\./) : 0;
  const tensors: VaeWeights['tensors'] = new Map();
  const unknown: string[] = [];
  for (let i = 0; i < keys.length; i++) {
    const src = keys[i]!;
    const k = bare[i]!;
    if (!fromFull && naming === 'ldm' && isLdmTrainingKey(k)) continue;
    const canon = naming === 'diffusers' ? mapDiffusers(k) : mapLdm(k, ldmLevels);
    if (canon === undefined) {
      unknown.push(src);
      continue;
    }
    const t = r.read(src);
    let shape = t.shape;
    // Attention projections: LDM stores 1x1 convs [C, C, 1, 1], diffusers Linears [C, C]: same numbers.
    if (/\.mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$/.test(canon) && shape.length === 4 && shape[2] === 1 && shape[3] === 1) {
      shape = [shape[0]!, shape[1]!];
    }
    if (tensors.has(canon)) throw new CheckpointError(file, `tensors ${tensors.get(canon)!.source} and ${src} both map to ${canon}`);
    tensors.set(canon, { shape, data: asFloat32(t, file, src), source: src });
  }
  notes.unshift(`${naming} naming, ${tensors.size} tensors${st.tensors.size > 0 ? ` (${[...new Set([...st.tensors.values()].map((t) => t.dtype))].join('/')})` : ''}`);
  // LDM names we cannot map are errors here; diffusers names pass through and the
  // loader refuses any that the architecture does not have.
  if (unknown.length > 0) {
    throw new CheckpointError(file, `${unknown.length} tensor(s) are not part of an SD VAE (${naming} naming): ${unknown.slice(0, 10).join(', ')}${unknown.length > 10 ? ', ...' : ''}`);
  }

  // ---- config: override > config.json > shapes ------------------------------------
  const cfgPath = configFile ?? join(dirname(file), 'config.json');
  let fromJson: DiffusersJson = { config: {} };
  if (existsSync(cfgPath)) {
    fromJson = readDiffusersConfig(cfgPath);
    notes.push(`config from ${cfgPath}`);
  } else if (configFile !== undefined) {
    fromJson = readDiffusersConfig(configFile);
    notes.push(`config from ${configFile}`);
  }
  const shapeOf = (name: string): number[] => {
    const t = tensors.get(name);
    if (!t) throw new CheckpointError(file, `missing tensor ${name} (needed to infer the VAE's configuration)`);
    return t.shape;
  };
  const levels = levelsOf([...tensors.keys()], /^encoder\.down_blocks\.(\d+)\./);
  const inferred: VaeConfig = {
    inChannels: shapeOf('encoder.conv_in.weight')[1]!,
    outChannels: shapeOf('decoder.conv_out.weight')[0]!,
    latentChannels: shapeOf('post_quant_conv.weight')[0]!,
    blockOutChannels: Array.from({ length: levels }, (_, i) => shapeOf(`encoder.down_blocks.${i}.resnets.0.conv1.weight`)[0]!),
    layersPerBlock: levelsOf([...tensors.keys()], /^encoder\.down_blocks\.0\.resnets\.(\d+)\./),
    normNumGroups: 32,
  };
  const config: VaeConfig = { ...inferred };
  const inferredKeys: string[] = [];
  for (const k of Object.keys(inferred) as (keyof VaeConfig)[]) {
    const given = override[k] ?? fromJson.config[k];
    if (given === undefined) {
      inferredKeys.push(k === 'normNumGroups' ? 'norm_num_groups = 32 (assumed: not visible in the shapes)' : `${VAE_CONFIG_KEYS[k]} = ${JSON.stringify(inferred[k])}`);
      continue;
    }
    if (k !== 'normNumGroups' && JSON.stringify(given) !== JSON.stringify(inferred[k])) {
      if (override[k] !== undefined) throw new CheckpointError(file, `${VAE_CONFIG_KEYS[k]} is ${JSON.stringify(given)} in the options, but the tensor shapes say ${JSON.stringify(inferred[k])}`);
      throw new CheckpointError(cfgPath, `${VAE_CONFIG_KEYS[k]} is ${JSON.stringify(given)}, but the tensor shapes of ${file} say ${JSON.stringify(inferred[k])}`);
    }
    (config as unknown as Record<string, unknown>)[k] = given;
  }
  if (inferredKeys.length > 0) notes.push(`inferred from shapes: ${inferredKeys.join(', ')}`);
  if (override.normNumGroups === undefined && fromJson.config.normNumGroups === undefined) {
    const bad = config.blockOutChannels.find((c) => c % 32 !== 0);
    if (bad !== undefined) {
      throw new CheckpointError(
        file,
        `norm_num_groups cannot be inferred from the shapes and the default 32 does not divide block_out_channels ${JSON.stringify(config.blockOutChannels)}; put a diffusers config.json (with norm_num_groups) beside the file`,
      );
    }
  }
  // The native model checks these again, but under its own names and without a file:
  // here each problem names the file that gave the value and the key as config.json spells it.
  checkVaeConfig(config, (k, msg) => {
    if (override[k] === undefined && fromJson.config[k] !== undefined) throw new CheckpointError(cfgPath, `${VAE_CONFIG_KEYS[k]}: ${msg}`);
    throw new CheckpointError(file, `${VAE_CONFIG_KEYS[k]}: ${msg} (${override[k] !== undefined ? 'given in the options' : 'inferred from the tensor shapes'})`);
  });
  return { file, naming, fromFullCheckpoint: fromFull, config, scalingFactor: fromJson.scalingFactor, tensors, notes: [`${basename(file)}: ${notes.join('; ')}`] };
}
