// Import circles among src/**/*.ts (static imports, type-only ones included): prints
// the file and import counts and every strongly connected group of more than one
// module. Usage: node tools/import-cycles.mjs [src]
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
const root = process.argv[2] ?? 'src';
const files = [];
const walk = (d) => { for (const n of readdirSync(d)) { const p = path.join(d, n); statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') && files.push(p); } };
walk(root);
const edges = new Map();
for (const f of files) {
  const src = readFileSync(f, 'utf8');
  const out = new Set();
  for (const m of src.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+'(\.[^']+)'/g)) {
    const t = path.normalize(path.join(path.dirname(f), m[1].replace(/\.js$/, '.ts')));
    if (files.includes(t)) out.add(t);
  }
  edges.set(f, out);
}
let idx = 0; const index = new Map(), low = new Map(), stack = [], on = new Set(), sccs = [];
const strong = (v) => {
  index.set(v, idx); low.set(v, idx); idx++; stack.push(v); on.add(v);
  for (const w of edges.get(v)) {
    if (!index.has(w)) { strong(w); low.set(v, Math.min(low.get(v), low.get(w))); }
    else if (on.has(w)) low.set(v, Math.min(low.get(v), index.get(w)));
  }
  if (low.get(v) === index.get(v)) { const c = []; let w; do { w = stack.pop(); on.delete(w); c.push(w); } while (w !== v); if (c.length > 1) sccs.push(c.sort()); }
};
for (const f of files) if (!index.has(f)) strong(f);
console.log(`${files.length} files, ${[...edges.values()].reduce((a, s) => a + s.size, 0)} imports, ${sccs.length} import circle(s)`);
for (const c of sccs) console.log('  circle: ' + c.join(' <-> '));
