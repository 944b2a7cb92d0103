// Saving and loading a trained feature network: one safetensors file with
// every parameter (the PyTorch module's names: timm's for the ViT) and, in
// __metadata__, the network's config (with its arch) and the held-out accuracy
// it was trained to, so that a feature space loaded from the file can say how
// good its classifier is. Files written before the CNN existed have no arch in
// their config: they hold a ViT.
import { asFloat32, readSafetensorsHeader, safetensorsParts, withSafetensors, type LazyTensor } from '../io/safetensors.js';
import { writeFileAtomic } from '../io/npy.js';
import { CheckpointError } from '../errors.js';
import type { Device } from '../native.js';
import { FeatNet, checkFeatNetConfig, type FeatNetConfig } from './native.js';

export const FEATNET_FORMAT = 'speed-train-featnet/1';

export interface FeatNetInfo {
  config: FeatNetConfig;
  /** held-out top-1 accuracy */
  accuracy: number;
  heldOutSize: number;
  /** what it was trained on */
  trainedOn: string;
  steps: number;
}

export function saveFeatNet(file: string, net: FeatNet, info: Omit<FeatNetInfo, 'config'>): void {
  // Each parameter is read from the network only when the writer reaches it.
  const tensors: LazyTensor[] = net.params().map((p) => ({
    name: p.name, dtype: 'F32', shape: p.shape,
    bytes: () => { const a = net.readParam(p.name, 'model'); return new Uint8Array(a.buffer, a.byteOffset, a.byteLength); },
  }));
  const meta: Record<string, string> = {
    format: FEATNET_FORMAT,
    config: JSON.stringify(net.config),
    accuracy: String(info.accuracy),
    held_out_size: String(info.heldOutSize),
    trained_on: info.trainedOn,
    steps: String(info.steps),
  };
  writeFileAtomic(file, safetensorsParts(tensors, meta));
}

export function readFeatNetInfo(file: string): FeatNetInfo {
  const m = readSafetensorsHeader(file).metadata;
  if (m.format !== FEATNET_FORMAT) throw new CheckpointError(file, `not a speed-train feature network (metadata format is ${JSON.stringify(m.format ?? null)}, expected "${FEATNET_FORMAT}")`);
  let config: FeatNetConfig;
  try {
    const parsed: unknown = JSON.parse(m.config ?? '');
    config = (typeof parsed === 'object' && parsed !== null && !('arch' in parsed) ? { ...parsed, arch: 'vit' } : parsed) as FeatNetConfig;
    checkFeatNetConfig(config, 'config');
  } catch (e) {
    throw new CheckpointError(file, `bad feature-network config in metadata: ${(e as Error).message}`);
  }
  const accuracy = Number(m.accuracy);
  if (!(accuracy >= 0 && accuracy <= 1)) throw new CheckpointError(file, `bad accuracy in metadata: ${JSON.stringify(m.accuracy)}`);
  return { config, accuracy, heldOutSize: Number(m.held_out_size ?? 0), trainedOn: m.trained_on ?? '', steps: Number(m.steps ?? 0) };
}

/** Builds the network from the file's config and loads every parameter (names and shapes checked). */
export function loadFeatNet(file: string, opts: { device?: Device; threads?: number } = {}): { net: FeatNet; info: FeatNetInfo } {
  const info = readFeatNetInfo(file);
  const net = FeatNet.create({ config: info.config, seed: 0, device: opts.device, threads: opts.threads });
  try {
    withSafetensors(file, (r) => {
      const names = new Set<string>();
      for (const p of net.params()) {
        const e = r.get(p.name);
        if (!e) throw new CheckpointError(file, `missing tensor ${p.name}`);
        if (e.shape.length !== p.shape.length || e.shape.some((d, i) => d !== p.shape[i])) {
          throw new CheckpointError(file, `tensor ${p.name} has shape [${e.shape}], the network expects [${p.shape}]`);
        }
        names.add(p.name);
      }
      const extra = r.entries.map((e) => e.name).filter((k) => !names.has(k));
      if (extra.length > 0) throw new CheckpointError(file, `unexpected tensor(s) ${extra.slice(0, 3).join(', ')}`);
      // Names and shapes are checked before any tensor is read; then one at a time.
      for (const p of net.params()) net.writeParam(p.name, 'model', asFloat32(r.read(p.name), file, p.name));
    });
  } catch (e) {
    net.dispose();
    throw e;
  }
  return { net, info };
}
