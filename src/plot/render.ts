// Vega-Lite spec -> SVG (vega's headless View, renderer 'none') -> PNG (sharp,
// which draws SVG text with the system's fonts: DejaVu Sans, Debian's
// fonts-dejavu-core). The SVG is kept beside the PNG for papers and slides.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

import { SpeedTrainError } from '../errors.js';

/** Font of every text in a figure; sharp resolves it through fontconfig. */
export const FONT = 'DejaVu Sans';

/** A plain, paper-like look: white background, light grid, readable sizes. */
export const PAPER_CONFIG = {
  font: FONT,
  background: 'white',
  padding: 12,
  view: { stroke: '#888', strokeWidth: 0.8 },
  title: { fontSize: 14, fontWeight: 'bold', anchor: 'middle', offset: 8, subtitleFontSize: 11, subtitleColor: '#444' },
  axis: {
    labelFontSize: 11, titleFontSize: 12, titleFontWeight: 'normal', labelColor: '#222', titleColor: '#111',
    gridColor: '#e6e6e6', domainColor: '#666', tickColor: '#666', labelOverlap: true, labelFlush: false,
  },
  legend: { labelFontSize: 11, titleFontSize: 12, titleFontWeight: 'normal', symbolStrokeWidth: 2.5, labelLimit: 260, orient: 'right' },
  header: { labelFontSize: 12, titleFontSize: 13 },
  concat: { spacing: 28 },
  range: { category: ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'] },
} as const;

export interface RenderedFigure {
  svg: string;
  png: string;
  /** size of the SVG in CSS pixels; the PNG is `scale` times that */
  width: number;
  height: number;
  scale: number;
}

/** The SVG text of a Vega-Lite spec (PAPER_CONFIG under the spec's own config). */
export async function toSvg(spec: TopLevelSpec): Promise<string> {
  const withConfig = { ...spec, config: { ...PAPER_CONFIG, ...(spec.config ?? {}) } } as TopLevelSpec;
  const compiled = compile(withConfig).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Width and height of a vega SVG (its root element's attributes). */
export function svgSize(svg: string): { width: number; height: number } {
  const m = /<svg[^>]*\swidth="([\d.]+)"[^>]*\sheight="([\d.]+)"/.exec(svg);
  if (!m) throw new SpeedTrainError('plot: the rendered SVG has no width/height');
  return { width: Number(m[1]), height: Number(m[2]) };
}

/**
 * Renders `spec` to `<base>.svg` and `<base>.png` (`base` may end in .png or
 * .svg). The PNG is drawn at `scale` times the SVG's size (2: sharp text).
 */
export async function renderFigure(spec: TopLevelSpec, base: string, scale = 2): Promise<RenderedFigure> {
  const stem = base.replace(/\.(png|svg)$/i, '');
  const svg = await toSvg(spec);
  const { width, height } = svgSize(svg);
  mkdirSync(path.dirname(stem), { recursive: true });
  const svgFile = `${stem}.svg`;
  const pngFile = `${stem}.png`;
  writeFileSync(svgFile, svg);
  const { default: sharp } = await import('sharp');
  await sharp(Buffer.from(svg), { density: 72 * scale }).flatten({ background: '#ffffff' }).png().toFile(pngFile);
  return { svg: svgFile, png: pngFile, width, height, scale };
}
