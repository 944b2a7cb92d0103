// Inception-v3 as pytorch-fid defines its FID variant, run by the native core
// (native/src/core/inception.cpp): the feature space of FID, KID, precision/recall
// (pool3, 2048-d), the Inception Score (logits, 1008-way) and sFID (spatial: ADM's
// mixed_6/conv[..., :7], 2023 values in (h, w, c) order). See docs/evaluation.md.
//
// Weights are pytorch-fid's state dict (pt_inception-2015-12-05-6726825d.pth), read by
// its names from that PyTorch file (src/convert/pt.ts) or from a .safetensors made of it
// by `speed-train convert`.
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';

import { selectStateDict } from '../convert/index.js';
import { openPt } from '../convert/pt.js';
import type { PtTensor, PyValue } from '../convert/unpickle.js';
import { CheckpointError } from '../errors.js';
import { asFloat32, SafetensorsReader, type SafeDtype, type SafeTensor } from '../io/safetensors.js';
import { addonExport, addonPath, call, callAsync, checkInt, NativeError, type CudaMath, type Device, type ParamInfo } from '../native.js';
import { sha256File } from '../vae/index.js';
import { checkImageBatch, type FeatureOutputs, type FeatureSpace, type ImageBatch } from './features.js';

export const INCEPTION_POOL3 = 2048;
export const INCEPTION_LOGITS = 1008;
export const INCEPTION_SPATIAL = 7 * 17 * 17;
/** Where pytorch-fid publishes its FID weights; the name carries the first 8 hex digits of the file's sha256. */
export const PYTORCH_FID_WEIGHTS_URL = 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth';
const PYTORCH_FID_SHA_PREFIX = '6726825d';
const PYTORCH_FID_NAME = /^pt_inception-2015-12-05-[0-9a-f]{8}\.pth$/;

export interface InceptionOutputs {
  pool3: Float32Array;
  logits: Float32Array;
  spatial: Float32Array;
} // [N,2048], [N,1008], [N,2023]

interface NativeInception {
  params(): ParamInfo[];
  writeParam(name: string, data: Float32Array): void;
  unwritten(): string[];
  prepare(): void;
  run(images: Uint8Array, o: { n: number; H: number; W: number; C: number; chunk: number }): Promise<InceptionOutputs>;
  flops(): number;
  activationBytes(chunk: number, H: number, W: number): number;
  dispose(): void;
  busy(): string | null;
}
type InceptionCtor = new (opts: { device: Device; threads?: number; cudaDevice?: number; cudaMath?: CudaMath }) => NativeInception;

function ctor(): InceptionCtor {
  const c = addonExport('InceptionModel') as InceptionCtor | undefined;
  if (!c) throw new NativeError(`the native addon ${addonPath()} has no InceptionModel; rebuild it with \`npm run build:native\``);
  return c;
}

/** Images per forward pass (the activation arena holds this many; about 22 MiB per image at 299x299). */
const DEFAULT_CHUNK = 16;
const warnedHash = new Set<string>();

/** The tensors of a weight file by name: the pytorch-fid .pth (or any torch.save state dict) or a .safetensors. */
interface WeightSource {
  shape(name: string): number[] | undefined;
  read(name: string): Float32Array;
  names(): string[];
  close(): void;
}

const PT_TO_SAFE: Partial<Record<PtTensor['storage']['dtype'], SafeDtype>> = { F32: 'F32', F64: 'F64', F16: 'F16', BF16: 'BF16' };

function openWeights(file: string): WeightSource {
  if (/\.safetensors$/i.test(file)) {
    const r = SafetensorsReader.open(file);
    return {
      shape: (n) => r.get(n)?.shape,
      read: (n) => asFloat32(r.read(n), file, n),
      names: () => r.entries.map((e) => e.name),
      close: () => r.close(),
    };
  }
  const pt = openPt(file);
  try {
    const { dict } = selectStateDict(pt.root, file);
    const get = (n: string): PtTensor | undefined => dict.get(n as PyValue) as PtTensor | undefined;
    return {
      shape: (n) => get(n)?.size,
      read: (n) => {
        const t = get(n)!;
        const dtype = PT_TO_SAFE[t.storage.dtype];
        if (!dtype) throw new CheckpointError(file, `tensor ${n}: expected a floating-point dtype (F32, F16, BF16, F64), found ${t.storage.dtype}`);
        const st: SafeTensor = { dtype, shape: t.size, bytes: pt.tensorBytes(t) };
        return asFloat32(st, file, n);
      },
      names: () => [...dict.keys()].map(String),
      close: () => pt.close(),
    };
  } catch (e) {
    pt.close();
    throw e;
  }
}

/** Warns (stderr, once per file) when a file named like pytorch-fid's is not pytorch-fid's. */
async function checkHash(file: string): Promise<void> {
  if (!PYTORCH_FID_NAME.test(path.basename(file)) || warnedHash.has(file)) return;
  const sha = await sha256File(file);
  if (!sha.startsWith(PYTORCH_FID_SHA_PREFIX)) {
    warnedHash.add(file);
    process.stderr.write(
      `warning: ${file}: sha256 ${sha} does not start with ${PYTORCH_FID_SHA_PREFIX}, so this is not pytorch-fid's FID Inception ` +
        `file (${PYTORCH_FID_WEIGHTS_URL}); FID and IS computed with it are not comparable to published numbers\n`,
    );
  }
}

export interface InceptionLoadOptions {
  device?: Device;
  /** CPU threads (0: all cores) */
  threads?: number;
  /** which GPU (device 'cuda'); default 0 */
  cudaDevice?: number;
  /** operand precision of the convs and the fc on CUDA; default 'fp32' */
  cudaMath?: CudaMath;
}

export class InceptionV3 {
  #native: NativeInception | null;
  readonly file: string;
  readonly device: Device;

  private constructor(native: NativeInception, file: string, device: Device) {
    this.#native = native;
    this.file = file;
    this.device = device;
  }

  /**
   * Loads pytorch-fid's FID Inception weights from `weightsPath` (the .pth it publishes,
   * or a .safetensors converted from it). Every tensor is checked by name and shape.
   * On `device: 'cuda'` the convs and the fc run with float32 operands unless `cudaMath`
   * says otherwise ('tf32' or 'bf16' trade the metrics' precision for speed).
   */
  static async load(weightsPath: string, opts: InceptionLoadOptions = {}): Promise<InceptionV3> {
    const w = 'InceptionV3.load';
    const device = opts.device ?? 'cpu';
    if (device !== 'cpu' && device !== 'cuda') throw new NativeError(`${w}: device must be 'cpu' or 'cuda', got ${String(device)}`);
    const threads = opts.threads === undefined ? undefined : checkInt(opts.threads, `${w}: threads`, 0, 4096);
    if (opts.cudaDevice !== undefined) checkInt(opts.cudaDevice, `${w}: cudaDevice`, 0, 1024);
    if (opts.cudaMath !== undefined && !['bf16', 'tf32', 'fp32'].includes(opts.cudaMath)) {
      throw new NativeError(`${w}: cudaMath must be 'bf16', 'tf32' or 'fp32', got ${JSON.stringify(opts.cudaMath)}`);
    }
    const o = {
      device,
      ...(threads === undefined ? {} : { threads }),
      ...(opts.cudaDevice === undefined ? {} : { cudaDevice: opts.cudaDevice }),
      ...(opts.cudaMath === undefined ? {} : { cudaMath: opts.cudaMath }),
    };
    // the device first: a CUDA request on a build or machine without one fails before 95 MB are read
    const native = call(() => new (ctor())(o));
    try {
      if (!existsSync(weightsPath) || !statSync(weightsPath).isFile()) {
        throw new CheckpointError(
          weightsPath,
          `the Inception weights are missing: download pytorch-fid's ${PYTORCH_FID_WEIGHTS_URL} and save it as ${path.resolve(weightsPath)}`,
        );
      }
      await checkHash(weightsPath);
      const src = openWeights(weightsPath);
      try {
        const params = call(() => native.params());
        const known = new Set(params.map((p) => p.name));
        const extra = src.names().filter((n) => !known.has(n) && !n.endsWith('.num_batches_tracked'));
        if (extra.length > 0) {
          throw new CheckpointError(weightsPath, `${extra.length} tensors are not part of pytorch-fid's Inception-v3 (${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', ...' : ''}): is this the FID Inception weight file?`);
        }
        for (const p of params) {
          const shape = src.shape(p.name);
          if (!shape) throw new CheckpointError(weightsPath, `tensor ${p.name} [${p.shape}] is missing: is this pytorch-fid's FID Inception weight file?`);
          if (shape.length !== p.shape.length || shape.some((d, i) => d !== p.shape[i])) {
            throw new CheckpointError(weightsPath, `tensor ${p.name} has shape [${shape}], expected [${p.shape}]`);
          }
          const data = src.read(p.name);
          try {
            call(() => native.writeParam(p.name, data));
          } catch (e) {
            throw new CheckpointError(weightsPath, (e as Error).message);
          }
        }
      } finally {
        src.close();
      }
      call(() => native.prepare());
      return new InceptionV3(native, weightsPath, device);
    } catch (e) {
      native.dispose();
      throw e;
    }
  }

  #ready(what: string): NativeInception {
    if (!this.#native) throw new NativeError(`InceptionV3.${what}: the network has been disposed; load it again`);
    return this.#native;
  }

  /** Analytic forward FLOPs per image (at 299x299). */
  flops(): number {
    const n = this.#ready('flops');
    return call(() => n.flops());
  }

  /**
   * images uint8 [N,H,W,C], C = 1 (grey, replicated), 3, or 4 (alpha dropped); any H,W >= 1 (resized to 299).
   * `chunk` images go through the network at once (memory: activationBytes).
   */
  run(images: ImageBatch, chunk = DEFAULT_CHUNK): Promise<InceptionOutputs> {
    return callAsync(async () => {
      const n = this.#ready('run');
      checkImageBatch(images, 'InceptionV3.run');
      const { data, N, H, W, C } = images;
      if (C !== 1 && C !== 3 && C !== 4) throw new RangeError(`InceptionV3.run: expected 1 (grey), 3 (RGB) or 4 (RGBA) channels, got ${C}`);
      checkInt(chunk, 'InceptionV3.run: chunk', 1, 1 << 20);
      if (N === 0) return { pool3: new Float32Array(0), logits: new Float32Array(0), spatial: new Float32Array(0) };
      return n.run(data, { n: N, H, W, C, chunk: Math.min(chunk, N) });
    });
  }

  /** Bytes of activation memory a run of `chunk` images of H x W holds. */
  activationBytes(chunk: number, H: number, W: number): number {
    const n = this.#ready('activationBytes');
    return call(() => n.activationBytes(chunk, H, W));
  }

  dispose(): void {
    if (!this.#native) return;
    const n = this.#native;
    call(() => n.dispose());
    this.#native = null;
  }
}

const toF64 = (a: Float32Array): Float64Array => Float64Array.from(a);

/** The Inception-v3 feature space: pool3 features (2048), with the logits and spatial features as extras. */
export function inceptionFeatureSpace(net: InceptionV3, batchSize = DEFAULT_CHUNK): FeatureSpace {
  checkInt(batchSize, 'inceptionFeatureSpace: batchSize', 1, 1 << 20);
  const all = async (images: ImageBatch): Promise<FeatureOutputs> => {
    const o = await net.run(images, batchSize);
    return { features: toF64(o.pool3), logits: toF64(o.logits), spatial: toF64(o.spatial) };
  };
  return {
    name: 'inception-v3',
    dim: INCEPTION_POOL3,
    description: `pytorch-fid's FID Inception-v3 pool3 features (${path.basename(net.file)})`,
    extras: { logits: INCEPTION_LOGITS, spatial: INCEPTION_SPATIAL },
    extract: async (images) => toF64((await net.run(images, batchSize)).pool3),
    extractAll: all,
  };
}
