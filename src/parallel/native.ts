// Typed face of the addon's `parallel` object (native/src/napi/parallel.cpp).
import { addonExport, asNativeError } from '../native.js';

export interface ParallelInfo {
  /** built with MPI */
  mpi: boolean;
  /** why not, when not */
  mpiReason: string;
  nccl: boolean;
  ncclReason: string;
  launcherWorldSize: number;
}

export interface ParallelAddon {
  worldSize(): number;
  info(): ParallelInfo;
  init(): { rank: number; size: number; localRank: number };
  allreduceMax(values: number[]): number[];
  broadcastBytes(data: Uint8Array | null, root: number): Uint8Array;
  gatherBytes(data: Uint8Array, root: number): Uint8Array[];
  barrier(): void;
  abort(code: number): void;
  finalize(): void;
  allreduceBench(kind: 'mpi' | 'nccl', floats: number, iters: number, cudaDevice?: number): { ms: number; gbps: number };
}

/** The addon's parallel functions, every error turned into a NativeError. */
export function parallelAddon(): ParallelAddon {
  const raw = addonExport('parallel') as ParallelAddon | undefined;
  if (!raw) throw asNativeError(new Error('the native addon has no `parallel` export; rebuild it with `npm run build:native`'));
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
  return wrapped as unknown as ParallelAddon;
}
