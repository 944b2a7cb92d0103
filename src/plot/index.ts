// Figures: Vega-Lite specs rendered to SVG by vega and to PNG by sharp.
export { renderFigure, toSvg, svgSize, FONT, PAPER_CONFIG, type RenderedFigure } from './render.js';
export { panel, heatmap, figureSpec, type PanelOptions, type LineSeries, type Shade, type Rule, type Bars, type HeatmapOptions } from './panels.js';
