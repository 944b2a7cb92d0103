// Vega-Lite building blocks for the project's figures: a panel of lines over
// shaded x-spans with vertical marker rules and optional bars, a heatmap, and
// a grid of panels. Every panel gets both axis titles; legends sit to the
// right of their panel, outside the data.
import type { TopLevelSpec } from 'vega-lite';

export interface LineSeries {
  name: string;
  x: ArrayLike<number>;
  y: ArrayLike<number>;
}

export interface Shade {
  from: number;
  to: number;
  label: string;
  color: string;
}

export interface Rule {
  x: number;
  label: string;
  color: string;
}

export interface Bars {
  /** bucket edges: bar i spans [edges[i], edges[i+1]) */
  edges: number[];
  values: (number | null)[];
  color?: string;
}

export interface PanelOptions {
  title: string;
  xTitle: string;
  yTitle: string;
  lines?: LineSeries[];
  /** legend title for the lines; no legend for a single line unless set */
  linesLegend?: string;
  /** fixed colour per series name (the same method in the same colour on every panel) */
  colors?: Record<string, string>;
  shades?: Shade[];
  shadesLegend?: string;
  rules?: Rule[];
  bars?: Bars;
  xDomain?: [number, number];
  yScale?: 'linear' | 'log';
  /** include 0 in the y axis (default: false for lines, true for bars) */
  yZero?: boolean;
  width?: number;
  height?: number;
}

// A spec fragment; vega-lite's own types are too strict for specs built up piecewise.
type Spec = Record<string, unknown>;

const DEFAULT_COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

/** Rows {x, y, series} of the finite points (positive ones on a log axis). */
function lineRows(lines: LineSeries[], log: boolean): Spec[] {
  const rows: Spec[] = [];
  for (const s of lines) {
    const n = Math.min(s.x.length, s.y.length);
    for (let i = 0; i < n; i++) {
      const x = s.x[i];
      const y = s.y[i];
      if (Number.isFinite(x) && Number.isFinite(y) && (!log || y > 0)) rows.push({ x, y, series: s.name });
    }
  }
  return rows;
}

/** One panel: shades, bars, lines and rules layered on shared x and y axes. */
export function panel(o: PanelOptions): Spec {
  const log = o.yScale === 'log';
  const xScale: Spec = { nice: false, zero: false, ...(o.xDomain ? { domain: o.xDomain } : {}) };
  const x = (field: string): Spec => ({ field, type: 'quantitative', title: o.xTitle, scale: xScale, axis: { tickCount: 6, format: '~r' } });
  const yScale: Spec = log ? { type: 'log' } : { type: 'linear', zero: o.yZero ?? o.bars !== undefined };
  const y = (field: string): Spec => ({ field, type: 'quantitative', title: o.yTitle, scale: yScale });
  const layers: Spec[] = [];

  if (o.shades && o.shades.length > 0) {
    layers.push({
      data: { values: o.shades.map((s) => ({ from: s.from, to: s.to, label: s.label })) },
      mark: { type: 'rect', opacity: 0.45 },
      encoding: {
        x: x('from'),
        x2: { field: 'to' },
        fill: {
          field: 'label', type: 'nominal', title: o.shadesLegend ?? 'area',
          scale: { domain: o.shades.map((s) => s.label), range: o.shades.map((s) => s.color) },
          legend: { orient: 'right', symbolType: 'square', symbolOpacity: 0.6 },
        },
      },
    });
  }
  if (o.bars) {
    const b = o.bars;
    const rows = b.values.flatMap((v, i) => (v === null || !Number.isFinite(v) || (log && v <= 0) ? [] : [{ lo: b.edges[i], hi: b.edges[i + 1], v }]));
    layers.push({
      data: { values: rows },
      mark: { type: 'rect', color: b.color ?? '#4c78a8', stroke: 'white', strokeWidth: 0.5 },
      encoding: { x: x('lo'), x2: { field: 'hi' }, y: y('v'), ...(log ? {} : { y2: { datum: 0 } }) },
    });
  }
  const lines = o.lines ?? [];
  if (lines.length > 0) {
    const names = lines.map((s) => s.name);
    const range = names.map((n, i) => o.colors?.[n] ?? DEFAULT_COLORS[i % DEFAULT_COLORS.length]);
    const legend = lines.length > 1 || o.linesLegend !== undefined ? { title: o.linesLegend ?? 'series', orient: 'right' } : null;
    layers.push({
      data: { values: lineRows(lines, log) },
      mark: { type: 'line', strokeWidth: 2, clip: true, interpolate: 'linear' },
      encoding: { x: x('x'), y: y('y'), stroke: { field: 'series', type: 'nominal', scale: { domain: names, range }, legend, title: o.linesLegend ?? 'series' } },
    });
  }
  if (o.rules && o.rules.length > 0) {
    layers.push({
      data: { values: o.rules.map((r) => ({ x: r.x, label: r.label })) },
      mark: { type: 'rule', strokeDash: [6, 4], strokeWidth: 1.8 },
      encoding: {
        x: x('x'),
        // a second stroke scale (independent below) so markers get their own legend
        stroke: {
          field: 'label', type: 'nominal', title: 'marker',
          scale: { domain: o.rules.map((r) => r.label), range: o.rules.map((r) => r.color) },
          legend: { orient: 'right', symbolDash: [4, 2], symbolType: 'stroke' },
        },
      },
    });
  }
  if (layers.length === 0) {
    // an empty panel still shows its axes and titles
    layers.push({ data: { values: [{ x: 0, y: 0 }] }, mark: { type: 'point', opacity: 0 }, encoding: { x: x('x'), y: y('y') } });
  }
  return {
    title: o.title,
    width: o.width ?? 380,
    height: o.height ?? 230,
    layer: layers,
    resolve: { scale: { stroke: 'independent' }, legend: { stroke: 'independent' } },
  };
}

export interface HeatmapOptions {
  title: string;
  xTitle: string;
  yTitle: string;
  colorTitle: string;
  /** cells [x0, x1) x [y0, y1) with a value */
  cells: { x0: number; x1: number; y0: number; y1: number; v: number }[];
  log?: boolean;
  width?: number;
  height?: number;
}

/** A heatmap of rectangular cells with a colour-bar legend. */
export function heatmap(o: HeatmapOptions): Spec {
  const cells = o.cells.filter((c) => Number.isFinite(c.v) && (!o.log || c.v > 0));
  return {
    title: o.title,
    width: o.width ?? 380,
    height: o.height ?? 230,
    data: { values: cells },
    mark: { type: 'rect' },
    encoding: {
      x: { field: 'x0', type: 'quantitative', title: o.xTitle, scale: { nice: false, zero: false }, axis: { format: '~r', tickCount: 6 } },
      x2: { field: 'x1' },
      y: { field: 'y0', type: 'quantitative', title: o.yTitle, scale: { nice: false, zero: false }, axis: { format: '~r' } },
      y2: { field: 'y1' },
      color: {
        field: 'v', type: 'quantitative', title: o.colorTitle,
        scale: { type: o.log ? 'log' : 'linear', scheme: 'viridis' },
        legend: { orient: 'right', gradientLength: Math.min(200, (o.height ?? 230) - 20) },
      },
    },
  };
}

/** Panels in rows of `cols`, each with its own scales and legends, under a figure title. */
export function figureSpec(panels: Spec[], opts: { cols?: number; title?: string; subtitle?: string } = {}): TopLevelSpec {
  const cols = Math.max(1, opts.cols ?? 2);
  const rows: Spec[] = [];
  for (let i = 0; i < panels.length; i += cols) rows.push({ hconcat: panels.slice(i, i + cols), resolve: { scale: { stroke: 'independent', fill: 'independent', color: 'independent' } } });
  const body: Spec = rows.length === 1 ? rows[0] : { vconcat: rows, resolve: { scale: { stroke: 'independent', fill: 'independent', color: 'independent' } } };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    ...(opts.title ? { title: { text: opts.title, ...(opts.subtitle ? { subtitle: opts.subtitle } : {}), fontSize: 15 } } : {}),
    ...body,
  } as unknown as TopLevelSpec;
}
