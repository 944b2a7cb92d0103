// `speed-train plot <experiment_dir>`: figures of a run from its metrics.jsonl
// (loss curves, loss per time step over training, the time-step histogram, and
// FID against the training step when the run evaluated during training).
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

import { DataError } from '../errors.js';
import type { EvalLine } from '../train/evaluation.js';
import type { MetricsLine } from '../train/metrics.js';
import { figureSpec, heatmap, panel, type LineSeries } from './panels.js';
import { renderFigure, type RenderedFigure } from './render.js';

/** metrics.jsonl larger than this is refused (a run logs ~1 KiB a line). */
const MAX_BYTES = 512 * 1024 * 1024;

const NUMBER_KEYS = ['step', 'loss', 'mse', 'vb', 'images_per_sec', 'lr', 'grad_norm', 'skipped'] as const;

/** An evaluation during training as metrics.jsonl holds it (evaluate.every). */
export interface EvalPoint {
  step: number;
  eval: EvalLine;
}

/** The training lines of a metrics.jsonl (see readRunLog). */
export function readMetricsLines(file: string): MetricsLine[] {
  return readRunLog(file).lines;
}

/**
 * The lines of a metrics.jsonl: training intervals, and the evaluations during
 * training ({"step", "eval": {...}}). A malformed last line (a run still writing)
 * is dropped; any other malformed line is a DataError naming the line.
 */
export function readRunLog(file: string): { lines: MetricsLine[]; evals: EvalPoint[] } {
  if (!existsSync(file)) throw new DataError(file, 'not found (a run writes metrics.jsonl into its experiment_dir)');
  const size = statSync(file).size;
  if (size > MAX_BYTES) throw new DataError(file, `${size} bytes is more than the ${MAX_BYTES} this reads`);
  const raw = readFileSync(file, 'utf8').split('\n');
  while (raw.length > 0 && raw[raw.length - 1].trim() === '') raw.pop();
  const out: MetricsLine[] = [];
  const evals: EvalPoint[] = [];
  raw.forEach((line, i) => {
    if (line.trim() === '') return;
    const last = i === raw.length - 1;
    let o: unknown;
    try {
      o = JSON.parse(line);
    } catch {
      if (last) return;
      throw new DataError(file, `line ${i + 1} is not valid JSON`);
    }
    const r = o as Record<string, unknown>;
    if (r.eval !== undefined) {
      const e = r.eval as Record<string, unknown> | null;
      if (typeof r.step !== 'number' || typeof e !== 'object' || e === null || typeof e.fid !== 'number' || typeof e.feature_space !== 'string') {
        throw new DataError(file, `line ${i + 1}: an evaluation line needs "step" and "eval" with a numeric "fid" and a "feature_space"`);
      }
      evals.push(r as unknown as EvalPoint);
      return;
    }
    for (const k of NUMBER_KEYS) {
      // JSON has no NaN: a non-finite figure was written as null
      if (!(typeof r[k] === 'number' || r[k] === null)) throw new DataError(file, `line ${i + 1}: "${k}" must be a number, found ${JSON.stringify(r[k])}`);
    }
    const hist = r.t_hist;
    const edges = r.bucket_edges;
    const lpb = r.loss_per_bucket;
    const nums = (a: unknown, nulls: boolean) => Array.isArray(a) && a.every((v) => typeof v === 'number' || (nulls && v === null));
    if (!nums(hist, false) || !nums(edges, false) || !nums(lpb, true)) {
      throw new DataError(file, `line ${i + 1}: t_hist, bucket_edges and loss_per_bucket must be arrays of numbers`);
    }
    if ((edges as number[]).length !== (hist as number[]).length + 1 || (lpb as unknown[]).length !== (hist as number[]).length) {
      throw new DataError(file, `line ${i + 1}: bucket_edges must have one entry more than t_hist and loss_per_bucket`);
    }
    out.push(r as unknown as MetricsLine);
  });
  if (out.length === 0) throw new DataError(file, 'has no metrics line yet');
  return { lines: out, evals };
}

export interface PlotResult {
  figures: RenderedFigure[];
  text: string;
}

const num = (v: number | null): number => (v === null ? NaN : v);

/** Writes curves, loss_per_timestep and t_histogram (.svg + .png) into `outDir`. */
export async function plotRun(expDir: string, outDir = path.join(expDir, 'plots')): Promise<PlotResult> {
  const file = path.join(expDir, 'metrics.jsonl');
  const { lines, evals } = readRunLog(file);
  const steps = lines.map((l) => l.step);
  const name = path.basename(path.resolve(expDir));
  const figures: RenderedFigure[] = [];
  const text: string[] = [`${file}: ${lines.length} lines, steps ${steps[0]}..${steps[steps.length - 1]}`];

  // 1. curves
  const terms: LineSeries[] = (['loss', 'mse', 'vb'] as const).map((k) => ({ name: k, x: steps, y: lines.map((l) => num(l[k])) }));
  const curvePanels = [
    panel({ title: 'training loss and its terms', xTitle: 'training step', yTitle: 'mean per sample (log)', lines: terms, linesLegend: 'term', yScale: 'log' }),
    panel({ title: 'gradient norm (before clipping)', xTitle: 'training step', yTitle: '‖g‖₂', lines: [{ name: 'grad norm', x: steps, y: lines.map((l) => num(l.grad_norm)) }], yZero: true }),
    panel({ title: 'learning rate', xTitle: 'training step', yTitle: 'lr', lines: [{ name: 'lr', x: steps, y: lines.map((l) => num(l.lr)) }], yZero: true }),
    panel({ title: 'throughput', xTitle: 'training step', yTitle: 'images / s', lines: [{ name: 'images/s', x: steps, y: lines.map((l) => num(l.images_per_sec)) }], yZero: true }),
  ];
  const skipped = lines.reduce((a, l) => a + (l.skipped ?? 0), 0);
  figures.push(await renderFigure(figureSpec(curvePanels, { cols: 2, title: `training curves: ${name}`, subtitle: `${lines.length} logged intervals${skipped ? `, ${skipped} skipped steps` : ''}` }), path.join(outDir, 'curves.png')));

  // 2. loss per time step: a heatmap over training and a family of curves
  const cells: { x0: number; x1: number; y0: number; y1: number; v: number }[] = [];
  lines.forEach((l, i) => {
    const x0 = i === 0 ? Math.max(0, 2 * l.step - (lines[1]?.step ?? 2 * l.step)) : lines[i - 1].step;
    l.loss_per_bucket.forEach((v, b) => {
      if (v !== null) cells.push({ x0, x1: l.step, y0: l.bucket_edges[b], y1: l.bucket_edges[b + 1], v });
    });
  });
  const picks = [...new Set([0, 0.25, 0.5, 0.75, 1].map((f) => Math.round(f * (lines.length - 1))))];
  const family: LineSeries[] = picks.map((i) => {
    const l = lines[i];
    const xs: number[] = [];
    const ys: number[] = [];
    l.loss_per_bucket.forEach((v, b) => {
      if (v !== null) {
        xs.push((l.bucket_edges[b] + l.bucket_edges[b + 1]) / 2);
        ys.push(v);
      }
    });
    return { name: `step ${l.step}`, x: xs, y: ys };
  });
  const T = lines[lines.length - 1].bucket_edges[lines[lines.length - 1].bucket_edges.length - 1];
  const gradient = ['#c6dbef', '#6baed6', '#2171b5', '#08519c', '#08306b'];
  figures.push(await renderFigure(figureSpec([
    heatmap({ title: 'loss per time-step bucket over training (white: not sampled)', xTitle: 'training step', yTitle: 'time step t', colorTitle: 'loss (log)', cells, log: true }),
    panel({
      title: 'loss per time step at five points of training', xTitle: 'time step t (bucket centre)', yTitle: 'loss (log)', lines: family, linesLegend: 'logged at',
      colors: Object.fromEntries(family.map((f, i) => [f.name, gradient[Math.round((i * (gradient.length - 1)) / Math.max(1, family.length - 1))]])),
      yScale: 'log', xDomain: [0, T],
    }),
  ], { cols: 2, title: `loss per time step: ${name}` }), path.join(outDir, 'loss_per_timestep.png')));

  // 3. time-step histogram: share of samples per bucket over the whole run
  const nb = lines[lines.length - 1].t_hist.length;
  const edges = lines[lines.length - 1].bucket_edges;
  const total = new Array<number>(nb).fill(0);
  for (const l of lines) if (l.t_hist.length === nb) l.t_hist.forEach((c, b) => { total[b] += c; });
  const n = total.reduce((a, b) => a + b, 0);
  // density relative to uniform: (share of samples) / (share of the t range)
  const density = total.map((c, b) => (n > 0 ? c / n / ((edges[b + 1] - edges[b]) / T) : 0));
  figures.push(await renderFigure(figureSpec([
    panel({
      title: `sampled time steps over the run (${n.toLocaleString('en')} samples)`, xTitle: 'time step t', yTitle: 'density × T  (uniform = 1)',
      bars: { edges, values: density }, lines: [{ name: 'uniform', x: [0, T], y: [1, 1] }], linesLegend: 'reference', colors: { uniform: '#d62728' },
      xDomain: [0, T], width: 480,
    }),
  ], { cols: 1 }), path.join(outDir, 't_histogram.png')));

  // 4. FID during training, one line per feature space (values of different spaces do not compare)
  if (evals.length > 0) {
    const spaces = [...new Set(evals.map((e) => e.eval.feature_space))];
    const fid: LineSeries[] = spaces.map((sp) => {
      const es = evals.filter((e) => e.eval.feature_space === sp);
      return { name: sp, x: es.map((e) => e.step), y: es.map((e) => e.eval.fid) };
    });
    const last = evals[evals.length - 1];
    text.push(`FID at step ${last.step}: ${last.eval.fid.toPrecision(5)} (${last.eval.feature_space}, ${last.eval.num_samples} samples, ${last.eval.sampler})`);
    figures.push(await renderFigure(figureSpec([
      panel({ title: 'FID of the EMA weights during training', xTitle: 'training step', yTitle: 'FID (log)', lines: fid, linesLegend: 'feature space', yScale: 'log' }),
    ], { cols: 1, title: `FID vs step: ${name}`, subtitle: `${evals.length} evaluations of ${last.eval.num_samples} samples (${last.eval.sampler})` }), path.join(outDir, 'fid.png')));
  }

  for (const f of figures) text.push(`figure: ${f.png} (and ${path.basename(f.svg)})`);
  return { figures, text: text.join('\n') };
}
