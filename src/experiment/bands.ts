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

/** The panel spec with band layers first (behind the lines) and a dashed line at y = hline. */
export function withBands(panelSpec: Spec, bands: Band[], hline?: number): Spec {
  const layers = [...((panelSpec.layer as Spec[] | undefined) ?? [])];
  const extra: Spec[] = [];
  for (const b of bands) {
    const rows = b.x.map((x, i) => ({ x, lo: b.lo[i], hi: b.hi[i] })).filter((r) => Number.isFinite(r.x) && Number.isFinite(r.lo) && Number.isFinite(r.hi));
    if (rows.length === 0) continue;
    extra.push({
      data: { values: rows },
      mark: { type: 'area', color: b.color, opacity: 0.15, clip: true },
      // no axis of its own: the lines' layer titles the axes
      encoding: { x: { field: 'x', type: 'quantitative', axis: null }, y: { field: 'lo', type: 'quantitative', axis: null }, y2: { field: 'hi' } },
    });
  }
  if (hline !== undefined) {
    extra.push({
      data: { values: [{ y: hline }] },
      mark: { type: 'rule', strokeDash: [4, 4], color: '#888888', strokeWidth: 1 },
      encoding: { y: { field: 'y', type: 'quantitative', axis: null } },
    });
  }
  return { ...panelSpec, layer: [...extra, ...layers] };
}
