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
import { loadConfig } from '../config/index.js';
import { SpeedTrainError } from '../errors.js';
import path from 'node:path';

import type { Config } from '../config/index.js';
import { figureSpec, panel, renderFigure, type LineSeries } from '../plot/index.js';
import type { MetricsLine } from '../train/index.js';
import { withBands, type Band } from './bands.js';
import { curveKey, type Floor, type MethodResult } from './types.js';
import { lowerIsBetter, METRIC_KEYS, specWithDefaults, type ExperimentSpec, type MetricKey } from './spec.js';
import { flatness, type CurvePoint, type Flatness } from './speedup.js';
import { aggregateSeeds, equalStepRatios, holmAdjust, pairedLogRatioTest, speedupCurve, type PairedTest, type SeedAggregate } from './stats.js';

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
  /** the real-vs-real floors per evaluation size (none for data sets without spare real images) */
  floors?: Floor[];
  /** sample grids beside report.md (file names), one per method: the first seed, the primary sampler, the last checkpoint */
  grids?: string[];
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
  class_accuracy: 'class accuracy of the samples (feature network)',
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

/**
 * Mean loss per time-step bucket over a window [from, to) of a run's
 * metrics.jsonl lines (fractions of the lines; default the second half),
 * weighted by the time steps drawn per bucket.
 */
export function lossPerBucket(file: string, from = 0.5, to = 1): { edges: number[]; loss: (number | null)[]; steps: [number, number] } | null {
  if (!existsSync(file)) return null;
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as MetricsLine);
  if (lines.length === 0) return null;
  const win = lines.slice(Math.floor(lines.length * from), Math.max(Math.floor(lines.length * from) + 1, Math.floor(lines.length * to)));
  const nb = win[0].loss_per_bucket.length;
  const sum = new Array<number>(nb).fill(0);
  const cnt = new Array<number>(nb).fill(0);
  for (const l of win) {
    l.loss_per_bucket.forEach((v, i) => {
      if (v !== null) {
        sum[i] += v * l.t_hist[i];
        cnt[i] += l.t_hist[i];
      }
    });
  }
  return { edges: win[0].bucket_edges, loss: sum.map((s, i) => (cnt[i] > 0 ? s / cnt[i] : null)), steps: [win[0].step, win[win.length - 1].step] };
}

/** The real-vs-real floor of `metric` for the evaluation of `sampler` at `step` (of its sample count); null when none was measured. */
export function floorAt(runs: MethodResult[], floors: Floor[], sampler: string, step: number, metric: MetricKey): number | null {
  const e = runs.flatMap((m) => m.evals).find((x) => x.step === step && x.samples?.[sampler] !== undefined);
  const n = e?.samples?.[sampler];
  const f = floors.find((x) => x.n === n);
  const v = f?.metrics[metric];
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

export interface EndpointTest extends PairedTest {
  method: string;
  step: number;
  /** Holm-adjusted p over the methods compared with the baseline */
  p_holm: number | null;
}

/**
 * The declared primary endpoint: the primary sampler's primary metric at the
 * last checkpoint, each method against the baseline on the per-seed log
 * ratios (paired by seed), with Holm's correction across the methods.
 */
export function primaryEndpoint(c: CurveReport, spec: Pick<ExperimentSpec, 'methods' | 'baseline' | 'ci_level'>): EndpointTest[] {
  const others = spec.methods.filter((m) => m !== spec.baseline);
  const rows = others.flatMap((method) => {
    const r = c.methods[method]?.equal_step_ratio ?? [];
    const last = r[r.length - 1];
    if (!last || last.ci === null) return [];
    return [{ method, step: last.step, ...pairedLogRatioTest(last.per_seed as number[], spec.ci_level) }];
  });
  const adj = holmAdjust(rows.map((x) => x.p));
  return rows.map((x, i) => ({ ...x, p_holm: adj[i] }));
}

/** A curve with at least one value in some run (class accuracy is absent for unconditional models). */
const hasValues = (c: CurveReport): boolean => Object.values(c.methods).some((m) => m.values.some((a) => a.n > 0));

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

const pfmt = (p: number | null): string => (p === null ? 'n/a' : p < 1e-4 ? p.toExponential(1) : p.toFixed(4));

export async function writeReport(out: string, r: ReportInput): Promise<{ report: string; plots: string[] }> {
  const { spec } = r;
  const methods = spec.methods;
  const floors = r.floors ?? [];
  const primary = spec.primary_metric;
  const primarySampler = spec.samplers[0].name;
  const plots: string[] = [];
  const colors = Object.fromEntries(methods.map((m, i) => [m, COLORS[i % COLORS.length]]));
  const level = `${Math.round(spec.ci_level * 100)}%`;
  const nSeeds = spec.seeds.length;

  const curves: CurveReport[] = spec.samplers.flatMap((s) => METRIC_KEYS.map((k) => curveReport(r.methods, spec, s.name, k)));
  const get = (sampler: string, k: MetricKey) => curves.find((c) => c.sampler === sampler && c.metric === k)!;
  // every metric of every sampler that has values, the primary curve first
  const pc = get(primarySampler, primary);
  const shown = [pc, ...curves.filter((c) => c !== pc && hasValues(c))];
  const title = (c: CurveReport) => `${c.sampler}: ${METRIC_TITLE[c.metric]}`;
  const bandNote = nSeeds > 1 ? `, bands: ${level} t-interval over ${nSeeds} seeds` : '';
  const lastStep = Math.max(0, ...r.methods.flatMap((m) => m.evals.map((e) => e.step)));
  const floorLast = (c: CurveReport) => floorAt(r.methods, floors, c.sampler, lastStep, c.metric);

  // 1. metric vs steps, every sampler and metric (a dashed line at the real-vs-real floor of the last evaluation)
  const metricPanels = shown.map((c) => {
    const s = seriesOf(c, 'values', colors);
    const f = floorLast(c);
    return withBands(panel({
      title: `${title(c)} (${c.lower_is_better ? 'lower' : 'higher'} is better)`, xTitle: 'training step', yTitle: c.metric.replace(/^(featnet|pixel)_/, ''),
      lines: s.lines, linesLegend: 'method', colors, width: 320, height: 200,
    }), s.bands, f ?? undefined);
  });
  const metricFig = await renderFigure(figureSpec(metricPanels, {
    cols: 2, title: 'speed-up experiment: metrics vs training steps', subtitle: `EMA weights; mean over seeds${bandNote}; dashed: real-vs-real floor (when measured)`,
  }), path.join(out, 'metric_vs_steps.png'));
  plots.push(metricFig.png);

  // 2. equal-step ratio method / baseline, 3. speed-up curve: the FID and KID curves
  const ratioCurves = shown.filter((c) => c.metric.endsWith('_fid') || c.metric.endsWith('_kid') || c.metric === 'class_accuracy');
  const ratioPanels = ratioCurves.map((c) => {
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

  const speedCurves = ratioCurves.filter((c) => c.metric !== 'class_accuracy');
  const speedPanels = speedCurves.map((c) => {
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

  // 4. per-time-step loss over training (quarters of the run), first seed:
  // baseline vs SpeeD (all methods when there is no 'speed'), as the paper's time-step diagnostics
  const seed0 = r.methods.filter((m) => m.seed === spec.seeds[0]);
  const lossMethods = seed0.filter((m) => m.method === spec.baseline || m.method === 'speed');
  const T = r.base.diffusion.diffusion_steps;
  const lossPanels = [0, 1, 2, 3].map((q) => {
    const lossSeries: LineSeries[] = [];
    let steps = '';
    for (const m of lossMethods.length >= 2 ? lossMethods : seed0) {
      const lb = lossPerBucket(path.join(m.experiment_dir, 'metrics.jsonl'), q / 4, (q + 1) / 4);
      if (!lb) continue;
      steps = `steps ${lb.steps[0]}-${lb.steps[1]}`;
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
    return panel({
      title: `loss per time step, quarter ${q + 1} of training${steps ? ` (${steps})` : ''}, seed ${spec.seeds[0]}`, xTitle: 'time step t (bucket centre)', yTitle: 'loss (w·mse + vb)',
      lines: lossSeries, linesLegend: 'method', colors, xDomain: [0, T], yScale: 'log', width: 320, height: 200,
    });
  });
  const lossFig = await renderFigure(figureSpec(lossPanels, { cols: 2, title: 'training loss per time-step bucket over training' }), path.join(out, 'loss_per_timestep.png'));
  plots.push(lossFig.png);

  const c = r.base;
  const md: string[] = [];
  md.push(`# SpeeD speed-up experiment${r.quick ? ' (--quick: plumbing check only, numbers mean nothing)' : ''}`, '');

  // The declaration first, as it was fixed before the run (experiment.json).
  const ckptSteps = [...new Set(r.methods.flatMap((m) => m.evals.map((e) => e.step)))].sort((a, b) => a - b);
  const classes = Math.max(1, c.model.num_classes);
  const nAt = (k: number) => (c.model.num_classes > 0 ? `${k} per class (${k * classes})` : `${k}`);
  md.push('## Declared before the run', '');
  if (spec.declaration) md.push(`> ${spec.declaration}`, '');
  md.push(`- Primary endpoint: **${METRIC_TITLE[primary]}** with sampler **${primarySampler}** (${spec.samplers[0].sampler} ${spec.samplers[0].steps}) ` +
    `at the last checkpoint (step ${c.max_training_steps}), each method / ${spec.baseline}, per-seed log ratios, ${level} t-interval, ` +
    `two-sided one-sample t-test, Holm-corrected across the ${Math.max(0, methods.length - 1)} comparison${methods.length === 2 ? '' : 's'} with ${spec.baseline}.`);
  md.push(`- Methods: ${methods.join(', ')} (baseline ${spec.baseline}); seeds ${spec.seeds.join(', ')} (paired: the same initialisation, data order and evaluation noise per seed for every method).`);
  md.push(`- Checkpoints: every ${c.ckpt_every} steps to ${c.max_training_steps}; samplers: ${spec.samplers.map((s) => `**${s.name}** (${s.sampler} ${s.steps}${s.sampler === 'ddim' ? `, eta ${s.eta}` : ''}${s.every > 1 ? `, every ${s.every} checkpoints and at the last` : ', every checkpoint'}; ` +
    `${nAt(c.sample.num_per_class)} samples${s.last_num_per_class > 0 ? `, ${nAt(s.last_num_per_class)} at the last` : ''})`).join(', ')}.`);
  md.push(spec.min_feature_accuracy > 0
    ? `- Feature space gate: the feature network's held-out accuracy must be >= ${spec.min_feature_accuracy} (it is ${r.featnet.accuracy.toFixed(4)} on ${r.featnet.heldOutSize} images).`
    : `- Feature space gate: none declared (the feature network's held-out accuracy is ${r.featnet.accuracy.toFixed(4)} on ${r.featnet.heldOutSize} images).`);
  md.push(`- Speed-up factors are read only where ${spec.baseline}'s primary curve is flat: a relative change < ${(spec.flat_tolerance * 100).toFixed(1)}% over the last ${(spec.flat_fraction * 100).toFixed(0)}% of the run.`, '');

  md.push('## Setup', '');
  md.push(`Model ${c.model.name} (depth ${c.model.depth ?? 'preset'}, hidden ${c.model.hidden_size ?? 'preset'}, ${c.model.num_classes > 0 ? `${c.model.num_classes} classes` : 'unconditional'}), ` +
    `data ${c.data.name} ${c.data.image_size}x${c.data.image_size}x${c.data.channels} (data seed ${c.data.data_seed}), ` +
    `batch ${c.data.batch_size}, ${c.max_training_steps} steps, ` +
    `AdamW lr ${c.optimizer.lr} (warm-up ${c.optimizer.warmup_steps}, then constant), EMA ${c.ema.decay}, T = ${c.diffusion.diffusion_steps} (${c.diffusion.schedule}). ` +
    `Evaluations from the EMA weights at steps ${ckptSteps.join(', ')}; reference: ${r.reference}.`, '');
  md.push(`Feature spaces: **${r.featnet.space}** — ${r.featnet.description}; and **${r.pixelSpace}**. ` +
    'Metrics in these spaces compare with each other only, not with Inception FID.', '');
  md.push(`Intervals: two-sided ${level} Student-t over the ${nSeeds} seed${nSeeds === 1 ? '' : 's'} (none with one seed); ` +
    'metric values and steps on the linear scale, ratios and speed-ups on the log scale (geometric mean). ' +
    '"n.r. (k/n)": only k of n seeds reached the score, so no mean is given. Per-seed values are in report.json.', '');
  if (floors.length > 0) {
    md.push('Real-vs-real floor: real images never trained on and disjoint from the reference, as many as an evaluation generates, scored as samples are ' +
      '(no generator can be expected to do better; FID and KID of a finite set are biased by its size, so each size has its own floor):', '');
    const keys = METRIC_KEYS.filter((k) => floors.some((f) => typeof f.metrics[k] === 'number'));
    md.push(`| images | ${keys.join(' | ')} |`, `|---:|${keys.map(() => '---:').join('|')}|`);
    for (const f of floors) md.push(`| ${f.n} | ${keys.map((k) => fmt(f.metrics[k] ?? null)).join(' | ')} |`);
    md.push('');
  } else md.push('Real-vs-real floor: not measured (this data set has no real images to spare beside the reference).', '');
  md.push('| method | sampling | weighting | train s (mean over seeds) |', '|---|---|---|---:|');
  for (const m of methods) {
    const rs = r.methods.filter((x) => x.method === m);
    if (rs.length === 0) continue;
    md.push(`| ${m} | ${rs[0].sampling} | ${rs[0].weighting} | ${(rs.reduce((a, x) => a + x.train_seconds, 0) / rs.length).toFixed(1)} |`);
  }
  md.push('');

  // The primary endpoint
  const ep = primaryEndpoint(pc, spec);
  md.push(`## Result: the primary endpoint (${title(pc)} at step ${ep[0]?.step ?? c.max_training_steps})`, '');
  const pf = floorLast(pc);
  md.push(`${spec.baseline}: ${cell(pc.methods[spec.baseline]?.values.at(-1))}; real-vs-real floor ${fmt(pf)}.`, '');
  md.push(`| method | value | method / ${spec.baseline} (geometric mean [${level} t]) | per seed | p | p (Holm) |`, '|---|---:|---:|---|---:|---:|');
  for (const e of ep) {
    const v = pc.methods[e.method].values.at(-1);
    md.push(`| ${e.method} | ${cell(v)} | ${fmt(e.ratio.mean)} [${fmt(e.ratio.lo)}, ${fmt(e.ratio.hi)}] | ${e.log_ratios.map((x) => Math.exp(x).toFixed(3)).join(', ')} | ${pfmt(e.p)} | ${pfmt(e.p_holm)} |`);
  }
  if (ep.length === 0) md.push('| (no method has a value in every seed at the last checkpoint) | | | | | |');
  md.push('');

  // Speed-up, only where the baseline has flattened
  const base = pc.methods[spec.baseline]?.values.filter((a) => a.ci !== null).map((a) => ({ step: a.step, value: a.ci!.mean })) ?? [];
  const flat: Flatness | null = flatness(base, spec.flat_fraction, spec.flat_tolerance);
  md.push(`## Speed-up on ${title(pc)}, at ${spec.baseline}'s last evaluation`, '');
  if (flat === null) md.push(`Not read: ${spec.baseline}'s curve has fewer than two evaluations.`, '');
  else if (!flat.flat) {
    md.push(`**Not read**: ${spec.baseline}'s mean curve changed by ${(flat.change * 100).toFixed(2)}% between steps ${flat.from} and ${flat.to} ` +
      `(declared criterion: < ${(spec.flat_tolerance * 100).toFixed(1)}% over the last ${(spec.flat_fraction * 100).toFixed(0)}% of the run), so it has not flattened and ` +
      'a steps-to-reach factor would measure where a still-improving baseline had got to. The speed-up curve below is shown for completeness.', '');
  } else {
    md.push(`${spec.baseline}'s curve is flat by the declared criterion (${(flat.change * 100).toFixed(2)}% change between steps ${flat.from} and ${flat.to}). ` +
      `Steps ${spec.baseline} needed for its final score ÷ steps the method needed to reach that score (first crossing, linear interpolation between evaluations):`, '');
    md.push(...speedupLines(pc), '');
  }

  for (const cr of shown) {
    const f = (s: number) => floorAt(r.methods, floors, cr.sampler, s, cr.metric);
    md.push(`## ${title(cr)}`, '');
    md.push('Metric value (mean [t-interval] over seeds; last column: the real-vs-real floor of the same number of images):', '', withFloor(aggregateTable(cr, 'values', methods, 'step'), f), '');
    md.push(`Equal-step ratio (method / ${spec.baseline} at the same step; the comparison of the paper's tables):`, '', aggregateTable(cr, 'equal_step_ratio', methods, 'step'), '');
    if (cr.metric.endsWith('_fid') || cr.metric.endsWith('_kid')) {
      md.push(`Speed-up curve (for every ${spec.baseline} evaluation S: ${spec.baseline}'s steps to its score at S ÷ the method's steps to that score):`, '', aggregateTable(cr, 'speedup', methods, 'S', 'x'), '');
    }
  }
  md.push('## Plots', '');
  for (const p of plots) md.push(`![${path.basename(p, '.png')}](${path.basename(p)})`, '');
  md.push('The per-time-step loss is the training loss as logged (metrics.jsonl `loss_per_bucket`, in four quarters of training): ' +
    "for weighted methods its mse term includes the method's weights.", '');
  const grids = r.grids ?? [];
  if (grids.length > 0) {
    md.push('## Samples', '', `Seed ${spec.seeds[0]}, ${primarySampler}, step ${lastStep}, the first samples of each class (a row per class), as scored:`, '');
    for (const g of grids) md.push(`![${path.basename(g, '.png')}](${path.basename(g)})`, '');
  }
  const trainS = r.methods.reduce((a, m) => a + m.train_seconds, 0);
  const drawS = r.methods.reduce((a, m) => a + m.evals.reduce((b, e) => b + Object.values(e.seconds).reduce((x, y) => x + y, 0), 0), 0);
  md.push(`Time: the runs' training ${(trainS / 60).toFixed(1)} min and sampling ${(drawS / 60).toFixed(1)} min, summed over the ${r.methods.length} runs ` +
    `(runs drawn with --generate-only in parallel processes overlap in wall time); the command that wrote this report ${(r.seconds / 60).toFixed(1)} min ` +
    '(everything not reused from earlier invocations: the feature network, the reference, the scoring).', '');
  const report = path.join(out, 'report.md');
  writeFileSync(report, md.join('\n'));
  writeFileSync(path.join(out, 'report.json'), JSON.stringify({
    spec, featnet: r.featnet, pixel_space: r.pixelSpace, reference: r.reference, seconds: r.seconds, quick: r.quick,
    intervals: `two-sided ${level} Student-t over seeds; values and steps linear, ratios and speed-ups on the log scale (geometric mean); null unless every seed has a value`,
    floors, grids: grids.map((g) => path.basename(g)), primary_endpoint: ep, baseline_flatness: flat,
    curves: Object.fromEntries(curves.map((cr) => [curveKey(cr.sampler, cr.metric), cr])),
    runs: r.methods, config: r.base,
  }, null, 2) + '\n');
  return { report, plots };
}

/** Adds a "real floor" column to a values table (rows start with their step). */
function withFloor(table: string, floorOf: (step: number) => number | null): string {
  const lines = table.split('\n');
  return lines.map((l, i) => {
    if (i === 0) return `${l} real floor |`;
    if (i === 1) return `${l}---:|`;
    const m = /^\| (\d+) \|/.exec(l);
    return m ? `${l} ${fmt(floorOf(Number(m[1])))} |` : l;
  }).join('\n');
}

/**
 * Writes report.md, report.json and the plots of a finished experiment folder
 * again from its report.json (with the current report code): the runs'
 * evaluations are all it needs, plus the base config (saved in report.json;
 * older reports have it from the config file that experiment.json names,
 * resolved against the current directory). The loss plot reads each run's
 * metrics.jsonl where it still exists.
 */
export async function rerenderReport(out: string): Promise<{ report: string; plots: string[] }> {
  const file = path.join(out, 'report.json');
  if (!existsSync(file)) throw new SpeedTrainError(`${file}: missing; re-rendering needs the report.json of a finished experiment`);
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new SpeedTrainError(`${file}: not readable JSON (${(e as Error).message})`);
  }
  for (const k of ['spec', 'runs', 'featnet', 'pixel_space', 'reference', 'seconds']) {
    if (!(k in j)) throw new SpeedTrainError(`${file}: has no '${k}'; expected a report.json written by speed-train experiment`);
  }
  const spec = specWithDefaults(j.spec as Partial<ExperimentSpec>);
  let base = j.config as Config | undefined;
  if (!base) {
    const ej = path.join(out, 'experiment.json');
    if (!existsSync(ej)) throw new SpeedTrainError(`${file}: has no 'config' and ${ej} is missing: cannot tell the experiment's settings`);
    const e = JSON.parse(readFileSync(ej, 'utf8')) as { config: string; overrides?: string[] };
    const dir = path.dirname(path.resolve(e.config));
    base = loadConfig(path.join(dir, `${spec.methods[0]}.yaml`), { overrides: e.overrides ?? [], phase: 'train' }).config;
  }
  return writeReport(out, {
    spec, methods: j.runs as MethodResult[], quick: j.quick === true, featnet: j.featnet as ReportInput['featnet'], pixelSpace: j.pixel_space as string,
    reference: j.reference as string, base, seconds: j.seconds as number, floors: (j.floors as Floor[] | undefined) ?? [],
    grids: ((j.grids as string[] | undefined) ?? []).filter((g) => existsSync(path.join(out, g))),
  });
}
