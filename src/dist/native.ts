// Typed face of the addon's `dist` object (native/src/napi/dist.cpp).
import { addonExport, asNativeError } from '../native.js';

export interface DistInfo {
  /** built with MPI */
  mpi: boolean;
  /** why not, when not */
  mpiReason: string;
  nccl: boolean;
  ncclReason: string;
  launcherWorldSize: number;
}

export interface DistAddon {
  worldSize(): number;
  info(): DistInfo;
  init(): { rank: number; size: number; localRank: number };
  allreduceMax(values: number[]): number[];
  broadcastBytes(data: Uint8Array | null, root: number): Uint8Array;
  gatherBytes(data: Uint8Array, root: number): Uint8Array[];
  barrier(): void;
  abort(code: number): void;
  finalize(): void;
  allreduceBench(kind: 'mpi' | 'nccl', floats: number, iters: number, cudaDevice?: number): { ms: number; gbps: number };
}

/** The addon's dist functions, every error turned into a NativeError. */
export function distAddon(): DistAddon {
  const raw = addonExport('dist') as DistAddon | undefined;
  if (!raw) throw asNativeError(new Error('the native addon has no `dist` export; rebuild it with `npm run build:native`'));
  const wrapped = {} as Record<string, unknown>;
  for (const [k, f] of Object.entries(raw as unknown as Record<string, (...a: unknown[]) => unknown>)) {
    wrapped[k] = (...a: unknown[]) => {
      try {
        return f(...a);
      } catch (e) {
        throw asNativeError(e);
      }
    };
  }
  return wrapped as unknown as DistAddon;
}
