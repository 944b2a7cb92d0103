// SD's VAE (AutoencoderKL, kl-f8) in TypeScript terms: load a safetensors
// weight file (src/vae/weights.ts), then encode images to latents and decode
// latents to images on the native backend (native/src/napi/vae.cpp ->
// native/src/core/vae.cpp). Latents here are UNSCALED (the VAE's own space):
// multiplying by latent_scale (SD: 0.18215) is the caller's business.
//
// Batches are split into chunks here (so that progress can be reported between
// them); results do not depend on the chunk size (tested), and sampled
// latents use the same Philox numbers for any chunking.
import { createReadStream } from 'node:fs';
import { createHash } from 'node:crypto';

import { CheckpointError } from '../errors.js';
import { addonExport, addonPath, callAsync, call, checkInt, NativeError, NativeParamStore, type CudaMath, type Device } from '../native.js';
import { readVaeWeights, resolveVaeFile, vaeConfigJson, type VaeConfig, type VaeNaming } from './weights.js';

export type { VaeConfig, VaeNaming } from './weights.js';

export interface VaeLoadOptions {
  device?: Device;
  /** CPU threads; 0 or undefined = all cores */
  threads?: number;
  cudaDevice?: number;
  cudaMath?: CudaMath;
  log?: (m: string) => void;
  /** explicit config keys (they must agree with the tensor shapes); wins over config.json */
  config?: Partial<VaeConfig>;
  /** a diffusers config.json elsewhere than beside the weight file */
  configFile?: string;
}

export interface VaeEncodeOptions {
  /** false (default): the posterior mean; true: mean + std * eps */
  sample?: boolean;
  /** Philox key and first block of eps (default 0, 0); eps of image i is the same for any chunking */
  seed?: number;
  offset?: number;
  /** images per native call (bounds activation memory); default from activationBytes */
  chunk?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface VaeDecodeOptions {
  chunk?: number;
  onProgress?: (done: number, total: number) => void;
}

interface NativeParam {
  name: string;
  shape: number[];
  numel: number;
}
interface NativeVAE {
  params(): NativeParam[];
  config(): VaeConfig;
  writeParam(name: string, data: Float32Array): void;
  readParam(name: string): Float32Array;
  unwritten(): string[];
  encode(x: Float32Array, o: { n: number; H: number; W: number; chunk: number; sample: boolean; seed: number; offset: number; first: number }): Promise<Float32Array>;
  encodeMoments(x: Float32Array, o: { n: number; H: number; W: number; chunk: number }): Promise<Float32Array>;
  decode(z: Float32Array, o: { n: number; h: number; w: number; chunk: number }): Promise<Float32Array>;
  activationBytes(chunk: number, H: number, W: number): number;
  flops(H: number, W: number): { encode: number; decode: number };
  dispose(): void;
  busy(): string | null;
}
type VAECtor = new (config: VaeConfig, opts: { device: Device; threads?: number; cudaDevice?: number; cudaMath?: CudaMath }) => NativeVAE;

function ctor(): VAECtor {
  const c = addonExport('VAEModel') as VAECtor | undefined;
  if (!c) throw new NativeError(`the native addon ${addonPath()} has no VAEModel; rebuild it with \`npm run build:native\``);
  return c;
}

/** sha256 (hex) of a file, streamed. */
export function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('error', (e) => reject(new CheckpointError(file, `cannot read (${(e as NodeJS.ErrnoException).code ?? e.message})`)))
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')));
  });
}

const shapeStr = (s: number[]): string => `[${s.join(', ')}]`;

/** Runs `f`; a native error becomes a CheckpointError naming the file (and `what`: a tensor). */
function named<T>(file: string, what: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof NativeError) throw new CheckpointError(file, `${what}: ${e.message.replace(/^VAE\.\w+(\('[^']*'\))?: /, '')}`);
    throw e;
  }
}

// Default chunk: activations of one chunk within this many bytes.
const CHUNK_BYTES: Record<Device, number> = { cpu: 1 << 30, cuda: 16 * 2 ** 30 };

export class VAE extends NativeParamStore<never, NativeParam> {
  readonly config: VaeConfig;
  readonly file: string;
  /** sha256 of the weight file (hex) */
  readonly sha256: string;
  /** 2^(levels - 1): 8 for SD */
  readonly downFactor: number;
  readonly naming: VaeNaming;
  /** diffusers config.json's scaling_factor when the file came with one (SD: 0.18215) */
  readonly scalingFactor: number | undefined;
  readonly device: Device;
  readonly #native: NativeVAE;

  private constructor(file: string, sha: string, naming: VaeNaming, scaling: number | undefined, device: Device, native: NativeVAE) {
    super(native, 'VAE');
    this.file = file;
    this.sha256 = sha;
    this.naming = naming;
    this.scalingFactor = scaling;
    this.device = device;
    this.#native = native;
    this.config = native.config();
    this.downFactor = 2 ** (this.config.blockOutChannels.length - 1);
  }

  static async load(path: string, opts: VaeLoadOptions = {}): Promise<VAE> {
    const w = 'VAE.load';
    if (typeof path !== 'string' || path.length === 0) throw new NativeError(`${w}: file must be a non-empty string`);
    const file = resolveVaeFile(path); // a diffusers model folder names its weight file
    if (opts.threads !== undefined) checkInt(opts.threads, `${w}: threads`, 0, 4096);
    const device = opts.device ?? 'cpu';
    if (device !== 'cpu' && device !== 'cuda') throw new NativeError(`${w}: device must be 'cpu' or 'cuda', got ${String(device)}`);
    const weights = readVaeWeights(file, opts.config ?? {}, opts.configFile);
    const sha = await sha256File(file);
    // The config was checked against its file (readVaeWeights); what the native side
    // still refuses (a device, memory) is said against the weight file too.
    const native = named(file, 'cannot build the VAE', () => call(() => new (ctor())(weights.config, { device, threads: opts.threads, cudaDevice: opts.cudaDevice, cudaMath: opts.cudaMath })));
    try {
      const params = native.params();
      const known = new Set(params.map((p) => p.name));
      const missing: string[] = [];
      for (const p of params) {
        const t = weights.tensors.get(p.name);
        if (!t) {
          missing.push(`${p.name} ${shapeStr(p.shape)}`);
          continue;
        }
        if (shapeStr(t.shape) !== shapeStr(p.shape)) {
          throw new CheckpointError(
            file,
            `tensor ${t.source}${t.source !== p.name ? ` (${p.name})` : ''} has shape ${shapeStr(t.shape)}, expected ${shapeStr(p.shape)} for the VAE config ${vaeConfigJson(weights.config)}`,
          );
        }
        named(file, `tensor ${t.source}`, () => call(() => native.writeParam(p.name, t.data)));
      }
      if (missing.length > 0) {
        throw new CheckpointError(file, `${missing.length} VAE tensor(s) missing (${weights.naming} naming, names as diffusers'): ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', ...' : ''}`);
      }
      const extra = [...weights.tensors.entries()].filter(([k]) => !known.has(k)).map(([, t]) => t.source);
      if (extra.length > 0) {
        throw new CheckpointError(file, `${extra.length} tensor(s) are not part of the VAE with config ${vaeConfigJson(weights.config)}: ${extra.slice(0, 8).join(', ')}${extra.length > 8 ? ', ...' : ''}`);
      }
      for (const n of weights.notes) opts.log?.(n);
      return new VAE(file, sha, weights.naming, weights.scalingFactor, device, native);
    } catch (e) {
      native.dispose();
      throw e;
    }
  }

  #dims(what: string, n: number, H: number, W: number, mult: number): void {
    checkInt(n, `${what}: n`, 1, 1 << 20);
    checkInt(H, `${what}: H`, 1, 16384);
    checkInt(W, `${what}: W`, 1, 16384);
    if (H % mult !== 0 || W % mult !== 0) throw new NativeError(`${what}: H and W must be multiples of the down factor ${mult}, got ${H}x${W}`);
  }
  #chunk(what: string, given: number | undefined, n: number, H: number, W: number): number {
    if (given !== undefined) return checkInt(given, `${what}: chunk`, 1, 1 << 20);
    const per = call(() => this.#native.activationBytes(1, H, W));
    return Math.max(1, Math.min(n, Math.floor(CHUNK_BYTES[this.device] / per)));
  }
  #input(what: string, x: Float32Array, want: number, dims: string): void {
    if (!(x instanceof Float32Array)) throw new NativeError(`${what} must be a Float32Array`);
    if (x.length !== want) throw new NativeError(`${what} has ${x.length} elements, expected ${dims} = ${want}`);
  }

  /** Bytes of activations for `chunk` images at image size H x W. */
  activationBytes(chunk: number, H: number, W: number): number {
    this.ready('activationBytes');
    return call(() => this.#native.activationBytes(chunk, H, W));
  }
  /** Analytic forward FLOPs per image at image size H x W. */
  flops(H: number, W: number): { encode: number; decode: number } {
    this.ready('flops');
    return call(() => this.#native.flops(H, W));
  }

  /** images [n,C,H,W] float32 in [-1,1] -> latents [n,zc,H/f,W/f] UNSCALED: the posterior mean, or mean + std*eps when sample. */
  encode(images: Float32Array, n: number, H: number, W: number, opts: VaeEncodeOptions = {}): Promise<Float32Array> {
    const w = 'VAE.encode';
    return callAsync(async () => {
      this.ready(w);
      this.#dims(w, n, H, W, this.downFactor);
      this.#input(`${w}: images`, images, n * this.config.inChannels * H * W, 'n*C*H*W');
      const seed = opts.seed === undefined ? 0 : checkInt(opts.seed, `${w}: seed`, 0, Number.MAX_SAFE_INTEGER);
      const offset = opts.offset === undefined ? 0 : checkInt(opts.offset, `${w}: offset`, 0, Number.MAX_SAFE_INTEGER);
      const sample = opts.sample ?? false;
      if (typeof sample !== 'boolean') throw new NativeError(`${w}: sample must be a boolean`);
      const chunk = this.#chunk(w, opts.chunk, n, H, W);
      const f = this.downFactor;
      const inPer = this.config.inChannels * H * W;
      const outPer = this.config.latentChannels * (H / f) * (W / f);
      const out = new Float32Array(n * outPer);
      for (let n0 = 0; n0 < n; n0 += chunk) {
        const m = Math.min(chunk, n - n0);
        const z = await this.#native.encode(images.subarray(n0 * inPer, (n0 + m) * inPer), { n: m, H, W, chunk: m, sample, seed, offset, first: n0 });
        out.set(z, n0 * outPer);
        opts.onProgress?.(n0 + m, n);
      }
      return out;
    });
  }

  /** images -> moments [n, 2zc, H/f, W/f]: mean, then logvar (unclamped): what quant_conv outputs (for cross-checks). */
  encodeMoments(images: Float32Array, n: number, H: number, W: number, opts: { chunk?: number } = {}): Promise<Float32Array> {
    const w = 'VAE.encodeMoments';
    return callAsync(async () => {
      this.ready(w);
      this.#dims(w, n, H, W, this.downFactor);
      this.#input(`${w}: images`, images, n * this.config.inChannels * H * W, 'n*C*H*W');
      return this.#native.encodeMoments(images, { n, H, W, chunk: this.#chunk(w, opts.chunk, n, H, W) });
    });
  }

  /** latents [n,zc,h,w] UNSCALED -> images [n,C,h*f,w*f] float32 (about [-1,1], not clipped) */
  decode(latents: Float32Array, n: number, h: number, w: number, opts: VaeDecodeOptions = {}): Promise<Float32Array> {
    const what = 'VAE.decode';
    return callAsync(async () => {
      this.ready(what);
      this.#dims(what, n, h, w, 1);
      const f = this.downFactor;
      if (h * f > 16384 || w * f > 16384) throw new NativeError(`${what}: the decoded image ${h * f}x${w * f} exceeds 16384`);
      this.#input(`${what}: latents`, latents, n * this.config.latentChannels * h * w, 'n*zc*h*w');
      const chunk = this.#chunk(what, opts.chunk, n, h * f, w * f);
      const inPer = this.config.latentChannels * h * w;
      const outPer = this.config.outChannels * h * f * w * f;
      const out = new Float32Array(n * outPer);
      for (let n0 = 0; n0 < n; n0 += chunk) {
        const m = Math.min(chunk, n - n0);
        const y = await this.#native.decode(latents.subarray(n0 * inPer, (n0 + m) * inPer), { n: m, h, w, chunk: m });
        out.set(y, n0 * outPer);
        opts.onProgress?.(n0 + m, n);
      }
      return out;
    });
  }

}
