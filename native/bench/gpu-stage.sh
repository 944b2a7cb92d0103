#!/usr/bin/env bash
# Stages .gpu/ for a GPU machine (../shared/device/stage.sh), then keeps only the npm
# packages speed-train needs at run time: the carry to a GPU machine is limited to
# 64 MiB in all, and the full production tree (cmake-js and its build-only
# dependencies, every bundle of vega and vega-lite) is ~77 MiB with the node
# binary; this leaves ~52 MiB, so .gpu and dist fit together.
#   bash native/bench/gpu-stage.sh [path/to/stage.sh]
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
stage=${1:-$root/../shared/device/stage.sh}
bash "$stage"
# The run-time closure of package.json's dependencies, minus cmake-js (npm's driver
# of CMake; gpu-check.sh calls CMake itself, which finds node-addon-api and
# node-api-headers in node_modules and builds the addon with CUDA).
node - <<'JS'
const fs = require('fs'), path = require('path');
const build = new Set(['cmake-js']);
const root = JSON.parse(fs.readFileSync('package.json', 'utf8'));
const keep = new Set();
const find = (name, from) => { // node's lookup: nested node_modules first, then upwards
  for (let d = from; ; d = path.dirname(d)) {
    const p = path.join(d, 'node_modules', name);
    if (fs.existsSync(path.join(p, 'package.json'))) return p;
    if (d === '.' || d === path.dirname(d)) return null;
  }
};
const visit = (dir) => {
  if (keep.has(dir)) return;
  keep.add(dir);
  const pj = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  for (const n of Object.keys({ ...pj.dependencies, ...pj.optionalDependencies })) {
    const p = find(n, dir);
    if (p) visit(p);
  }
};
for (const n of Object.keys(root.dependencies)) if (!build.has(n)) { const p = find(n, '.'); if (p) visit(p); }
// Remove from .gpu/node_modules every package outside the closure.
const gm = path.join('.gpu', 'node_modules');
let removed = 0;
const walk = (dir, rel) => {
  for (const e of fs.readdirSync(dir)) {
    const full = path.join(dir, e), r = path.join(rel, e);
    if (e.startsWith('@')) { walk(full, r); if (fs.readdirSync(full).length === 0) fs.rmdirSync(full); continue; }
    if (e === '.bin' || e === '.package-lock.json') continue;
    if (!keep.has(path.join('node_modules', r))) { fs.rmSync(full, { recursive: true, force: true }); removed++; }
  }
};
walk(gm, '');
// vega-lite ships its ESM build plus UMD bundles and sources; node loads build/index.js.
const vl = path.join(gm, 'vega-lite');
for (const f of ['src', 'build/vega-lite.js', 'build/vega-lite.min.js', 'build/vega-lite.js.map', 'build/vega-lite.min.js.map']) {
  fs.rmSync(path.join(vl, f), { recursive: true, force: true });
}
// vega likewise: node loads build/vega.module.js. Types, source maps and docs are not run.
const vb = path.join(gm, 'vega', 'build');
if (fs.existsSync(vb)) for (const f of fs.readdirSync(vb)) if (f !== 'vega.module.js') fs.rmSync(path.join(vb, f), { force: true });
fs.rmSync(path.join(vl, 'build', 'vega-lite-schema.json'), { force: true });
const prune = (dir) => {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) prune(full);
    else if (/\.(d\.ts|map|md|markdown)$/i.test(e.name)) fs.rmSync(full, { force: true });
  }
};
prune(gm);
console.log(`gpu-stage: kept ${keep.size} run-time packages, removed ${removed} build-only ones`);
JS
du -sh .gpu
