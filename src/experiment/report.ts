// report.md, report.json and the plots of the speed-up experiment.
//
// Per curve (an evaluation sampler's metric, e.g. ddpm250/featnet_fid) and
// method, over the seeds (src/experiment/stats.ts):
//   values            the metric at every evaluation step: mean and t-interval
//   equal_step_ratio  method / baseline at the same step (the paper's tables):
//                     geometric mean and t-interval of the log ratios
//   speedup           for every baseline evaluation S: baseline steps / steps
//                     the method needs to reach the baseline's score at S
//   method_steps      those steps themselves (mean and t-interval)
// with each seed's value kept in `per_seed`.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import type { Config } from '../config/index.js';
import { figureSpec, panel, renderFigure, type LineSeries } from '../plot/index.js';
import type { MetricsLine } from '../train/index.js';
import { withBands, type Band } from './bands.js';
import { curveKey, type MethodResult } from './types.js';
import { lowerIsBetter, METRIC_KEYS, type ExperimentSpec, type MetricKey } from './spec.js';
import { type CurvePoint } from './speedup.js';
import { aggregateSeeds, equalStepRatios, speedupCurve, type SeedAggregate } from './stats.js';

export interface ReportInput {
  spec: ExperimentSpec;
  /** every (seed, method) run */
  methods: MethodResult[];
  quick: boolean;
  featnet: { file: string; accuracy: number; heldOutSize: number; space: string; description: string };
  pixelSpace: string;
  reference: string;
  base: Config;
  seconds: number;
}

// the baseline in black, the methods in distinct colours, the same on every panel
const COLORS = ['#222222', '#d62728', '#1f77b4', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

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

export function curveOf(m: MethodResult, key: string): CurvePoint[] {
  return m.evals.filter((e) => typeof e.metrics[key] === 'number' && Number.isFinite(e.metrics[key])).map((e) => ({ step: e.step, value: e.metrics[key] as number }));
}

function fmt(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return 'n/a';
  if (v !== 0 && Math.abs(v) < 1e-3) return v.toExponential(2);
  return v.toFixed(Math.abs(v) >= 100 ? 1 : Math.abs(v) >= 10 ? 2 : 3);
}

export interface MethodCurves {
  values: SeedAggregate[];
  equal_step_ratio: SeedAggregate[];
  speedup: SeedAggregate[];
  method_steps: SeedAggregate[];
  /** per speed-up step, the seeds whose factor is only a lower bound (the method was there at its first evaluation) */
  speedup_lower_bound: { step: number; per_seed: boolean[] }[];
}

/** The aggregate kinds of MethodCurves (tables and plots). */
export type AggregateKind = 'values' | 'equal_step_ratio' | 'speedup' | 'method_steps';

export interface CurveReport {
  sampler: string;
  metric: MetricKey;
  lower_is_better: boolean;
  baseline: string;
  seeds: number[];
  methods: Record<string, MethodCurves>;
}

/** The statistics of one curve for every method over the seeds (pure: from the runs' evals). */
export function curveReport(runs: MethodResult[], spec: Pick<ExperimentSpec, 'methods' | 'baseline' | 'seeds' | 'ci_level'>, sampler: string, metric: MetricKey): CurveReport {
  const key = curveKey(sampler, metric);
  const low = lowerIsBetter(metric);
  const run = (seed: number, method: string) => runs.find((r) => r.seed === seed && r.method === method);
  const methods: Record<string, MethodCurves> = {};
  for (const method of spec.methods) {
    const values: { step: number; value: number | null }[][] = [];
    const ratios: { step: number; value: number | null }[][] = [];
    const factors: { step: number; value: number | null }[][] = [];
    const steps: { step: number; value: number | null }[][] = [];
    const bounds = new Map<number, boolean[]>();
    for (const seed of spec.seeds) {
      const m = run(seed, method);
      const b = run(seed, spec.baseline);
      const mc = m ? curveOf(m, key) : [];
      const bc = b ? curveOf(b, key) : [];
      values.push(mc);
      ratios.push(equalStepRatios(bc, mc).map((p) => ({ step: p.step, value: p.ratio })));
      const sc = bc.length > 0 ? speedupCurve(bc, mc, low) : [];
      factors.push(sc.map((p) => ({ step: p.step, value: p.factor })));
      steps.push(sc.map((p) => ({ step: p.step, value: p.methodSteps })));
      for (const p of sc) bounds.set(p.step, [...(bounds.get(p.step) ?? []), p.lowerBound]);
    }
    methods[method] = {
      values: aggregateSeeds(values, 'linear', spec.ci_level),
      equal_step_ratio: aggregateSeeds(ratios, 'log', spec.ci_level),
      speedup: aggregateSeeds(factors, 'log', spec.ci_level),
      method_steps: aggregateSeeds(steps, 'linear', spec.ci_level),
      speedup_lower_bound: [...bounds.entries()].sort((a, b) => a[0] - b[0]).map(([step, per_seed]) => ({ step, per_seed })),
    };
  }
  return { sampler, metric, lower_is_better: low, baseline: spec.baseline, seeds: spec.seeds, methods };
}

/** "0.721 [0.650, 0.800]", "0.721" (one seed), "n.r. (1/3)" when some seed has no value, ">= 1.000x ..." for a lower bound. */
export function cell(a: SeedAggregate | undefined, suffix = '', lowerBound = false): string {
  if (!a) return '';
  if (a.ci === null) return a.n === 0 ? 'n.r.' : `n.r. (${a.n}/${a.per_seed.length})`;
  const m = `${lowerBound ? '>= ' : ''}${fmt(a.ci.mean)}${suffix}`;
  return a.ci.lo === null ? m : `${m} [${fmt(a.ci.lo)}, ${fmt(a.ci.hi)}]`;
}

/** A table, rows = steps, columns = methods, of one aggregate kind. */
export function aggregateTable(c: CurveReport, kind: AggregateKind, methods: string[], stepTitle: string, suffix = ''): string {
  const steps = [...new Set(methods.flatMap((m) => c.methods[m][kind].map((a) => a.step)))].sort((a, b) => a - b);
  const head = `| ${stepTitle} | ${methods.join(' | ')} |`;
  const sep = `|---:|${methods.map(() => '---:').join('|')}|`;
  const bound = (m: string, s: number) => kind === 'speedup' && m !== c.baseline && (c.methods[m].speedup_lower_bound.find((b) => b.step === s)?.per_seed.some((x) => x) ?? false);
  const rows = steps.map((s) => `| ${s} | ${methods.map((m) => cell(c.methods[m][kind].find((a) => a.step === s), suffix, bound(m, s))).join(' | ')} |`);
  const note = kind === 'speedup' && rows.some((r) => r.includes('>= '))
    ? ['', '">=": in some seed the method was already at the score at its first evaluation; nothing earlier was measured, so the factor is a lower bound.']
    : [];
  return [head, sep, ...rows, ...note].join('\n');
}

/** One line per method: the speed-up at the baseline's last evaluation (the old single factor), over seeds. */
export function speedupLines(c: CurveReport): string[] {
  return Object.entries(c.methods).map(([method, m]) => {
    const last = m.speedup[m.speedup.length - 1];
    const steps = m.method_steps[m.method_steps.length - 1];
    if (!last) return `- ${method}: n/a (no baseline evaluations)`;
    const seeds = `${last.per_seed.length} seed${last.per_seed.length === 1 ? '' : 's'}`;
    if (last.ci === null) {
      return `- ${method}: not reached in ${last.per_seed.length - last.n} of ${seeds} (per seed: ${last.per_seed.map((v) => (v === null ? 'n.r.' : `${v.toFixed(2)}x`)).join(', ')})`;
    }
    const ci = last.ci.lo === null ? '' : ` [${last.ci.lo.toFixed(2)}, ${last.ci.hi!.toFixed(2)}]`;
    const lb = method !== c.baseline && (m.speedup_lower_bound[m.speedup_lower_bound.length - 1]?.per_seed.some((x) => x) ?? false);
    if (lb) return `- ${method}: **>= ${last.ci.mean.toFixed(2)}x**${ci} (a lower bound: already at ${c.baseline}'s final score at its first evaluation in some seed; per seed ${last.per_seed.map((v) => `${v!.toFixed(2)}x`).join(', ')})`;
    return `- ${method}: **${last.ci.mean.toFixed(2)}x**${ci} (geometric mean over ${seeds}; reaches ${c.baseline}'s step-${last.step} score at step ${steps?.ci ? steps.ci.mean.toFixed(0) : 'n/a'} on average; per seed ${last.per_seed.map((v) => `${v!.toFixed(2)}x`).join(', ')})`;
  });
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

/** Mean lines and interval bands of one aggregate kind for every method. */
function seriesOf(c: CurveReport, kind: AggregateKind, colors: Record<string, string>): { lines: LineSeries[]; bands: Band[] } {
  const lines: LineSeries[] = [];
  const bands: Band[] = [];
  for (const [method, m] of Object.entries(c.methods)) {
    const pts = m[kind].filter((a) => a.ci !== null);
    lines.push({ name: method, x: pts.map((a) => a.step), y: pts.map((a) => a.ci!.mean) });
    const b = pts.filter((a) => a.ci!.lo !== null);
    if (b.length > 0) bands.push({ name: method, color: colors[method], x: b.map((a) => a.step), lo: b.map((a) => a.ci!.lo!), hi: b.map((a) => a.ci!.hi!) });
  }
  return { lines, bands };
}

export async function writeReport(out: string, r: ReportInput): Promise<{ report: string; plots: string[] }> {
  const { spec } = r;
  const methods = spec.methods;
  const primary = spec.primary_metric;
  const primarySampler = spec.samplers[0].name;
  const plots: string[] = [];
  const colors = Object.fromEntries(methods.map((m, i) => [m, COLORS[i % COLORS.length]]));
  const level = `${Math.round(spec.ci_level * 100)}%`;
  const nSeeds = spec.seeds.length;

  const curves: CurveReport[] = spec.samplers.flatMap((s) => METRIC_KEYS.map((k) => curveReport(r.methods, spec, s.name, k)));
  const get = (sampler: string, k: MetricKey) => curves.find((c) => c.sampler === sampler && c.metric === k)!;
  // the curves shown in the plots and the markdown: FID in both spaces for every sampler
  const second: MetricKey = primary === 'pixel_fid' ? 'featnet_fid' : primary === 'featnet_fid' ? 'pixel_fid' : 'featnet_fid';
  const shown = spec.samplers.flatMap((s) => [get(s.name, primary), get(s.name, second)]);
  const title = (c: CurveReport) => `${c.sampler}: ${METRIC_TITLE[c.metric]}`;
  const bandNote = nSeeds > 1 ? `, bands: ${level} t-interval over ${nSeeds} seeds` : '';

  // 1. metric vs steps: the shown curves, then the primary sampler's other metrics
  const metricCurves = [...shown, ...METRIC_KEYS.filter((k) => k !== primary && k !== second).map((k) => get(primarySampler, k))];
  const metricPanels = metricCurves.map((c) => {
    const s = seriesOf(c, 'values', colors);
    return withBands(panel({
      title: `${title(c)} (${c.lower_is_better ? 'lower' : 'higher'} is better)`, xTitle: 'training step', yTitle: c.metric.replace(/^(featnet|pixel)_/, ''),
      lines: s.lines, linesLegend: 'method', colors, width: 320, height: 200,
    }), s.bands);
  });
  const metricFig = await renderFigure(figureSpec(metricPanels, {
    cols: 2, title: 'speed-up experiment: metrics vs training steps', subtitle: `EMA weights; mean over seeds${bandNote}`,
  }), path.join(out, 'metric_vs_steps.png'));
  plots.push(metricFig.png);

  // 2. equal-step ratio method / baseline
  const ratioPanels = shown.map((c) => {
    const s = seriesOf(c, 'equal_step_ratio', colors);
    return withBands(panel({
      title: `${title(c)}: ${c.lower_is_better ? 'below 1 = better' : 'above 1 = better'}`, xTitle: 'training step', yTitle: `method / ${spec.baseline}`,
      lines: s.lines, linesLegend: 'method', colors, width: 320, height: 200,
    }), s.bands, 1);
  });
  const ratioFig = await renderFigure(figureSpec(ratioPanels, {
    cols: 2, title: `equal-step ratio: metric of the method / metric of ${spec.baseline} at the same step`, subtitle: `geometric mean over seeds${bandNote}`,
  }), path.join(out, 'equal_step_ratio.png'));
  plots.push(ratioFig.png);

  // 3. speed-up curve
  const speedPanels = shown.map((c) => {
    const s = seriesOf(c, 'speedup', colors);
    return withBands(panel({
      title: `${title(c)}`, xTitle: `${spec.baseline} evaluation step S`, yTitle: `speed-up (${spec.baseline} steps / method steps)`,
      lines: s.lines, linesLegend: 'method', colors, width: 320, height: 200,
    }), s.bands, 1);
  });
  const speedFig = await renderFigure(figureSpec(speedPanels, {
    cols: 2, title: `speed-up curve: steps to reach ${spec.baseline}'s score at S`, subtitle: `geometric mean over seeds${bandNote}; a point is missing where some seed never reached it`,
  }), path.join(out, 'speedup_curve.png'));
  plots.push(speedFig.png);

  // 4. per-time-step loss of the first seed: baseline vs SpeeD (all methods when there is no 'speed')
  const seed0 = r.methods.filter((m) => m.seed === spec.seeds[0]);
  const lossMethods = seed0.filter((m) => m.method === spec.baseline || m.method === 'speed');
  const lossSeries: LineSeries[] = [];
  for (const m of lossMethods.length >= 2 ? lossMethods : seed0) {
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
      title: `training loss per time step (second half of training, seed ${spec.seeds[0]})`, xTitle: 'time step t (bucket centre)', yTitle: 'loss (w·mse + vb)',
      lines: lossSeries, linesLegend: 'method', colors, xDomain: [0, T], yScale: 'log', width: 520, height: 300,
    })], { cols: 1 }),
    path.join(out, 'loss_per_timestep.png'),
  );
  plots.push(lossFig.png);

  const c = r.base;
  const md: string[] = [];
  md.push(`# SpeeD speed-up experiment${r.quick ? ' (--quick: plumbing check only, numbers mean nothing)' : ''}`, '');
  md.push(`Model ${c.model.name} (depth ${c.model.depth ?? 'preset'}, hidden ${c.model.hidden_size ?? 'preset'}, ${c.model.num_classes > 0 ? `${c.model.num_classes} classes` : 'unconditional'}), ` +
    `data ${c.data.name} ${c.data.image_size}x${c.data.image_size}x${c.data.channels} (data seed ${c.data.data_seed}), ` +
    `batch ${c.data.batch_size}, ${c.max_training_steps} steps, seeds ${spec.seeds.join(', ')}, ` +
    `AdamW lr ${c.optimizer.lr} (warm-up ${c.optimizer.warmup_steps}, then constant), EMA ${c.ema.decay}, T = ${c.diffusion.diffusion_steps} (${c.diffusion.schedule}).`, '');
  const per = c.model.num_classes > 0 ? `${c.sample.num_per_class} per class (${c.sample.num_per_class * c.model.num_classes})` : `${c.sample.num_per_class}`;
  md.push(`Evaluation every ${c.ckpt_every} steps from the EMA weights, ${per} samples per sampler and evaluation, the same starting noise at every evaluation of a seed; ` +
    `samplers: ${spec.samplers.map((s) => `**${s.name}** (${s.sampler} ${s.steps}${s.sampler === 'ddim' ? `, eta ${s.eta}` : ''}${s.every > 1 ? `, every ${s.every}th checkpoint and the last` : ''})`).join(', ')}; ` +
    `reference: ${r.reference}.`, '');
  md.push(`Feature spaces: **${r.featnet.space}** — ${r.featnet.description}; and **${r.pixelSpace}**. ` +
    'Metrics in these spaces compare with each other only, not with Inception FID.', '');
  md.push(`Intervals: two-sided ${level} Student-t over the ${nSeeds} seed${nSeeds === 1 ? '' : 's'} (none with one seed); ` +
    'metric values and steps on the linear scale, ratios and speed-ups on the log scale (geometric mean). ' +
    '"n.r. (k/n)": only k of n seeds reached the score, so no mean is given. Per-seed values are in report.json.', '');
  md.push('| method | sampling | weighting | train s (mean over seeds) |', '|---|---|---|---:|');
  for (const m of methods) {
    const rs = r.methods.filter((x) => x.method === m);
    if (rs.length === 0) continue;
    md.push(`| ${m} | ${rs[0].sampling} | ${rs[0].weighting} | ${(rs.reduce((a, x) => a + x.train_seconds, 0) / rs.length).toFixed(1)} |`);
  }
  md.push('');
  const pc = get(primarySampler, primary);
  md.push(`## Speed-up on ${title(pc)}, at ${spec.baseline}'s last evaluation`, '');
  md.push(`Steps ${spec.baseline} needed for its final score ÷ steps the method needed to reach that score (first crossing, linear interpolation between evaluations).`, '');
  md.push(...speedupLines(pc), '');
  for (const cr of shown) {
    md.push(`## ${title(cr)}`, '');
    md.push(`Equal-step ratio (method / ${spec.baseline} at the same step; the comparison of the paper's tables):`, '', aggregateTable(cr, 'equal_step_ratio', methods, 'step'), '');
    md.push(`Speed-up curve (for every ${spec.baseline} evaluation S: ${spec.baseline}'s steps to its score at S ÷ the method's steps to that score):`, '', aggregateTable(cr, 'speedup', methods, 'S', 'x'), '');
    md.push('Metric value:', '', aggregateTable(cr, 'values', methods, 'step'), '');
  }
  for (const k of METRIC_KEYS.filter((x) => x !== primary && x !== second)) {
    md.push(`## ${title(get(primarySampler, k))}`, '', aggregateTable(get(primarySampler, k), 'values', methods, 'step'), '');
  }
  md.push('## Plots', '');
  for (const p of plots) md.push(`![${path.basename(p, '.png')}](${path.basename(p)})`, '');
  md.push('The per-time-step loss is the training loss as logged (metrics.jsonl `loss_per_bucket`, second half of training): ' +
    "for weighted methods its mse term includes the method's weights.", '');
  md.push(`Total time ${(r.seconds / 60).toFixed(1)} min.`, '');
  const report = path.join(out, 'report.md');
  writeFileSync(report, md.join('\n'));
  writeFileSync(path.join(out, 'report.json'), JSON.stringify({
    spec, featnet: r.featnet, pixel_space: r.pixelSpace, reference: r.reference, seconds: r.seconds,
    intervals: `two-sided ${level} Student-t over seeds; values and steps linear, ratios and speed-ups on the log scale (geometric mean); null unless every seed has a value`,
    curves: Object.fromEntries(curves.map((cr) => [curveKey(cr.sampler, cr.metric), cr])),
    runs: r.methods,
  }, null, 2) + '\n');
  return { report, plots };
}
