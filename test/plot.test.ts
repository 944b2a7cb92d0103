// Figures: Vega-Lite -> SVG -> PNG. The SVG is read back here: its text
// elements (with their absolute positions, from the nested translate()s), the
// axis titles of every panel, the legend entries, and that no tick label
// leaves the image.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { PNG } from 'pngjs';

import { figureSpec, heatmap, panel, renderFigure } from '../src/plot/index.js';
import { plotRun, readMetricsLines } from '../src/plot/training.js';
import { DataError } from '../src/errors.js';

export interface SvgText {
  text: string;
  /** class of the enclosing vega mark group, e.g. "role-axis-title" */
  role: string;
  x: number;
  y: number;
  fontSize: number;
  anchor: string;
  rotated: boolean;
  fontFamily: string;
}

/** Every <text> of a vega SVG with its absolute anchor point. */
export function svgTexts(svg: string): { width: number; height: number; texts: SvgText[]; axes: number } {
  const root = /<svg[^>]*\swidth="([\d.]+)"[^>]*\sheight="([\d.]+)"/.exec(svg);
  assert.ok(root, 'svg root with width and height');
  const stack: { dx: number; dy: number; role: string }[] = [{ dx: 0, dy: 0, role: '' }];
  const texts: SvgText[] = [];
  let axes = 0;
  const tag = /<(\/?)([a-zA-Z]+)([^>]*?)(\/?)>([^<]*)/g;
  const translate = (attrs: string): [number, number, boolean] => {
    const t = /transform="([^"]*)"/.exec(attrs);
    if (!t) return [0, 0, false];
    const m = /^translate\(([-\d.e]+),\s*([-\d.e]+)\)/.exec(t[1]);
    return [m ? Number(m[1]) : 0, m ? Number(m[2]) : 0, /rotate/.test(t[1])];
  };
  for (let m = tag.exec(svg); m; m = tag.exec(svg)) {
    const [, close, name, attrs, selfClose, content] = m;
    if (name === 'g') {
      if (close) { stack.pop(); continue; }
      const [dx, dy] = translate(attrs);
      const top = stack[stack.length - 1];
      const cls = /class="([^"]*)"/.exec(attrs)?.[1] ?? '';
      const role = /role-[a-z-]+/.exec(cls)?.[0] ?? top.role;
      // an axis with a domain line (Vega-Lite draws the grid as a second, bare axis)
      if (/(^|\s)role-axis-domain(\s|$)/.test(cls)) axes++;
      const entry = { dx: top.dx + dx, dy: top.dy + dy, role };
      if (!selfClose) stack.push(entry);
      continue;
    }
    if (name === 'text' && !close) {
      const [dx, dy, rotated] = translate(attrs);
      const top = stack[stack.length - 1];
      const num = (a: string, d: number) => Number(new RegExp(`\\s${a}="([-\\d.]+)`).exec(attrs)?.[1] ?? d);
      texts.push({
        text: content.replace(/&amp;/g, '&').replace(/&lt;/g, '<').replace(/&gt;/g, '>'),
        role: top.role,
        x: top.dx + dx + num('x', 0),
        y: top.dy + dy + num('y', 0),
        fontSize: Number(/font-size="([\d.]+)/.exec(attrs)?.[1] ?? 11),
        anchor: /text-anchor="([a-z]+)"/.exec(attrs)?.[1] ?? 'start',
        rotated,
        fontFamily: /font-family="([^"]*)"/.exec(attrs)?.[1] ?? '',
      });
    }
  }
  return { width: Number(root[1]), height: Number(root[2]), texts, axes };
}

/** The horizontal extent of a text, from DejaVu Sans' widest glyphs (0.7 em) on the safe side. */
function extent(t: SvgText): [number, number] {
  const w = 0.7 * t.fontSize * t.text.length;
  if (t.anchor === 'middle') return [t.x - w / 2, t.x + w / 2];
  if (t.anchor === 'end') return [t.x - w, t.x];
  return [t.x, t.x + w];
}

/** Every text (tick labels, titles, legends) lies inside the image; font is DejaVu Sans. */
function assertInside(svg: ReturnType<typeof svgTexts>): void {
  for (const t of svg.texts) {
    assert.match(t.fontFamily, /DejaVu Sans/, `font of "${t.text}"`);
    if (t.rotated) {
      // a rotated axis title: its anchor and half its length (vertically) inside
      const h = (0.7 * t.fontSize * t.text.length) / 2;
      assert.ok(t.x - t.fontSize >= 0 && t.y - h >= 0 && t.y + h <= svg.height, `rotated "${t.text}" at ${t.x},${t.y}`);
      continue;
    }
    const [a, b] = extent(t);
    assert.ok(a >= 0 && b <= svg.width, `"${t.text}" (${t.role}) spans x ${a.toFixed(0)}..${b.toFixed(0)} of ${svg.width}`);
    assert.ok(t.y - t.fontSize >= 0 && t.y + 0.3 * t.fontSize <= svg.height, `"${t.text}" (${t.role}) at y ${t.y} of ${svg.height}`);
  }
}

const byRole = (s: ReturnType<typeof svgTexts>, role: string) => s.texts.filter((t) => t.role === role).map((t) => t.text);

test('a two-panel figure: axis titles on every panel, legend entries, ticks inside the image, PNG at twice the SVG size', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'plot-'));
  try {
    const xs = Array.from({ length: 200 }, (_, i) => i * 5);
    const spec = figureSpec([
      panel({
        title: 'two curves', xTitle: 'time step t', yTitle: 'value',
        lines: [{ name: 'sine', x: xs, y: xs.map((x) => Math.sin(x / 100)) }, { name: 'cosine', x: xs, y: xs.map((x) => Math.cos(x / 100)) }],
        linesLegend: 'curve', shades: [{ from: 0, to: 300, label: 'early', color: '#fdae6b' }], rules: [{ x: 642, label: 'm = 642', color: '#d62728' }],
        xDomain: [0, 1000],
      }),
      panel({ title: 'bars', xTitle: 'bucket', yTitle: 'loss', bars: { edges: [0, 10, 20, 30], values: [3, null, 2] } }),
    ], { cols: 2, title: 'test figure' });
    const f = await renderFigure(spec, path.join(dir, 'sub', 'fig.png'));
    assert.equal(f.png, path.join(dir, 'sub', 'fig.png'));
    assert.equal(f.svg, path.join(dir, 'sub', 'fig.svg'));
    const svg = svgTexts(readFileSync(f.svg, 'utf8'));
    assert.deepEqual([svg.width, svg.height], [f.width, f.height]);
    const png = PNG.sync.read(readFileSync(f.png));
    assert.deepEqual([png.width, png.height], [2 * f.width, 2 * f.height]);
    // both panels: an x and a y axis, each titled
    assert.equal(svg.axes, 4);
    assert.deepEqual(byRole(svg, 'role-axis-title').sort(), ['bucket', 'loss', 'time step t', 'value']);
    assert.deepEqual(byRole(svg, 'role-title-text').sort(), ['bars', 'test figure', 'two curves']);
    assert.deepEqual(byRole(svg, 'role-legend-title').sort(), ['area', 'curve', 'marker']);
    assert.deepEqual(byRole(svg, 'role-legend-label').sort(), ['cosine', 'early', 'm = 642', 'sine']);
    const ticks = byRole(svg, 'role-axis-label');
    for (const t of ['0', '200', '1000', '30']) assert.ok(ticks.includes(t), `tick ${t} in ${ticks.join(',')}`);
    assertInside(svg);
    // the positions are real: the texts spread over the figure, the first y tick sits left of the first panel
    const tx = svg.texts.map((t) => t.x);
    assert.ok(Math.max(...tx) - Math.min(...tx) > svg.width / 2, 'texts spread over the width');
    const firstTick = svg.texts.find((t) => t.role === 'role-axis-label' && t.text === '0')!;
    assert.ok(firstTick.x > 20 && firstTick.x < svg.width / 2, `x tick "0" at ${firstTick.x}`);
    // legends lie right of their panel's data: every legend label right of the x axis' last tick
    const lastTick = svg.texts.find((t) => t.role === 'role-axis-label' && t.text === '1000')!;
    for (const t of svg.texts.filter((x) => x.role === 'role-legend-label' && ['sine', 'cosine', 'early', 'm = 642'].includes(x.text))) {
      assert.ok(t.x > lastTick.x, `legend "${t.text}" at x ${t.x} is right of the data (last tick at ${lastTick.x})`);
    }
    // the PNG has ink: not a blank page
    let dark = 0;
    for (let i = 0; i < png.data.length; i += 4) if (png.data[i] < 80 && png.data[i + 1] < 80 && png.data[i + 2] < 80) dark++;
    assert.ok(dark > 2000, `dark pixels ${dark}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a heatmap has both axis titles and a colour legend', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'plot-'));
  try {
    const cells = [];
    for (let s = 0; s < 5; s++) for (let b = 0; b < 4; b++) cells.push({ x0: s * 10, x1: s * 10 + 10, y0: b * 25, y1: b * 25 + 25, v: 1 + s + b });
    const f = await renderFigure(figureSpec([heatmap({ title: 'h', xTitle: 'step', yTitle: 't', colorTitle: 'loss', cells, log: true })]), path.join(dir, 'h.svg'));
    assert.ok(existsSync(path.join(dir, 'h.png')));
    const svg = svgTexts(readFileSync(f.svg, 'utf8'));
    assert.deepEqual(byRole(svg, 'role-axis-title').sort(), ['step', 't']);
    assert.deepEqual(byRole(svg, 'role-legend-title'), ['loss']);
    assertInside(svg);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function fakeMetrics(file: string, n: number, T = 1000): void {
  const lines: string[] = [];
  for (let i = 1; i <= n; i++) {
    const edges = Array.from({ length: 21 }, (_, b) => (b * T) / 20);
    lines.push(JSON.stringify({
      step: 10 * i, epoch: 0, loss: 1 / i, mse: 0.8 / i, vb: 0.2 / i, images_per_sec: 30 + i, lr: 1e-3, grad_norm: 2 / i, skipped: 0,
      t_hist: edges.slice(1).map((_, b) => (b < 14 ? 10 : 2)), loss_per_bucket: edges.slice(1).map((_, b) => (b === 7 && i === 2 ? null : (0.5 + 1 / i) / (b + 1))), bucket_edges: edges, time: 0,
    }));
  }
  writeFileSync(file, lines.join('\n') + '\n');
}

test('speed-train plot: curves, loss per time step and the t histogram, each with titled axes and no text outside', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'plot-'));
  try {
    fakeMetrics(path.join(dir, 'metrics.jsonl'), 12);
    const r = await plotRun(dir);
    assert.deepEqual(r.figures.map((f) => path.basename(f.png)), ['curves.png', 'loss_per_timestep.png', 't_histogram.png']);
    assert.match(r.text, /12 lines, steps 10\.\.120/);
    const titles: string[][] = [];
    for (const f of r.figures) {
      assert.equal(path.dirname(f.png), path.join(dir, 'plots'));
      const svg = svgTexts(readFileSync(f.svg, 'utf8'));
      assertInside(svg);
      const png = PNG.sync.read(readFileSync(f.png));
      assert.deepEqual([png.width, png.height], [2 * svg.width, 2 * svg.height]);
      const axisTitles = byRole(svg, 'role-axis-title');
      assert.equal(axisTitles.length, svg.axes, 'every axis titled');
      titles.push(axisTitles);
      if (path.basename(f.png) === 'curves.png') assert.deepEqual(byRole(svg, 'role-legend-label'), ['loss', 'mse', 'vb']);
      if (path.basename(f.png) === 'loss_per_timestep.png') {
        assert.deepEqual(byRole(svg, 'role-legend-label').filter((t) => t.startsWith('step')), ['step 10', 'step 40', 'step 70', 'step 90', 'step 120']);
      }
    }
    assert.equal(titles[0].length, 8, 'four curve panels with two axes each');
    assert.deepEqual(titles[2].sort(), ['density × T  (uniform = 1)', 'time step t']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('readMetricsLines: a half-written last line is dropped, other bad lines are errors naming the file and line', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'plot-'));
  try {
    const f = path.join(dir, 'metrics.jsonl');
    fakeMetrics(f, 3);
    writeFileSync(f, readFileSync(f, 'utf8') + '{"step": 40, "lo');
    assert.equal(readMetricsLines(f).length, 3);
    writeFileSync(f, '{"step": 1}\n{"step": 2}\n');
    assert.throws(() => readMetricsLines(f), (e: unknown) => e instanceof DataError && /metrics\.jsonl: line 1: "loss" must be a number/.test(e.message));
    writeFileSync(f, 'nope\n{}\n');
    assert.throws(() => readMetricsLines(f), /line 1 is not valid JSON/);
    writeFileSync(f, '');
    assert.throws(() => readMetricsLines(f), /has no metrics line yet/);
    assert.throws(() => readMetricsLines(path.join(dir, 'none.jsonl')), /not found/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('speed-train plot from the command line: figures into -o, a missing metrics.jsonl is a one-line error', async () => {
  const { spawnSync } = await import('node:child_process');
  const cli = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.resolve('src/cli.ts'), ...args], { encoding: 'utf8' });
  const dir = mkdtempSync(path.join(tmpdir(), 'plot-'));
  try {
    fakeMetrics(path.join(dir, 'metrics.jsonl'), 4);
    const out = path.join(dir, 'figs');
    const r = cli(['plot', dir, '-o', out]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /figure: .*figs\/curves\.png \(and curves\.svg\)/);
    for (const f of ['curves', 'loss_per_timestep', 't_histogram']) for (const e of ['png', 'svg']) assert.ok(existsSync(path.join(out, `${f}.${e}`)), `${f}.${e}`);
    const bad = cli(['plot', path.join(dir, 'nothing')]);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^speed-train: error: .*nothing\/metrics\.jsonl: not found/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
