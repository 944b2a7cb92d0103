// The configuration schema: every key speed-train understands, with its type,
// default, allowed range and a one-line doc. Hand-written (no schema library)
// so that error messages can name the file and key path and suggest a key.

import { SAMPLING_NAMES as SAMPLING, WEIGHTING_NAMES as WEIGHTING, type SpeedOptions } from '../speed/options.js';

export type Leaf =
  /** `follows`: unset, the key takes that key's value (so the defaults agree with each other) */
  | { kind: 'int'; default: number | null; min?: number; max?: number; nullable?: boolean; follows?: string; doc: string }
  | { kind: 'number'; default: number | null; min?: number; max?: number; exclusiveMin?: boolean; nullable?: boolean; doc: string }
  | { kind: 'bool'; default: boolean | null; nullable?: boolean; doc: string }
  | { kind: 'string'; default: string | null; nullable?: boolean; doc: string; pattern?: RegExp; patternDoc?: string }
  | { kind: 'enum'; default: string; values: readonly string[]; doc: string }
  | { kind: 'numbers'; default: number[]; length?: number; min?: number; max?: number; doc: string }
  | { kind: 'ints'; default: number[] | null; nullable?: boolean; min?: number; doc: string }
  /** a respacing spec like "250", "10,15,20" or "ddim50" (YAML may give a number) */
  | { kind: 'steps'; default: string; doc: string };

export interface Section {
  kind: 'section';
  doc: string;
  keys: Record<string, Node>;
}
export type Node = Leaf | Section;

const section = (doc: string, keys: Record<string, Node>): Section => ({ kind: 'section', doc, keys });

const SCHEDULES = ['linear', 'cosine', 'squaredcos_cap_v2', 'quad', 'const'] as const;

/** Keys shared by `sample:` and `inference:` (how images are generated). */
const generationKeys = (guidance: number): Record<string, Node> => ({
  ckpt: { kind: 'string', default: null, nullable: true, doc: 'checkpoint directory, a bare DiT weights file (.safetensors: architecture read off the shapes), or "latest" / null: the newest in experiment_dir/checkpoints' },
  sampler: { kind: 'enum', default: 'ddpm', values: ['ddpm', 'ddim'], doc: 'reverse process' },
  steps: { kind: 'steps', default: '250', doc: 'respacing: "250", "10,15,20" or "ddim50"' },
  eta: { kind: 'number', default: 0, min: 0, max: 1, doc: 'DDIM eta (0 = deterministic)' },
  guidance_scale: { kind: 'number', default: guidance, min: 0, doc: 'classifier-free guidance scale (1 = off)' },
  guidance_channels: { kind: 'enum', default: '3', values: ['3', 'all'], doc: 'eps channels the guidance applies to: 3 = DiT\'s forward_with_cfg (channels 0-2 guided, the rest keep the conditional prediction), all = every eps channel; the same for models of up to 3 channels (docs/compat.md)' },
  clip_denoised: { kind: 'bool', default: null, nullable: true, doc: 'clip x0_hat to [-1, 1] at every step (null: true for pixel models, false for latent models, as DiT samples latents)' },
  use_ema: { kind: 'bool', default: true, doc: 'sample from the EMA weights (false: the raw weights)' },
  batch_size: { kind: 'int', default: 32, min: 1, doc: 'images per forward batch (CFG doubles it)' },
  out: { kind: 'string', default: null, nullable: true, doc: 'output path (default: inside experiment_dir)' },
});

export const SCHEMA: Section = section('speed-train configuration', {
  experiment_dir: { kind: 'string', default: 'results/run', doc: 'folder of this run: config.yaml, metrics.jsonl, checkpoints/, samples' },
  seed: { kind: 'int', default: 0, min: 0, max: 2 ** 31 - 1, doc: 'seed of every random stream (model init, noise, time steps, data order)' },
  log_every: { kind: 'int', default: 100, min: 1, doc: 'steps between metrics.jsonl lines' },
  ckpt_every: { kind: 'int', default: 5000, min: 0, doc: 'steps between checkpoints (0: only at the end)' },
  ckpt_keep: { kind: 'int', default: 3, min: 0, doc: 'checkpoints kept: after each new one, all but the newest ckpt_keep are deleted, except the multiples of ckpt_keep_every and the one the run resumed from (0: keep all)' },
  ckpt_keep_every: { kind: 'int', default: 0, min: 0, doc: 'also keep every checkpoint whose step is a multiple of this, for a later look at training progress (0: none)' },
  max_training_steps: { kind: 'int', default: 0, min: 0, doc: 'optimizer steps to train (0: use epochs)' },
  epochs: { kind: 'int', default: 0, min: 0, doc: 'epochs to train when max_training_steps is 0' },
  device: { kind: 'enum', default: 'cpu', values: ['cpu', 'cuda'], doc: 'backend' },
  threads: { kind: 'int', default: 0, min: 0, max: 1024, doc: 'CPU threads (0: all cores)' },
  cuda_math: { kind: 'enum', default: 'bf16', values: ['bf16', 'tf32', 'fp32'], doc: 'CUDA matrix-product precision' },
  recompute_activations: { kind: 'bool', default: false, doc: 'activation checkpointing: keep only each block\'s input, re-run its forward in backward (same results, ~1/depth of the activation memory, ~1/3 more compute)' },
  resume_training: { kind: 'string', default: null, nullable: true, doc: 'checkpoint directory to continue from; "latest": the newest in experiment_dir (an error if there is none); "auto": the newest if any, else start fresh' },
  overwrite: { kind: 'bool', default: false, doc: 'a fresh run into an experiment_dir holding checkpoints first deletes them and the metrics (false: refuse)' },
  sample_at_end: { kind: 'bool', default: true, doc: 'write a sample grid (the sample: settings) when training ends' },
  max_consecutive_skips: { kind: 'int', default: 50, min: 0, doc: 'stop with an error after this many skipped steps in a row (non-finite loss, gradient or update; no checkpoint is written for that state); 0: never stop. A run whose every step was skipped fails too' },
  tensorboard: { kind: 'bool', default: true, doc: 'write TensorBoard event files (scalars, t histogram, loss per time-step bucket, sample grids) into experiment_dir' },
  model: section('DiT network', {
    name: {
      kind: 'string', default: 'DiT-S/2', doc: 'preset DiT-{Ti,S,B,L,XL}/{2,4,8}',
      pattern: /^DiT-(Ti|S|B|L|XL)\/(2|4|8)$/, patternDoc: 'DiT-{Ti,S,B,L,XL}/{2,4,8}, e.g. DiT-S/2',
    },
    input_size: { kind: 'int', default: 32, follows: 'data.image_size', min: 1, doc: 'H = W of the model input (image size, or latent size)' },
    in_channels: { kind: 'int', default: 3, follows: 'data.channels', min: 1, doc: 'input channels (3 for RGB, 4 for SD-VAE latents)' },
    num_classes: { kind: 'int', default: 10, follows: 'data.num_classes', min: 0, doc: 'class count (0: unconditional)' },
    class_dropout_prob: { kind: 'number', default: 0.1, min: 0, max: 1, doc: 'label dropout for classifier-free guidance' },
    learn_sigma: { kind: 'bool', default: true, doc: 'predict the variance too (IDDPM hybrid loss)' },
    depth: { kind: 'int', default: null, nullable: true, min: 1, doc: 'override the preset depth (tiny test models)' },
    hidden_size: { kind: 'int', default: null, nullable: true, min: 1, doc: 'override the preset width' },
    num_heads: { kind: 'int', default: null, nullable: true, min: 1, doc: 'override the preset head count' },
    mlp_ratio: { kind: 'number', default: 4, min: 0, exclusiveMin: true, doc: 'MLP width / hidden size' },
    init_from: { kind: 'string', default: null, nullable: true, doc: 'start training from these weights (a DiT weights .safetensors or a checkpoint directory; fresh optimizer); must match the model' },
  }),
  diffusion: section('forward process, SpeeD time-step sampling and loss weighting', {
    schedule: { kind: 'enum', default: 'linear', values: SCHEDULES, doc: 'noise schedule' },
    diffusion_steps: { kind: 'int', default: 1000, min: 2, max: 100000, doc: 'T' },
    sampling: { kind: 'enum', default: 'uniform', values: SAMPLING, doc: 'time-step sampler' },
    weighting: { kind: 'enum', default: 'none', values: WEIGHTING, doc: 'per-time-step loss weights' },
    k: { kind: 'number', default: 5, min: 0, exclusiveMin: true, doc: 'SpeeD: probability ratio below tau' },
    tau: { kind: 'int', default: null, nullable: true, min: 1, doc: 'SpeeD: threshold time step (null: round(0.7 T), 700 for T = 1000)' },
    lam: { kind: 'number', default: 0.6, min: 0.5, max: 1, doc: 'SpeeD: weights lie in [1 - lam, lam]' },
    p2_k: { kind: 'number', default: 1, min: 0, doc: 'P2 weighting k' },
    p2_gamma: { kind: 'number', default: 1, min: 0, doc: 'P2 weighting gamma' },
    min_snr_gamma: { kind: 'number', default: 5, min: 0, exclusiveMin: true, doc: 'Min-SNR gamma' },
    lognorm_mean: { kind: 'number', default: 0, doc: 'logit-normal sampler mean' },
    lognorm_std: { kind: 'number', default: 1, min: 0, exclusiveMin: true, doc: 'logit-normal sampler std' },
    clts_mu: { kind: 'number', default: 0.5, min: 0, max: 1, doc: 'CLTS: mean of the Gaussian part (fraction of T)' },
    clts_sigma: { kind: 'number', default: 0.2, min: 0, exclusiveMin: true, doc: 'CLTS: std of the Gaussian part (fraction of T)' },
    clts_target_steps: { kind: 'int', default: 100000, min: 0, doc: 'CLTS: steps until the curriculum is complete' },
    rescale_learned_sigmas: { kind: 'bool', default: false, doc: 'multiply vb by T/1000 (IDDPM RESCALED_MSE)' },
  }),
  optimizer: section('optimizer', {
    name: { kind: 'enum', default: 'adamw', values: ['adamw'], doc: 'optimizer' },
    lr: { kind: 'number', default: 1e-4, min: 0, exclusiveMin: true, max: 1, doc: 'learning rate, at most 1: an AdamW step moves each weight by about lr, and weights start at ~0.02-0.1 (DiT trains at 1e-4); far larger values only overflow into Inf/NaN (skipped steps)' },
    betas: { kind: 'numbers', default: [0.9, 0.999], length: 2, min: 0, max: 1, doc: 'Adam betas [beta1, beta2], each in [0, 1) (1 would divide by zero in the bias correction)' },
    eps: { kind: 'number', default: 1e-8, min: 0, exclusiveMin: true, doc: 'Adam epsilon' },
    weight_decay: { kind: 'number', default: 0, min: 0, max: 1, doc: 'decoupled weight decay, at most 1: each step scales the weights by 1 - lr * weight_decay, which must stay in [0, 1)' },
    max_grad_norm: { kind: 'number', default: 0, min: 0, doc: 'global grad-norm clip (0: off)' },
    warmup_steps: { kind: 'int', default: 0, min: 0, doc: 'linear LR warm-up steps' },
  }),
  ema: section('exponential moving average of the weights', {
    decay: { kind: 'number', default: 0.9999, min: 0, max: 1, doc: 'EMA decay per step' },
  }),
  data: section('training data', {
    name: { kind: 'enum', default: 'synthetic', values: ['synthetic', 'image_folder', 'latents', 'scenes', 'digits', 'fashion_mnist'], doc: 'dataset kind (scenes: generated multi-object scenes; digits: scikit-learn 8x8 digits; fashion_mnist: Zalando\'s Fashion-MNIST training split, from Debian\'s dataset-fashion-mnist)' },
    data_seed: { kind: 'int', default: null, nullable: true, min: 0, max: 2 ** 31 - 1, doc: 'synthetic/scenes: seed of the generated images (null: seed); fixes the data while seed varies' },
    root: { kind: 'string', default: null, nullable: true, doc: 'image_folder: folder of images (class subfolders or flat); latents: a shard folder (manifest.json, from speed-train encode), fast-DiT features (<name>_features/ + <name>_labels/), or a [N,C,H,W] float32 .npy; digits: the CSV (null: the committed copy); fashion_mnist: the folder of the IDX files (null: /usr/share/datasets/fashion-mnist)' },
    labels: { kind: 'string', default: null, nullable: true, doc: 'latents: labels .npy [N] (default: <root without .npy>_labels.npy)' },
    batch_size: { kind: 'int', default: 256, min: 1, doc: 'global batch size' },
    image_size: { kind: 'int', default: 32, min: 1, doc: 'image side after centre crop and resize' },
    channels: { kind: 'int', default: 3, min: 1, doc: 'channels of the data (3 for RGB images)' },
    num_classes: { kind: 'int', default: 10, min: 0, doc: 'labels must lie in [0, num_classes)' },
    num_samples: { kind: 'int', default: 10000, min: 1, doc: 'synthetic: images per epoch' },
    random_flip: { kind: 'bool', default: true, doc: 'random horizontal flip' },
    center_crop: { kind: 'bool', default: true, doc: 'image_folder: centre-crop and resize (false: every image must be image_size square)' },
    skip_bad_files: { kind: 'bool', default: false, doc: 'warn and skip unreadable files instead of failing' },
    max_image_pixels: { kind: 'int', default: 40000000, min: 1, doc: 'images (JPEG/PNG/WebP) claiming more pixels (width x height, read from the header before decoding) are bad files' },
    max_image_bytes: { kind: 'int', default: 67108864, min: 1, doc: 'image files larger than this many bytes are bad files' },
    fashion_mnist_fit: { kind: 'enum', default: 'pad', values: ['pad', 'resize'], doc: 'fashion_mnist: how the 28x28 images become image_size (pad: background around them, image_size 28 + an even number, e.g. 32; resize: bilinear)' },
    latent_scale: { kind: 'number', default: 1, min: 0, exclusiveMin: true, doc: 'a latents .npy is multiplied by this (unscaled SD-VAE latents: 0.18215); shard folders use their manifest\'s scale, fast-DiT features 1' },
  }),
  vae: section('the Stable Diffusion VAE (AutoencoderKL, kl-f8) of latent data: encode, and decoding samples to images', {
    path: { kind: 'string', default: null, nullable: true, doc: 'VAE weights (.safetensors, diffusers or original LDM naming; e.g. sd-vae-ft-ema diffusion_pytorch_model.safetensors, or the diffusers folder that holds it); null: latent samples are written as latents only' },
    scale_factor: { kind: 'number', default: 0.18215, min: 0, exclusiveMin: true, doc: 'the diffusion model sees VAE latents times this (SD: 0.18215); samples are divided by it before decoding; encode records it in manifest.json' },
    sample_posterior: { kind: 'bool', default: false, doc: 'encode: mean + std * eps (seeded Philox) instead of the posterior mean' },
    chunk: { kind: 'int', default: 8, min: 1, doc: 'images per VAE call in encode and when decoding samples (bounds the VAE activation memory)' },
  }),
  encode: section('speed-train encode: an image folder -> ADM centre crop -> VAE latents in shards + manifest.json', {
    images: { kind: 'string', default: null, nullable: true, doc: 'folder of JPEG/PNG/WebP images: one subfolder per class (labels = sorted names), or flat (unconditional)' },
    out: { kind: 'string', default: null, nullable: true, doc: 'folder for the shards and manifest.json (null: data.root)' },
    image_size: { kind: 'int', default: 256, min: 8, doc: 'side of the centre crop (DiT/ADM center_crop_arr); latents are image_size / 8 for SD' },
    flip: { kind: 'bool', default: false, doc: 'also encode the mirrored image (shard-*-flip.npy): data.random_flip then picks the real flipped latent' },
    shard_size: { kind: 'int', default: 4096, min: 1, doc: 'images per shard (the unit of resumption)' },
    workers: { kind: 'int', default: 0, min: 0, max: 256, doc: 'decode + crop worker threads (0: CPU cores - 1, at most 8)' },
  }),
  sample: section('-p sample: a PNG grid', {
    ...generationKeys(4.0),
    sample_classes: { kind: 'ints', default: null, nullable: true, min: 0, doc: 'classes of the grid rows (null: all)' },
    num_per_class: { kind: 'int', default: 8, min: 1, doc: 'images per class (grid columns)' },
  }),
  inference: section('-p inference: many samples as PNGs + samples.npz', {
    ...generationKeys(1.5),
    num_samples: { kind: 'int', default: 50000, min: 1, doc: 'images to generate' },
    per_proc_batch_size: { kind: 'int', default: 32, min: 1, doc: 'images per batch' },
    save_png: { kind: 'bool', default: true, doc: 'also write one PNG per image' },
    save_latents: { kind: 'bool', default: false, doc: 'latent models: also write latents.npy (UNSCALED: divided by vae.scale_factor, what the VAE decoder takes) + labels.npy' },
  }),
  evaluate: section('-p evaluate: FID, KID and precision/recall of a sample set against real images; with every > 0, the same scoring of the EMA weights during training (metrics.jsonl, TensorBoard)', {
    samples: { kind: 'string', default: null, nullable: true, doc: 'samples.npz, a uint8 .npy or a PNG folder (null: samples.npz of the newest inference-* folder in experiment_dir)' },
    reference: { kind: 'string', default: null, nullable: true, doc: 'real images (.npz/.npy uint8, a PNG folder) or cached statistics (.npz); null: images of the configured data set' },
    num_reference: { kind: 'int', default: 1000, min: 2, doc: 'reference images taken from the data set when reference is null' },
    feature_space: { kind: 'string', default: 'pixels-8x8', doc: 'of -p evaluate and of evaluation during training: pixels-<n>x<n>, inception-v3 (FID\'s Inception network: FID, sFID, IS, as DiT/SpeeD/ADM report; needs evaluate.inception.path), or featnet:<file> (a network trained by speed-train featnet)' },
    inception: section('FID\'s Inception-v3 network (feature_space inception-v3)', {
      path: { kind: 'string', default: null, nullable: true, doc: 'the Inception-v3 weights file (--inception FILE on the command line overrides it)' },
    }),
    min_feature_accuracy: { kind: 'number', default: 0.5, min: 0, max: 1, doc: 'a featnet feature space whose held-out accuracy is below this is refused, by -p evaluate and during training (its distances mean little)' },
    allow_weak_features: { kind: 'bool', default: false, doc: 'evaluate in a featnet space below min_feature_accuracy anyway (the result is marked WEAK)' },
    cache_reference: { kind: 'string', default: null, nullable: true, doc: 'also save the reference statistics here (.npz) for reuse' },
    k: { kind: 'int', default: 3, min: 1, doc: 'k of the k-nearest-neighbour manifolds (precision/recall)' },
    out: { kind: 'string', default: null, nullable: true, doc: 'eval.json path or folder (default: experiment_dir)' },
    every: { kind: 'int', default: 0, min: 0, doc: 'during training: steps between evaluations of the EMA weights, and one at the end of training (0: off)' },
    num_samples: { kind: 'int', default: 10000, min: 2, doc: 'during training: images generated per evaluation (split over the processes; the same labels and starting noise every time)' },
    sampler: { kind: 'string', default: 'ddim50', pattern: /^(ddpm|ddim)[1-9][0-9]*$/, patternDoc: 'a sampler and its step count, e.g. "ddpm100" or "ddim50"', doc: 'during training: reverse process and steps, e.g. ddpm100 or ddim50 (guidance_scale, eta and per_proc_batch_size are inference\'s)' },
  }),
  train: section('-p train: overrides of the global keys while training', {}),
});

/** Phase sections whose keys may also override the global ones for that phase. */
export const PHASES = ['train', 'sample', 'inference', 'evaluate'] as const;
export type Phase = (typeof PHASES)[number];

export interface GenerationConfig {
  ckpt: string | null;
  sampler: 'ddpm' | 'ddim';
  steps: string;
  eta: number;
  guidance_scale: number;
  guidance_channels: '3' | 'all';
  clip_denoised: boolean | null;
  use_ema: boolean;
  batch_size: number;
  out: string | null;
}

/** The resolved configuration (after merge, interpolation, validation). */
export interface Config {
  experiment_dir: string;
  seed: number;
  log_every: number;
  ckpt_every: number;
  ckpt_keep: number;
  ckpt_keep_every: number;
  max_training_steps: number;
  epochs: number;
  device: 'cpu' | 'cuda';
  threads: number;
  cuda_math: 'bf16' | 'tf32' | 'fp32';
  recompute_activations: boolean;
  resume_training: string | null;
  overwrite: boolean;
  sample_at_end: boolean;
  max_consecutive_skips: number;
  tensorboard: boolean;
  model: {
    name: string;
    input_size: number;
    in_channels: number;
    num_classes: number;
    class_dropout_prob: number;
    learn_sigma: boolean;
    depth: number | null;
    hidden_size: number | null;
    num_heads: number | null;
    mlp_ratio: number;
    init_from: string | null;
  };
  /** SpeeD's keys (src/speed/options.ts: speedOptions resolves tau's default), and the forward process. */
  diffusion: Omit<SpeedOptions, 'tau'> & {
    schedule: (typeof SCHEDULES)[number];
    diffusion_steps: number;
    tau: number | null;
    rescale_learned_sigmas: boolean;
  };
  optimizer: {
    name: 'adamw';
    lr: number;
    betas: [number, number];
    eps: number;
    weight_decay: number;
    max_grad_norm: number;
    warmup_steps: number;
  };
  ema: { decay: number };
  data: {
    name: 'synthetic' | 'image_folder' | 'latents' | 'scenes' | 'digits' | 'fashion_mnist';
    data_seed: number | null;
    root: string | null;
    labels: string | null;
    batch_size: number;
    image_size: number;
    channels: number;
    num_classes: number;
    num_samples: number;
    random_flip: boolean;
    center_crop: boolean;
    skip_bad_files: boolean;
    max_image_pixels: number;
    max_image_bytes: number;
    fashion_mnist_fit: 'pad' | 'resize';
    latent_scale: number;
  };
  vae: { path: string | null; scale_factor: number; sample_posterior: boolean; chunk: number };
  encode: { images: string | null; out: string | null; image_size: number; flip: boolean; shard_size: number; workers: number };
  sample: GenerationConfig & { sample_classes: number[] | null; num_per_class: number };
  inference: GenerationConfig & { num_samples: number; per_proc_batch_size: number; save_png: boolean; save_latents: boolean };
  evaluate: {
    samples: string | null;
    reference: string | null;
    num_reference: number;
    feature_space: string;
    inception: { path: string | null };
    min_feature_accuracy: number;
    allow_weak_features: boolean;
    cache_reference: string | null;
    k: number;
    out: string | null;
    every: number;
    num_samples: number;
    sampler: string;
  };
  train: Record<string, never>;
}

/**
 * The schema's defaults as a plain object tree. A key that follows another is
 * `${that.key}` (resolved by interpolation), or its own plain default with
 * `follow: false` (for trees that are never interpolated).
 */
export function defaultsOf(node: Section = SCHEMA, opts: { follow?: boolean } = {}): Record<string, unknown> {
  const follow = opts.follow ?? true;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node.keys)) {
    out[k] = v.kind === 'section' ? defaultsOf(v, opts)
      : follow && v.kind === 'int' && v.follows ? `\${${v.follows}}`
        : Array.isArray(v.default) ? [...v.default] : v.default;
  }
  return out;
}

/** The node at a dotted path, or undefined. */
export function nodeAt(path: string[], root: Section = SCHEMA): Node | undefined {
  let n: Node = root;
  for (const p of path) {
    if (n.kind !== 'section' || !Object.hasOwn(n.keys, p)) return undefined;
    n = n.keys[p];
  }
  return n;
}

/** A leaf's type as the docs show it (`linear|cosine|...` for an enum). */
export function typeText(v: Leaf): string {
  return v.kind === 'enum' ? v.values.join('|') : v.kind;
}

/** A leaf's default as the docs show it (`= data.channels` when it follows another key). */
export function defaultText(v: Leaf): string {
  return v.kind === 'int' && v.follows ? `= ${v.follows}` : JSON.stringify(v.default);
}

/** One line per key: `path  type  default  doc` (for --help-config; docs/config.md has the same content). */
export function describeSchema(node: Section = SCHEMA, prefix = ''): string[] {
  const lines: string[] = [];
  for (const [k, v] of Object.entries(node.keys)) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (v.kind === 'section') lines.push(...describeSchema(v, path));
    else {
      lines.push(`${path}  (${typeText(v)}, default ${defaultText(v)})  ${v.doc}`);
    }
  }
  return lines;
}
