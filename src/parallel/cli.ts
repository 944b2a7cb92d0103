// Which commands split their work over a launcher's processes.
import { launcherWorldSize } from './world.js';

/** The launcher's rank of this process from its environment (before any MPI call). */
export function launcherRank(env: NodeJS.ProcessEnv = process.env): number {
  for (const k of ['OMPI_COMM_WORLD_RANK', 'PMI_RANK', 'SLURM_PROCID']) {
    const v = env[k];
    if (v !== undefined && /^\d+$/.test(v)) return Number(v);
  }
  return 0;
}

/**
 * true when this process should do nothing: a command that runs on one process
 * only (analyze, experiment, featnet, encode, plot, convert; bench) launched on several, and this is
 * not rank 0. It says so on stderr; rank 0 runs the command as one process.
 */
export function rootOnlyCommand(argv: string[], env: NodeJS.ProcessEnv = process.env, note = (m: string) => process.stderr.write(m)): boolean {
  const cmd = argv[0];
  const single = ['analyze', 'experiment', 'featnet', 'encode', 'plot', 'convert'];
  if (!cmd || !single.includes(cmd)) return false;
  const { size } = launcherWorldSize(env);
  if (size <= 1) return false;
  const rank = launcherRank(env);
  if (rank === 0) note(`speed-train ${cmd}: runs on rank 0 only (of ${size} processes)\n`);
  return rank !== 0;
}
