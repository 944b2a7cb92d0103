// The `plot` subcommand.
import type { Command } from 'commander';

export function addPlotCommand(program: Command): void {
  program
    .command('plot')
    .description('figures of a run from its metrics.jsonl: loss curves, loss per time step over training, the time-step histogram, FID vs step when the run evaluated during training (SVG + PNG)')
    .argument('<experiment_dir>', 'a run\'s experiment_dir (holds metrics.jsonl)')
    .option('-o, --out <dir>', 'folder for the figures (default: <experiment_dir>/plots)')
    .action(async (dir: string, o: { out?: string }) => {
      const { plotRun } = await import('./training.js');
      const r = await plotRun(dir, o.out);
      process.stdout.write(r.text + '\n');
    });
}
