// Line/bar chart panels on a Canvas: axes with ticks and numbers, a title, axis
// labels, shaded x-spans, vertical markers and a legend.
import { Canvas, type Color } from './canvas.js';

export interface Series {
  name: string;
  x: ArrayLike<number>;
  y: ArrayLike<number>;
  color: Color;
  /** 'line' (default) joins points; 'bars' draws a bar from 0 over [x[i], x[i+1]) (x has y.length + 1 edges) */
  kind?: 'line' | 'bars';
  width?: number;
}

export interface Span {
  from: number;
  to: number;
  color: Color;
  label?: string;
}

export interface Marker {
  x: number;
  color: Color;
  label: string;
}

export interface PanelSpec {
  title: string;
  xLabel?: string;
  yLabel?: string;
  series: Series[];
  spans?: Span[];
  markers?: Marker[];
  xRange?: [number, number];
  yRange?: [number, number];
  legend?: boolean;
}

export interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

const INK: Color = [30, 30, 30];
const GRID: Color = [225, 225, 225];

/** "Nice" tick positions (1, 2, 5 x 10^k steps) covering [lo, hi] with about `count` ticks. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

/** Short tick label: plain for ordinary magnitudes, exponent form for tiny or huge ones. */
export function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1).replace('e+', 'e');
  return String(Number(v.toPrecision(4)));
}

function extent(series: Series[], axis: 'x' | 'y'): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of series) {
    const a = axis === 'x' ? s.x : s.y;
    for (let i = 0; i < a.length; i++) {
      if (!Number.isFinite(a[i])) continue;
      lo = Math.min(lo, a[i]);
      hi = Math.max(hi, a[i]);
    }
    if (axis === 'y' && s.kind === 'bars') lo = Math.min(lo, 0);
  }
  if (!Number.isFinite(lo)) return [0, 1];
  if (hi === lo) return [lo - 0.5 * (Math.abs(lo) || 1), hi + 0.5 * (Math.abs(hi) || 1)];
  return [lo, hi];
}

/** Draws one panel inside `r` (the rect includes room for the labels). */
export function drawPanel(cv: Canvas, r: Rect, spec: PanelSpec, scale = 2): void {
  const th = Canvas.textHeight(scale);
  const [x0, x1] = spec.xRange ?? extent(spec.series, 'x');
  let [y0, y1] = spec.yRange ?? extent(spec.series, 'y');
  if (!spec.yRange) {
    const pad = 0.05 * (y1 - y0);
    y1 += pad;
    if (y0 !== 0) y0 -= pad;
  }
  const yt = niceTicks(y0, y1, 5);
  const xt = niceTicks(x0, x1, 6);
  const yLabW = Math.max(...yt.map((v) => Canvas.textWidth(formatTick(v), scale)));
  const left = r.x + (spec.yLabel ? th + 8 : 0) + yLabW + 10;
  const top = r.y + th + 12;
  const right = r.x + r.w - 10;
  const bottom = r.y + r.h - (spec.xLabel ? 2 * th + 16 : th + 10);
  const pw = right - left;
  const ph = bottom - top;
  const X = (v: number) => left + ((v - x0) / (x1 - x0)) * pw;
  const Y = (v: number) => bottom - ((v - y0) / (y1 - y0)) * ph;

  cv.text(left + (pw - Canvas.textWidth(spec.title, scale)) / 2, r.y + 2, spec.title, INK, scale);
  for (const s of spec.spans ?? []) {
    const a = X(Math.max(x0, s.from));
    const b = X(Math.min(x1, s.to));
    if (b > a) cv.fillRect(a, top, b - a, ph, s.color);
  }
  for (const v of yt) if (v >= y0 && v <= y1) cv.line(left, Y(v), right, Y(v), GRID);
  for (const v of xt) if (v >= x0 && v <= x1) cv.line(X(v), top, X(v), bottom, GRID);

  for (const s of spec.series) {
    if (s.kind === 'bars') {
      for (let i = 0; i < s.y.length; i++) {
        if (!Number.isFinite(s.y[i])) continue;
        const a = X(s.x[i]);
        const b = X(s.x[i + 1]);
        const yy = Y(s.y[i]);
        const base = Y(Math.max(y0, 0));
        cv.fillRect(a + 1, Math.min(yy, base), Math.max(1, b - a - 2), Math.abs(base - yy), s.color);
      }
      continue;
    }
    let prev: [number, number] | undefined;
    for (let i = 0; i < s.y.length; i++) {
      if (!Number.isFinite(s.y[i]) || !Number.isFinite(s.x[i])) {
        prev = undefined;
        continue;
      }
      const p: [number, number] = [X(s.x[i]), Math.max(top, Math.min(bottom, Y(s.y[i])))];
      if (prev) cv.line(prev[0], prev[1], p[0], p[1], s.color, s.width ?? 2);
      prev = p;
    }
  }
  // Marker labels sit at the bottom, one row each, so neighbours and the legend stay readable.
  (spec.markers ?? []).forEach((m, i) => {
    if (m.x < x0 || m.x > x1) return;
    const x = X(m.x);
    for (let y = top; y < bottom; y += 6) cv.line(x, y, x, Math.min(bottom, y + 3), m.color, 2);
    const w = Canvas.textWidth(m.label, scale);
    const lx = x + 4 + w > right ? x - 4 - w : x + 4;
    const ly = bottom - (i + 1) * (th + 6);
    cv.fillRect(lx - 2, ly - 2, w + 4, th + 4, [255, 255, 255, 0.8]);
    cv.text(lx, ly, m.label, m.color, scale);
  });
  // axes, ticks and numbers
  cv.line(left, bottom, right, bottom, INK);
  cv.line(left, top, left, bottom, INK);
  for (const v of yt) {
    if (v < y0 || v > y1) continue;
    const y = Y(v);
    cv.line(left - 5, y, left, y, INK);
    const s = formatTick(v);
    cv.text(left - 8 - Canvas.textWidth(s, scale), y - th / 2, s, INK, scale);
  }
  for (const v of xt) {
    if (v < x0 || v > x1) continue;
    const x = X(v);
    cv.line(x, bottom, x, bottom + 5, INK);
    const s = formatTick(v);
    cv.text(x - Canvas.textWidth(s, scale) / 2, bottom + 8, s, INK, scale);
  }
  if (spec.xLabel) cv.text(left + (pw - Canvas.textWidth(spec.xLabel, scale)) / 2, bottom + th + 14, spec.xLabel, INK, scale);
  if (spec.yLabel) cv.text(r.x + 2, top + (ph + Canvas.textWidth(spec.yLabel, scale)) / 2, spec.yLabel, INK, scale, true);

  if (spec.legend !== false) {
    const entries: { name: string; color: Color; box: boolean }[] = [
      ...spec.series.map((s) => ({ name: s.name, color: s.color, box: s.kind === 'bars' })),
      ...(spec.spans ?? []).filter((s) => s.label).map((s) => ({ name: s.label as string, color: s.color, box: true })),
    ];
    if (entries.length === 0) return;
    const lw = Math.max(...entries.map((e) => Canvas.textWidth(e.name, scale))) + 40;
    const lh = entries.length * (th + 6) + 8;
    const lx = right - lw - 6;
    const ly = top + 6;
    cv.fillRect(lx, ly, lw, lh, [255, 255, 255, 0.85]);
    cv.line(lx, ly, lx + lw, ly, GRID);
    cv.line(lx, ly + lh, lx + lw, ly + lh, GRID);
    entries.forEach((e, i) => {
      const y = ly + 6 + i * (th + 6);
      if (e.box) cv.fillRect(lx + 6, y, 22, th, [e.color[0], e.color[1], e.color[2], Math.max(0.5, (e.color[3] as number) ?? 1)]);
      else cv.line(lx + 6, y + th / 2, lx + 28, y + th / 2, e.color, 3);
      cv.text(lx + 34, y, e.name, INK, scale);
    });
  }
}

/** A figure of panels on a grid (`cols` columns), each cell `cellW` x `cellH` pixels. */
export function figure(panels: PanelSpec[], opts: { cols?: number; cellW?: number; cellH?: number; title?: string; scale?: number } = {}): Canvas {
  const cols = Math.max(1, Math.min(opts.cols ?? 2, panels.length));
  const cellW = opts.cellW ?? 640;
  const cellH = opts.cellH ?? 400;
  const scale = opts.scale ?? 2;
  const head = opts.title ? Canvas.textHeight(scale) + 20 : 0;
  const rows = Math.ceil(panels.length / cols);
  const cv = new Canvas(cols * cellW, rows * cellH + head);
  if (opts.title) cv.text((cv.width - Canvas.textWidth(opts.title, scale)) / 2, 8, opts.title, INK, scale);
  panels.forEach((p, i) => {
    drawPanel(cv, { x: (i % cols) * cellW + 8, y: head + Math.floor(i / cols) * cellH + 8, w: cellW - 16, h: cellH - 16 }, p, scale);
  });
  return cv;
}
