// report.md, report.json and the plots of the speed-up experiment.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import type { Config } from '../config/index.js';
import { figureSpec, panel, renderFigure, type LineSeries } from '../plot/index.js';
import type { MetricsLine } from '../train/index.js';
import type { MethodResult } from './run.js';
import { lowerIsBetter, METRIC_KEYS, type ExperimentSpec, type MetricKey } from './spec.js';
import { speedupFactor, type CurvePoint, type Speedup } from './speedup.js';

export interface ReportInput {
  spec: ExperimentSpec;
  methods: MethodResult[];
  quick: boolean;
  featnet: { file: string; accuracy: number; heldOutSize: number; space: string; description: string };
  pixelSpace: string;
  reference: string;
  base: Config;
  seconds: number;
}

// the baseline in black, the methods in distinct colours, the same on every panel
const COLORS = ['#222222', '#d62728', '#1f77b4', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

const METRIC_TITLE: Record<MetricKey, string> = {
  featnet_fid: 'FID (feature network)',
  featnet_kid: 'KID (feature network)',
  featnet_precision: 'precision (feature network)',
  featnet_recall: 'recall (feature network)',
  pixel_fid: 'FID (pixels)',
  pixel_kid: 'KID (pixels)',
  pixel_precision: 'precision (pixels)',
  pixel_recall: 'recall (pixels)',
};

export function curveOf(m: MethodResult, key: MetricKey): CurvePoint[] {
  return m.evals.filter((e) => e.metrics[key] !== null).map((e) => ({ step: e.step, value: e.metrics[key] as number }));
}

function fmt(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return 'n/a';
  if (v !== 0 && Math.abs(v) < 1e-3) return v.toExponential(2);
  return v.toFixed(Math.abs(v) >= 100 ? 1 : 4);
}

/** Speed-up of every method against the baseline on one metric. */
export function speedups(methods: MethodResult[], baseline: string, key: MetricKey): { method: string; s: Speedup | null }[] {
  const b = methods.find((m) => m.method === baseline);
  if (!b) return methods.map((m) => ({ method: m.method, s: null }));
  const bc = curveOf(b, key);
  return methods.map((m) => ({ method: m.method, s: bc.length === 0 ? null : speedupFactor(bc, curveOf(m, key), lowerIsBetter(key)) }));
}

/** One line per method: "speed: 2.41x (reaches 0.1234 at step 830; baseline at 2000)". */
export function speedupLines(methods: MethodResult[], baseline: string, key: MetricKey): string[] {
  return speedups(methods, baseline, key).map(({ method, s }) => {
    if (!s) return `- ${method}: n/a (no baseline evaluations)`;
    if (s.factor === null) return `- ${method}: not reached (baseline final ${fmt(s.target)} needed ${s.baselineSteps.toFixed(0)} steps; best ${method} value ${fmt(bestOf(methods, method, key))})`;
    return `- ${method}: **${s.factor.toFixed(2)}x** (reaches ${fmt(s.target)} at step ${s.methodSteps!.toFixed(0)}; ${baseline} needed ${s.baselineSteps.toFixed(0)})`;
  });
}

function bestOf(methods: MethodResult[], method: string, key: MetricKey): number | null {
  const c = curveOf(methods.find((m) => m.method === method)!, key).map((p) => p.value);
  if (c.length === 0) return null;
  return lowerIsBetter(key) ? Math.min(...c) : Math.max(...c);
}

export function metricTable(methods: MethodResult[], key: MetricKey): string {
  const steps = [...new Set(methods.flatMap((m) => m.evals.map((e) => e.step)))].sort((a, b) => a - b);
  const head = `| step | ${methods.map((m) => m.method).join(' | ')} |`;
  const sep = `|---:|${methods.map(() => '---:').join('|')}|`;
  const rows = steps.map((s) => `| ${s} | ${methods.map((m) => fmt(m.evals.find((e) => e.step === s)?.metrics[key])).join(' | ')} |`);
  return [head, sep, ...rows].join('\n');
}

/** Mean loss per time-step bucket over the second half of a run's metrics.jsonl (counts as weights). */
export function lossPerBucket(file: string): { edges: number[]; loss: (number | null)[] } | null {
  if (!existsSync(file)) return null;
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as MetricsLine);
  if (lines.length === 0) return null;
  const half = lines.slice(Math.floor(lines.length / 2));
  const nb = half[0].loss_per_bucket.length;
  const sum = new Array<number>(nb).fill(0);
  const cnt = new Array<number>(nb).fill(0);
  for (const l of half) {
    l.loss_per_bucket.forEach((v, i) => {
      if (v !== null) {
        sum[i] += v * l.t_hist[i];
        cnt[i] += l.t_hist[i];
      }
    });
  }
  return { edges: half[0].bucket_edges, loss: sum.map((s, i) => (cnt[i] > 0 ? s / cnt[i] : null)) };
}

export async function writeReport(out: string, r: ReportInput): Promise<{ report: string; plots: string[] }> {
  const { spec, methods } = r;
  const primary = spec.primary_metric;
  const plots: string[] = [];
  const colors = Object.fromEntries(methods.map((m, i) => [m.method, COLORS[i % COLORS.length]]));

  // metric vs steps: the primary metric first, then FID/KID/precision/recall in both spaces
  const keys: MetricKey[] = [primary, ...METRIC_KEYS.filter((k) => k !== primary)];
  const panels = keys.map((k) => panel({
    title: `${METRIC_TITLE[k]}${lowerIsBetter(k) ? ' (lower is better)' : ' (higher is better)'}`,
    xTitle: 'training step',
    yTitle: k.replace(/^(featnet|pixel)_/, '').toUpperCase().replace('PRECISION', 'precision').replace('RECALL', 'recall'),
    lines: methods.map((m): LineSeries => {
      const c = curveOf(m, k);
      return { name: m.method, x: c.map((p) => p.step), y: c.map((p) => p.value) };
    }),
    linesLegend: 'method',
    colors,
    width: 320,
    height: 200,
  }));
  const metricFig = await renderFigure(
    figureSpec(panels, { cols: 2, title: 'speed-up experiment: metrics vs training steps', subtitle: `EMA weights, ${r.base.sample.sampler} ${r.base.sample.steps}` }),
    path.join(out, 'metric_vs_steps.png'),
  );
  const metricPng = metricFig.png;
  plots.push(metricPng);

  // per-time-step loss: baseline vs SpeeD (all methods when there is no 'speed')
  const lossMethods = methods.filter((m) => m.method === spec.baseline || m.method === 'speed');
  const lossSeries: LineSeries[] = [];
  for (const m of lossMethods.length >= 2 ? lossMethods : methods) {
    const lb = lossPerBucket(path.join(m.experiment_dir, 'metrics.jsonl'));
    if (!lb) continue;
    const xs: number[] = [];
    const ys: number[] = [];
    lb.loss.forEach((v, b) => {
      if (v !== null) {
        xs.push((lb.edges[b] + lb.edges[b + 1]) / 2);
        ys.push(v);
      }
    });
    lossSeries.push({ name: m.method, x: xs, y: ys });
  }
  const T = r.base.diffusion.diffusion_steps;
  const lossFig = await renderFigure(
    figureSpec([panel({
      title: 'training loss per time step (second half of training)', xTitle: 'time step t (bucket centre)', yTitle: 'loss (w·mse + vb)',
      lines: lossSeries, linesLegend: 'method', colors, xDomain: [0, T], yScale: 'log', width: 520, height: 300,
    })], { cols: 1 }),
    path.join(out, 'loss_per_timestep.png'),
  );
  const lossPng = lossFig.png;
  plots.push(lossPng);

  const c = r.base;
  const md: string[] = [];
  md.push(`# SpeeD speed-up experiment${r.quick ? ' (--quick: plumbing check only, numbers mean nothing)' : ''}`, '');
  md.push(`Model ${c.model.name} (depth ${c.model.depth ?? 'preset'}, hidden ${c.model.hidden_size ?? 'preset'}), data ${c.data.name} ${c.data.image_size}x${c.data.image_size}x${c.data.channels}, ` +
    `${c.data.num_classes} classes, ${c.data.num_samples} training images, batch ${c.data.batch_size}, ${c.max_training_steps} steps, seed ${c.seed}, ` +
    `lr ${c.optimizer.lr} (warm-up ${c.optimizer.warmup_steps}), EMA ${c.ema.decay}, T = ${c.diffusion.diffusion_steps} (${c.diffusion.schedule}).`, '');
  md.push(`Evaluation every ${c.ckpt_every} steps from the EMA weights: ${c.sample.num_per_class} samples per class with ${c.sample.sampler} ${c.sample.steps} ` +
    `(eta ${c.sample.eta}, guidance ${c.sample.guidance_scale}), the same starting noise at every evaluation; reference: ${r.reference}.`, '');
  md.push(`Feature spaces: **${r.featnet.space}** — ${r.featnet.description}; and **${r.pixelSpace}**. ` +
    'Metrics in these spaces compare with each other only, not with Inception FID.', '');
  md.push('| method | sampling | weighting | train s |', '|---|---|---|---:|');
  for (const m of methods) md.push(`| ${m.method} | ${m.sampling} | ${m.weighting} | ${m.train_seconds.toFixed(1)} |`);
  md.push('');
  md.push(`## Speed-up on ${METRIC_TITLE[primary]}`, '');
  md.push(`Steps the baseline (${spec.baseline}) needed for its final score ÷ steps the method needed to reach that score (first crossing, linear interpolation between evaluations).`, '');
  md.push(...speedupLines(methods, spec.baseline, primary), '');
  const second: MetricKey = primary === 'pixel_fid' ? 'featnet_fid' : 'pixel_fid';
  md.push(`## Speed-up on ${METRIC_TITLE[second]}`, '', ...speedupLines(methods, spec.baseline, second), '');
  for (const k of keys) md.push(`## ${METRIC_TITLE[k]}`, '', metricTable(methods, k), '');
  md.push('## Plots', '', `![metrics vs steps](${path.basename(metricPng)})`, '', `![loss per time step](${path.basename(lossPng)})`, '');
  md.push('The per-time-step loss is the training loss as logged (metrics.jsonl `loss_per_bucket`, second half of training): ' +
    "for weighted methods its mse term includes the method's weights.", '');
  md.push(`Total time ${(r.seconds / 60).toFixed(1)} min.`, '');
  const report = path.join(out, 'report.md');
  writeFileSync(report, md.join('\n'));
  writeFileSync(path.join(out, 'report.json'), JSON.stringify({
    spec, featnet: r.featnet, pixel_space: r.pixelSpace, reference: r.reference, seconds: r.seconds, methods,
    speedups: Object.fromEntries(keys.map((k) => [k, speedups(methods, spec.baseline, k)])),
  }, null, 2) + '\n');
  return { report, plots };
}
