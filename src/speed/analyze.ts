// The `analyze` command: what a schedule and a SpeeD config do to training.
// Figure: sqrt(1 - abar_t) and its increments with the three areas shaded, the
// time-step distribution p(t) and the weights w(t), and (when a run's
// metrics.jsonl exists) the measured loss per time-step bucket.
//
// Areas, from the variance increment h_t = gradient(1 - abar)_t:
//   acceleration  [0, peak)   h grows;
//   deceleration  [peak, m)   h falls, the process still moves;
//   convergence   [m, T)      sqrt(1 - abar) hardly moves (its increment < 1e-4).
// (The increment of sqrt(1 - abar) itself is largest at t = 0 for the common
// schedules, which would leave no acceleration area; the variance increment
// rises first, as the paper's figure shows.)
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { betasFor, type ScheduleName } from '../diffusion/schedule.js';
import { makeCoefs, type DiffusionCoefs } from '../diffusion/coefs.js';
import {
  meaningfulBoundary,
  sqrt1mAbarIncrement,
  varianceIncrement,
  makeTimestepSampler,
  lossWeights,
  type SpeedOptions,
} from './index.js';
import { figureSpec, panel, renderFigure, type Rule, type Shade } from '../plot/index.js';
import { DataError } from '../errors.js';

export interface AnalyzeOptions {
  schedule: ScheduleName;
  T: number;
  speed: SpeedOptions;
  /** a run's metrics.jsonl; ignored when the file does not exist */
  metricsPath?: string;
  /** the PNG to write, or a folder (then <out>/speed-analysis.png) */
  out: string;
  /** batch size for the dual samplers' per-batch distribution (default 256) */
  batchSize?: number;
  /** training step at which to show step-dependent samplers (clts); default 0 */
  step?: number;
  /** how many of the last logged lines to average the per-bucket loss over (default 10) */
  lastLines?: number;
}

export interface Areas {
  /** first step of the deceleration area (the peak of the variance increment) */
  peak: number;
  /** first step of the convergence area (the meaningful-step boundary) */
  m: number;
}

/** The three areas of a schedule. */
export function areasOf(coefs: DiffusionCoefs): Areas {
  const h = varianceIncrement(coefs);
  let peak = 0;
  for (let t = 1; t < h.length; t++) if (h[t] > h[peak]) peak = t;
  const m = meaningfulBoundary(coefs);
  return { peak: Math.min(peak, m), m };
}

/** Shares of probability mass p receives in [0, peak), [peak, m), [m, T). */
export function areaShares(p: ArrayLike<number>, a: Areas): [number, number, number] {
  const s: [number, number, number] = [0, 0, 0];
  for (let t = 0; t < p.length; t++) s[t < a.peak ? 0 : t < a.m ? 1 : 2] += p[t];
  return s;
}

export interface BucketLoss {
  edges: number[];
  loss: number[];
  lines: number;
}

/**
 * Mean loss per time-step bucket over the last `last` lines of metrics.jsonl that
 * carry `loss_per_bucket` and `bucket_edges` (with the same edges as the newest such
 * line). Buckets logged as null (no sample) are skipped in the mean. A malformed
 * last line (a run still writing) is ignored; any other malformed line is an error.
 */
export function readBucketLoss(path: string, last = 10): BucketLoss | undefined {
  const lines = readFileSync(path, 'utf8').split('\n');
  while (lines.length > 0 && lines[lines.length - 1].trim() === '') lines.pop();
  const rows: { edges: number[]; loss: (number | null)[] }[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let o: unknown;
    try {
      o = JSON.parse(line);
    } catch {
      if (i === lines.length - 1) return;
      throw new DataError(path, `line ${i + 1} is not valid JSON`);
    }
    const r = o as { loss_per_bucket?: unknown; bucket_edges?: unknown };
    if (r.loss_per_bucket === undefined && r.bucket_edges === undefined) return;
    const okArr = (a: unknown, nulls: boolean) =>
      Array.isArray(a) && a.every((v) => (typeof v === 'number' && Number.isFinite(v)) || (nulls && v === null));
    if (!okArr(r.loss_per_bucket, true) || !okArr(r.bucket_edges, false)) {
      throw new DataError(path, `line ${i + 1}: loss_per_bucket and bucket_edges must be arrays of numbers`);
    }
    const edges = r.bucket_edges as number[];
    const loss = r.loss_per_bucket as (number | null)[];
    if (edges.length !== loss.length + 1) {
      throw new DataError(path, `line ${i + 1}: bucket_edges must have one more entry than loss_per_bucket (${edges.length} vs ${loss.length})`);
    }
    rows.push({ edges, loss });
  });
  if (rows.length === 0) return undefined;
  const edges = rows[rows.length - 1].edges;
  const same = rows.filter((r) => r.edges.length === edges.length && r.edges.every((v, i) => v === edges[i])).slice(-last);
  const sum = new Array(edges.length - 1).fill(0);
  const cnt = new Array(edges.length - 1).fill(0);
  for (const r of same) {
    r.loss.forEach((v, i) => {
      if (v === null) return;
      sum[i] += v;
      cnt[i]++;
    });
  }
  return { edges, loss: sum.map((s, i) => (cnt[i] > 0 ? s / cnt[i] : NaN)), lines: same.length };
}

const AREA_COLORS = { acceleration: '#fdae6b', deceleration: '#9ecae1', convergence: '#bdbdbd' };
const M_COLOR = '#d62728';
const TAU_COLOR = '#7b3294';

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export async function runAnalyze(opts: AnalyzeOptions): Promise<{ text: string; png: string; svg: string }> {
  const { schedule, T, speed } = opts;
  const coefs = makeCoefs(betasFor(schedule, T));
  const areas = areasOf(coefs);
  const { m, peak } = areas;
  const n = opts.batchSize ?? 256;
  const step = opts.step ?? 0;
  const sampler = makeTimestepSampler(speed, coefs);
  const p = sampler.marginal(n, step);
  const w = lossWeights(speed, coefs);
  const ts = Array.from({ length: T }, (_, t) => t);
  const g = sqrt1mAbarIncrement(coefs);
  const h = varianceIncrement(coefs);
  const usesTau = speed.sampling === 'speed' || speed.sampling === 'no_dual' || speed.weighting === 'speed';

  const shades: Shade[] = [
    { from: 0, to: peak, label: 'acceleration', color: AREA_COLORS.acceleration },
    { from: peak, to: m, label: 'deceleration', color: AREA_COLORS.deceleration },
    { from: m, to: T, label: 'convergence', color: AREA_COLORS.convergence },
  ];
  const rules: Rule[] = [{ x: m, label: `m = ${m}`, color: M_COLOR }, ...(usesTau ? [{ x: speed.tau, label: `τ = ${speed.tau}`, color: TAU_COLOR }] : [])];
  const pScaled = Array.from(p, (v) => v * T);
  const shares = areaShares(p, areas);
  const uniformShares = areaShares(new Float64Array(T).fill(1 / T), areas);
  const xDomain: [number, number] = [0, T];
  const common = { xTitle: 'time step t', xDomain, shades, rules };

  const panels = [
    panel({
      ...common,
      title: `${schedule} schedule, T = ${T}: √(1 − ᾱₜ) and its three areas`,
      yTitle: '√(1 − ᾱₜ)',
      lines: [{ name: '√(1 − ᾱₜ)', x: ts, y: coefs.sqrt1mAbar }],
      yZero: true,
    }),
    panel({
      ...common,
      title: 'increments per step',
      yTitle: 'increment',
      lines: [
        { name: 'Δ √(1 − ᾱₜ)', x: ts, y: g },
        { name: 'Δ (1 − ᾱₜ)', x: ts, y: h },
      ],
      linesLegend: 'increment of',
      yZero: true,
    }),
    panel({
      ...common,
      title: `time-step distribution: sampling = ${speed.sampling}${sampler.name === 'clts' ? ` at step ${step}` : ''} (batch ${n})`,
      yTitle: 'p(t) · T  (uniform = 1)',
      lines: [
        { name: speed.sampling, x: ts, y: pScaled },
        { name: 'uniform', x: [0, T - 1], y: [1, 1] },
      ],
      linesLegend: 'sampling',
      colors: { uniform: '#7f7f7f', [speed.sampling]: '#2ca02c' },
      yZero: true,
    }),
    panel({
      ...common,
      title: `loss weights: weighting = ${speed.weighting}`,
      yTitle: 'w(t)',
      lines: [{ name: speed.weighting, x: ts, y: w }],
      colors: { [speed.weighting]: '#9467bd' },
      yZero: true,
    }),
  ];

  const lines = [
    `schedule ${schedule}, T = ${T}`,
    `meaningful-step boundary m = ${m} (first t with d sqrt(1-abar) < 1e-4, plus 1)`,
    `tau = ${speed.tau}${usesTau ? '' : ' (not used by this sampling/weighting)'}`,
    `areas: acceleration [0, ${peak}), deceleration [${peak}, ${m}), convergence [${m}, ${T})`,
    `sampling ${speed.sampling} (batch ${n}): acceleration ${pct(shares[0])}, deceleration ${pct(shares[1])}, convergence ${pct(shares[2])}` +
      ` (uniform: ${pct(uniformShares[0])}, ${pct(uniformShares[1])}, ${pct(uniformShares[2])})`,
    `weighting ${speed.weighting}: w in [${Math.min(...w).toPrecision(4)}, ${Math.max(...w).toPrecision(4)}]`,
  ];

  if (opts.metricsPath && existsSync(opts.metricsPath)) {
    const b = readBucketLoss(opts.metricsPath, opts.lastLines ?? 10);
    if (b) {
      panels.push(panel({
        ...common,
        rules: [rules[0]],
        title: `measured loss per time-step bucket (mean of the last ${b.lines} logged lines)`,
        yTitle: 'training loss',
        bars: { edges: b.edges, values: b.loss },
        xDomain: [Math.min(0, b.edges[0]), Math.max(T, b.edges[b.edges.length - 1])],
      }));
      lines.push(`measured loss per bucket (${opts.metricsPath}, last ${b.lines} lines): ` + b.loss.map((v, i) => `[${b.edges[i]},${b.edges[i + 1]}) ${Number.isFinite(v) ? v.toPrecision(4) : '-'}`).join(', '));
    } else {
      lines.push(`${opts.metricsPath}: no line with loss_per_bucket yet`);
    }
  }

  const png = opts.out.toLowerCase().endsWith('.png') ? opts.out : join(opts.out, 'speed-analysis.png');
  mkdirSync(dirname(png), { recursive: true });
  const fig = await renderFigure(
    figureSpec(panels, { cols: 2, title: `SpeeD analysis: ${schedule} schedule, T = ${T}`, subtitle: `sampling = ${speed.sampling}, weighting = ${speed.weighting}` }),
    png,
  );
  lines.push(`figure: ${fig.png} (and ${fig.svg})`);
  return { text: lines.join('\n'), png: fig.png, svg: fig.svg };

}
