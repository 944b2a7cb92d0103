// Interval bands under the lines of a plot panel (src/plot's panel has lines,
// shades and rules, not y-intervals): one translucent area per method between
// the lower and upper bound of its interval over seeds, drawn below the lines,
// and an optional horizontal reference line (1 for ratios and speed-ups).
type Spec = Record<string, unknown>;

export interface Band {
  name: string;
  color: string;
  x: number[];
  lo: number[];
  hi: number[];
}

/** The panel spec with band layers first (behind the lines), points on the lines and a dashed line at y = hline. */
export function withBands(panelSpec: Spec, bands: Band[], hline?: number): Spec {
  const layers = [...((panelSpec.layer as Spec[] | undefined) ?? [])];
  // Vega-Lite takes a layered chart's axes from its first layer: the bands
  // (drawn first, under the lines) reuse the lines' x and y encodings (title,
  // scale, axis) so the axes look as they would without them.
  const lines = layers.find((l) => (l.mark as Spec | undefined)?.type === 'line');
  const enc = (lines?.encoding ?? {}) as Spec;
  const xEnc = (field: string): Spec => ({ ...((enc.x as Spec | undefined) ?? { type: 'quantitative' }), field });
  const yEnc = (field: string): Spec => ({ ...((enc.y as Spec | undefined) ?? { type: 'quantitative' }), field });
  const extra: Spec[] = [];
  for (const b of bands) {
    const rows = b.x.map((x, i) => ({ x, lo: b.lo[i], hi: b.hi[i] })).filter((r) => Number.isFinite(r.x) && Number.isFinite(r.lo) && Number.isFinite(r.hi));
    if (rows.length === 0) continue;
    extra.push({
      data: { values: rows },
      mark: { type: 'area', color: b.color, opacity: 0.15, clip: true },
      encoding: { x: xEnc('x'), y: yEnc('lo'), y2: { field: 'hi' } },
    });
  }
  if (hline !== undefined) {
    extra.push({
      data: { values: [{ y: hline }] },
      mark: { type: 'rule', strokeDash: [4, 4], color: '#888888', strokeWidth: 1 },
      encoding: { y: yEnc('y') },
    });
  }
  // points on the lines: a curve evaluated once (DDPM at the last checkpoint only) is still visible
  const marked = layers.map((l) => (l === lines ? { ...l, mark: { ...(l.mark as Spec), point: { filled: false, size: 30 } } } : l));
  return { ...panelSpec, layer: [...extra, ...marked] };
}
