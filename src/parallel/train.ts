// Data-parallel training glue: which collective a model averages its
// gradient with, and rank 0's weights on every rank.
import type { Device, DiTModel } from '../native.js';
import { parallelAddon } from './native.js';
import type { World } from './world.js';

/** "nccl" on GPUs when built with it, else "mpi" (a CUDA model then stages its gradient through the host). */
export function collectiveKind(device: Device): 'mpi' | 'nccl' {
  return device === 'cuda' && parallelAddon().info().nccl ? 'nccl' : 'mpi';
}

/** Attaches the world's collective to `model` and broadcasts rank 0's state (weights, EMA, moments, step, noise) to all ranks. */
export function attachCollective(model: DiTModel, device: Device, w: World): void {
  if (!w.distributed) return;
  model.setCollective(collectiveKind(device), w.localRank);
  model.broadcastState(0);
}
