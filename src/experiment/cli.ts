// CLI commands of the evaluation experiment, added to src/cli.ts's program:
//   speed-train experiment -c configs/experiments/speedup/base.yaml [--quick] [--out DIR] [--featnet-only | --generate-only] [key=value ...]
//   speed-train experiment-report DIR   (re-render report.md and the plots from DIR/report.json)
//   speed-train featnet -c CONFIG [--arch cnn|vit] [--steps N] [--out FILE]   (train the feature network on a config's data)
// Heavy modules load lazily. Importing src/featnet registers `featnet:<file>` as a feature space.
import path from 'node:path';
import type { Command } from 'commander';

const out = (s: string) => process.stdout.write(s + '\n');

// The root program has its own -c/--config and commander gives it the option
// wherever it appears, so a subcommand reads it from its parent when needed.
function configOf(o: { config?: string }, cmd: Command): string {
  const c = o.config ?? (cmd.parent?.opts() as { config?: string } | undefined)?.config;
  if (!c) throw new Error(`${cmd.name()}: missing -c CONFIG`);
  return c;
}

export function addExperimentCommands(program: Command): void {
  program
    .command('experiment')
    .description('train every method of an experiment folder on the same budget, evaluate each checkpoint, write report.md + plots')
    .option('-c, --config <file>', "the experiment's base.yaml (experiment.json beside it lists the methods)")
    .option('--quick', 'tiny model, few steps, small evaluation: checks the plumbing in under 3 minutes')
    .option('-o, --out <dir>', 'output folder (default results/speedup or results/speedup-quick)')
    .option('--featnet-only', 'train (or reuse) the feature network in the output folder, check it against min_feature_accuracy, and stop')
    .option('--generate-only', 'train every run and draw its evaluation samples (kept in each run folder), then stop; the same command without it scores them')
    .option('--seeds <list>', 'with --generate-only: only these declared seeds, e.g. 3,4 (split the drawing over processes or machines sharing --out)')
    .option('--methods <list>', 'with --generate-only: only these declared methods, e.g. uniform,speed')
    .argument('[overrides...]', 'config overrides key.path=value for every method')
    .action(async (overrides: string[], o: { config?: string; quick?: boolean; out?: string; featnetOnly?: boolean; generateOnly?: boolean; seeds?: string; methods?: string }, cmd: Command) => {
      const { runExperiment } = await import('./run.js');
      const { ConfigError } = await import('../errors.js');
      const seeds = o.seeds?.split(',').map((s) => {
        const v = Number(s.trim());
        if (s.trim() === '' || !Number.isInteger(v) || v < 0) throw new ConfigError('--seeds', `expected a comma-separated list of seed numbers, found ${JSON.stringify(o.seeds)}`);
        return v;
      });
      const r = await runExperiment({ config: configOf(o, cmd), quick: o.quick, out: o.out, overrides, featnetOnly: o.featnetOnly, generateOnly: o.generateOnly, seeds, methods: o.methods?.split(',').map((m) => m.trim()) });
      for (const p of r.plots) out(`plot: ${p}`);
    });

  program
    .command('experiment-report')
    .description("write report.md, report.json and the plots of a finished experiment folder again from its report.json (after the report code changed)")
    .argument('<dir>', 'the experiment output folder (holding report.json)')
    .action(async (dir: string) => {
      const { rerenderReport } = await import('./report.js');
      const r = await rerenderReport(dir);
      out(`report: ${r.report}`);
      for (const p of r.plots) out(`plot: ${p}`);
    });

  program
    .command('featnet')
    .description("train the feature network (a small CNN or ViT classifier) on a config's data with a held-out split; evaluate with featnet:<file>")
    .option('-c, --config <file>', 'YAML config whose data: section is the labelled data set')
    .option('--arch <arch>', 'cnn (convolutional) or vit (transformer)', 'cnn')
    .option('--steps <n>', 'training steps', '1500')
    .option('--batch <n>', 'batch size', '64')
    .option('--lr <x>', 'peak learning rate (warm-up, then cosine decay)', '0.001')
    .option('--channels <list>', 'CNN: output channels of each stage, comma-separated', '32,64')
    .option('--fc-hidden <n>', 'CNN: width of the features (fc1)', '128')
    .option('--hidden <n>', 'ViT: width', '64')
    .option('--depth <n>', 'ViT: blocks', '4')
    .option('--heads <n>', 'ViT: attention heads', '4')
    .option('--held-out <fraction>', 'held-out fraction of the data', '0.1')
    .option('-o, --out <file>', 'where to save it (default <experiment_dir>/featnet.safetensors)')
    .argument('[overrides...]', 'config overrides key.path=value')
    .action(async (overrides: string[], o: { config?: string; arch: string; steps: string; batch: string; lr: string; channels: string; fcHidden: string; hidden: string; depth: string; heads: string; heldOut: string; out?: string }, cmd: Command) => {
      const { loadConfig } = await import('../config/index.js');
      const { makeDataset } = await import('../data/index.js');
      const { trainFeatNet, saveFeatNet, FEATNET_ARCHS } = await import('../featnet/index.js');
      const { SpeedTrainError } = await import('../errors.js');
      const num = (s: string, what: string, int: boolean) => {
        const v = Number(s);
        if (!Number.isFinite(v) || v <= 0 || (int && !Number.isInteger(v))) throw new SpeedTrainError(`--${what}: expected a positive ${int ? 'integer' : 'number'}, found ${JSON.stringify(s)}`);
        return v;
      };
      const arch = FEATNET_ARCHS.find((a) => a === o.arch);
      if (!arch) throw new SpeedTrainError(`--arch: expected one of ${FEATNET_ARCHS.join(', ')}, found ${JSON.stringify(o.arch)}`);
      const config = arch === 'cnn'
        ? { arch, channels: o.channels.split(',').map((v) => num(v.trim(), 'channels', true)), fcHidden: num(o.fcHidden, 'fc-hidden', true) }
        : { arch, hiddenSize: num(o.hidden, 'hidden', true), depth: num(o.depth, 'depth', true), numHeads: num(o.heads, 'heads', true) };
      const c = loadConfig(configOf(o, cmd), { overrides, phase: 'train' }).config;
      const data = makeDataset(c, (m) => out(m));
      try {
        const r = await trainFeatNet({
          dataset: data, heldOutFraction: num(o.heldOut, 'held-out', false), steps: num(o.steps, 'steps', true), batchSize: num(o.batch, 'batch', true),
          lr: num(o.lr, 'lr', false), config,
          seed: c.seed, device: c.device, threads: c.threads || undefined, log: out,
        });
        const file = o.out ?? path.join(c.experiment_dir, 'featnet.safetensors');
        saveFeatNet(file, r.net, { accuracy: r.accuracy, heldOutSize: r.heldOutSize, trainedOn: r.description, steps: r.steps });
        r.net.dispose();
        out(`feature network: ${file} (held-out accuracy ${r.accuracy.toFixed(4)} on ${r.heldOutSize} images); evaluate with featnet:${file}`);
      } finally {
        await data.close();
      }
    });
}
