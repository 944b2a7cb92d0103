#!/usr/bin/env node
// speed-train: the only entry point.
//   speed-train -c CONFIG [-p train|sample|inference|evaluate] [key.path=value ...] [--resume PATH|latest|auto]
//   speed-train analyze -c CONFIG [key.path=value ...]
//   speed-train encode -c CONFIG [key.path=value ...]
//   speed-train plot EXPERIMENT_DIR [-o DIR]
//   speed-train bench [--device cpu|cuda] [--json] [--models ...] [--batches ...]
//   speed-train convert IN.pt OUT.safetensors [--key ema]
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';

import { runAnalyze } from './speed/analyze.js';
import { speedOptions } from './speed/index.js';
import { configToYaml, describeSchema, loadConfig, PHASES, type Config, type Phase } from './config/index.js';
import { SpeedTrainError } from './errors.js';
import { NativeError, runBench, type BenchRow, type Device } from './native.js';
import { addExperimentCommands } from './experiment/cli.js';
import { ignoreClosedConsole, signalExitCode } from './train/guard.js';
import { addPlotCommand } from './plot/command.js';
import { formatValue } from './progress.js';
import './featnet/index.js'; // registers the featnet:<file> feature space
import { abortWorld, initWorld, world } from './parallel/index.js';
import { rootOnlyCommand } from './parallel/cli.js';

const out = (s: string) => process.stdout.write(s + '\n');

function printConfig(c: Config, phase: Phase, files: string[]): void {
  out(`# speed-train ${phase}: resolved config (from ${files.join(' <- ')})`);
  out(configToYaml(c).trimEnd());
  out('# ---');
}

async function main(argv: string[]): Promise<number> {
  let code = 0;
  const program = new Command();
  program
    .name('speed-train')
    .description('SpeeD diffusion training for DiT (asymmetric time-step sampling + change-aware loss weighting)')
    .option('-c, --config <file>', 'YAML config (every base.yaml from the configs root down is merged first)')
    .addOption(new Option('-p, --phase <phase>', 'what to run').choices([...PHASES]).default('train'))
    .option('--resume <path>', 'continue training from a checkpoint directory; "latest": the newest in experiment_dir/checkpoints (an error if there is none); "auto": the newest if there is one, else start fresh (for job schedulers that rerun the same command)')
    .option('--help-config', 'list every config key with its type, default and meaning')
    .option('--inception <file>', '-p evaluate: the Inception-v3 weights file (overrides evaluate.inception.path)')
    .argument('[overrides...]', 'config overrides key.path=value (YAML-typed), applied after the files')
    .showHelpAfterError()
    .exitOverride()
    // options after a subcommand's name (analyze -c ...) belong to the subcommand
    .enablePositionalOptions()
    .action(async (overrides: string[], o: { config?: string; phase: Phase; resume?: string; helpConfig?: boolean; inception?: string }) => {
      if (o.helpConfig) { out(describeSchema().join('\n')); return; }
      if (!o.config) throw new SpeedTrainError('missing -c CONFIG (for example: speed-train -c configs/default.yaml)');
      if (o.inception !== undefined && o.phase !== 'evaluate') throw new SpeedTrainError(`--inception applies to -p evaluate, not -p ${o.phase}`);
      const loaded = loadConfig(o.config, { overrides, phase: o.phase });
      // Under mpirun / srun: join the world (train and inference split the
      // work; sample and evaluate run on rank 0 only). Rank 0 alone prints.
      const w = initWorld();
      if (w.isRoot) {
        printConfig(loaded.config, o.phase, loaded.files);
        loaded.notes.forEach((n) => out(n));
      }
      if (w.distributed && (o.phase === 'sample' || o.phase === 'evaluate')) {
        if (w.isRoot) out(`${o.phase}: runs on rank 0 only (of ${w.size} processes)`);
        else return;
      }
      if (o.phase === 'train') {
        const { train } = await import('./train/index.js');
        const r = await train({ config: loaded.config, resume: o.resume });
        if (!w.isRoot) { if (r.interrupted) code = signalExitCode(r.signal ?? 'SIGINT'); return; }
        out(`trained ${r.step}/${r.totalSteps} steps${r.skipped ? ` (${r.skipped} skipped: non-finite loss, gradient or update)` : ''} in ${r.seconds.toFixed(1)} s; final loss ${r.finalLoss === null ? 'n/a' : formatValue('loss', r.finalLoss)}`);
        if (r.interrupted) { code = signalExitCode(r.signal ?? 'SIGINT'); return; }
        if (loaded.config.sample_at_end) {
          // The end-of-training grid uses the sample phase's settings.
          const sc = loadConfig(o.config, { overrides, phase: 'sample' }).config;
          const { runSample } = await import('./generate/index.js');
          await runSample(sc, { ckpt: r.checkpoint });
        }
      } else if (o.phase === 'sample') {
        if (o.resume) throw new SpeedTrainError('--resume applies to training; choose the checkpoint with sample.ckpt=PATH');
        const { runSample } = await import('./generate/index.js');
        await runSample(loaded.config);
      } else if (o.phase === 'evaluate') {
        if (o.resume) throw new SpeedTrainError('--resume applies to training; choose the sample set with evaluate.samples=PATH');
        const { runEvaluatePhase } = await import('./eval/phase.js');
        await runEvaluatePhase(loaded.config, undefined, { inception: o.inception });
      } else {
        if (o.resume) throw new SpeedTrainError('--resume applies to training; choose the checkpoint with inference.ckpt=PATH');
        const { runInference } = await import('./generate/index.js');
        await runInference(loaded.config);
      }
    });

  program
    .command('analyze')
    .description("plot the schedule's areas, the sampling distribution p(t) and the weights w(t) a config uses")
    .requiredOption('-c, --config <file>', 'YAML config')
    .option('-o, --out <file>', 'PNG to write (default: <experiment_dir>/analyze.png)')
    .argument('[overrides...]', 'config overrides key.path=value')
    .action(async (overrides: string[], o: { config: string; out?: string }) => {
      const { config: c } = loadConfig(o.config, { overrides, phase: 'train' });
      const file = o.out ?? path.join(c.experiment_dir, 'analyze.png');
      mkdirSync(path.dirname(file), { recursive: true });
      const metricsPath = path.join(c.experiment_dir, 'metrics.jsonl');
      const speed = speedOptions(c.diffusion, c.diffusion.diffusion_steps);
      const r = await runAnalyze({
        schedule: c.diffusion.schedule, T: c.diffusion.diffusion_steps, speed,
        metricsPath: existsSync(metricsPath) ? metricsPath : undefined, out: file,
      });
      out(r.text.trimEnd());
    });

  program
    .command('encode')
    .description('image folder -> ADM centre crop -> VAE latents in shards + manifest.json (encode.*, vae.*; resumable)')
    .requiredOption('-c, --config <file>', 'YAML config')
    .argument('[overrides...]', 'config overrides key.path=value')
    .action(async (overrides: string[], o: { config: string }) => {
      const { config: c } = loadConfig(o.config, { overrides, phase: 'train' });
      const { runEncode } = await import('./encode/index.js');
      await runEncode(c);
    });

  program
    .command('bench')
    .description('time the native forward pass, train step and kernels')
    .addOption(new Option('--device <device>', 'backend').choices(['cpu', 'cuda']).default('cpu'))
    .option('--json', 'print JSON lines instead of a table')
    .option('--models <list>', 'comma-separated preset@size x channels, or VAE-f8@size (SD VAE encode/decode)', 'DiT-S/2@32x4,DiT-Ti/4@32x3')
    .option('--batches <list>', 'comma-separated batch sizes', '8,32')
    .option('--threads <n>', 'CPU threads (default: all cores)')
    .option('--iters <n>', 'timed iterations')
    .option('--no-kernels', 'skip the per-kernel timings')
    .option('--recompute', 'train step with activation recomputation (less memory, one more forward)')
    .option('--profile', 'one more train step timed op by op: where the step time goes')
    .action(async (o: { device: Device; json?: boolean; models: string; batches: string; threads?: string; iters?: string; kernels: boolean; recompute?: boolean; profile?: boolean }) => {
      const int = (s: string, what: string) => {
        const v = Number(s);
        if (!Number.isInteger(v) || v < 1) throw new SpeedTrainError(`--${what}: expected a positive integer, found ${JSON.stringify(s)}`);
        return v;
      };
      // under mpirun / srun: the all-reduce and data-parallel train-step rows (src/parallel/bench.ts)
      const w = initWorld();
      if (w.distributed) {
        const { parallelBenchRows } = await import('./parallel/bench.js');
        const dr = await parallelBenchRows(w, {
          models: o.models.split(',').map((s) => s.trim()).filter(Boolean),
          batches: o.batches.split(',').map((s) => int(s.trim(), 'batches')),
          device: o.device, threads: o.threads ? int(o.threads, 'threads') : undefined, iters: o.iters ? int(o.iters, 'iters') : undefined,
        });
        if (w.isRoot) out(o.json ? dr.map((r) => JSON.stringify(r)).join('\n') : benchTable(dr));
        return;
      }
      const rows = await runBench({
        models: o.models.split(',').map((s) => s.trim()).filter(Boolean),
        batches: o.batches.split(',').map((s) => int(s.trim(), 'batches')),
        device: o.device,
        threads: o.threads ? int(o.threads, 'threads') : undefined,
        iters: o.iters ? int(o.iters, 'iters') : undefined,
        kernels: o.kernels,
        recompute: o.recompute === true,
        profile: o.profile === true,
      });
      if (o.json) rows.forEach((r) => out(JSON.stringify(r)));
      else out(benchTable(rows));
    });

  program
    .command('convert')
    .description('PyTorch .pt state dict (e.g. DiT-XL-2-256x256.pt) -> .safetensors, through a restricted unpickler that runs no code')
    .argument('<in>', '.pt file (torch.save zip)')
    .argument('<out>', '.safetensors file to write')
    .option('--key <key>', 'top-level key of the state dict in a checkpoint (default: ema, else model, else state_dict)')
    .action(async (input: string, output: string, o: { key?: string }) => {
      const { convertPt } = await import('./convert/index.js');
      convertPt(input, output, { key: o.key, log: out });
    });

  addExperimentCommands(program);
  addPlotCommand(program);
  // analyze, experiment, featnet and bench without its data-parallel rows do
  // not split their work: under a launcher only rank 0 runs them.
  if (rootOnlyCommand(argv)) return 0;
  await program.parseAsync(argv, { from: 'user' });
  return code;
}

export function benchTable(rows: BenchRow[]): string {
  const head = ['model', 'device', 'batch', 'what', 'ms', 'images/s', 'GFLOP/s', 'GB/s', 'x GEMM', 'act MiB', 'calls', 'share'];
  const body = rows.map((r) => [
    r.model, r.device, String(r.batch), r.what, r.ms.toFixed(3),
    r.imagesPerSec ? r.imagesPerSec.toFixed(1) : '', r.gflops ? r.gflops.toFixed(1) : '', r.gbps ? r.gbps.toFixed(1) : '',
    r.ratioToGemm ? r.ratioToGemm.toFixed(2) : '',
    r.activationMB ? r.activationMB.toFixed(0) : '',
    r.calls ? String(r.calls) : '',
    r.share ? `${(100 * r.share).toFixed(1)}%` : '',
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 4 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...body.map(line)].join('\n');
}

// A command whose promise is still pending when the event loop runs dry has lost an
// operation (a worker or native call nothing keeps alive): Node would exit 0 with the
// work half done. Fail loudly instead (a safety net: an image-folder run whose decode
// workers had all exited once ended this way with exit status 0).
let settled = false;
process.on('beforeExit', () => {
  if (settled) return;
  settled = true;
  process.stderr.write('speed-train: internal error: the process ran out of pending work before the command finished; its output is incomplete\n');
  process.exitCode = 70; // EX_SOFTWARE
});

ignoreClosedConsole(); // `| head`, or a `| tee` ended by Ctrl-C, must not end a command midway
main(process.argv.slice(2)).then(
  (code) => { settled = true; process.exitCode = code; },
  (e: unknown) => {
    settled = true;
    if (e instanceof CommanderError) {
      // commander has printed its message (or the help) already.
      process.exitCode = e.exitCode;
      return;
    }
    const known = e instanceof SpeedTrainError || e instanceof NativeError || e instanceof RangeError;
    const msg = e instanceof Error ? e.message : String(e);
    // one rank failing must end every rank (not leave them in a collective)
    if (world().distributed) abortWorld(1, msg);
    process.stderr.write(`speed-train: error: ${msg}\n`);
    if (!known || process.env.SPEED_TRAIN_DEBUG) process.stderr.write(`${e instanceof Error ? e.stack : ''}\n`);
    process.exitCode = 1;
  },
);
