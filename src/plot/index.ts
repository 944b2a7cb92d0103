// Raster plotting on pngjs: a canvas with an embedded bitmap font, and chart panels.
export { Canvas, type Color } from './canvas.js';
export { drawPanel, figure, niceTicks, formatTick, type PanelSpec, type Series, type Span, type Marker, type Rect } from './chart.js';
