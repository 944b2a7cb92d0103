import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { runAnalyze, readBucketLoss, areasOf, areaShares } from '../src/speed/analyze.js';
import { SPEED_PAPER_OPTIONS } from '../src/speed/index.js';
import { makeCoefs } from '../src/diffusion/coefs.js';
import { betasFor } from '../src/diffusion/schedule.js';
import { DataError } from '../src/errors.js';

test('areas of linear T = 1000: acceleration until the variance-increment peak, convergence from m = 642', () => {
  const c = makeCoefs(betasFor('linear', 1000));
  const a = areasOf(c);
  assert.equal(a.m, 642);
  // h_t = abar_{t-1} - abar_{t+1} (central) peaks where beta'(t) = beta^2 roughly: t ~ 219
  assert.ok(a.peak > 200 && a.peak < 240, String(a.peak));
  const s = areaShares(new Float64Array(1000).fill(1e-3), a);
  assert.ok(Math.abs(s[0] - a.peak / 1000) < 1e-12 && Math.abs(s[2] - 0.358) < 1e-12);
});

test('runAnalyze writes a PNG and reports m, tau and the shares; per-bucket loss from metrics.jsonl', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'analyze-'));
  try {
    const metrics = join(dir, 'metrics.jsonl');
    const rows = [JSON.stringify({ step: 0, loss: 1 })];
    for (let s = 1; s <= 12; s++) {
      rows.push(JSON.stringify({ step: s, loss_per_bucket: [s, null, 2 * s, 1], bucket_edges: [0, 250, 500, 750, 1000] }));
    }
    writeFileSync(metrics, rows.join('\n') + '\n{"step": 13, "loss_per'); // a run still writing
    const r = await runAnalyze({ schedule: 'linear', T: 1000, speed: { ...SPEED_PAPER_OPTIONS }, out: dir, metricsPath: metrics });
    assert.equal(r.png, join(dir, 'speed-analysis.png'));
    assert.match(r.text, /boundary m = 642/);
    assert.match(r.text, /tau = 700\n/);
    // speed (k=5, tau=700) with duals puts far less than uniform's 35.8% in the convergence area
    const conv = /convergence (\d+\.\d)%/.exec(r.text.split('\n').find((l) => l.startsWith('sampling')) ?? '');
    assert.ok(conv && Number(conv[1]) < 15, r.text);
    assert.match(r.text, /uniform: 21\.9%, 42\.3%, 35\.8%/);
    // mean of the last 10 lines (steps 3..12): bucket 0 = 7.5, bucket 2 = 15
    assert.match(r.text, /\[0,250\) 7\.500, \[250,500\) -, \[500,750\) 15\.00, \[750,1000\) 1\.000/);
    assert.equal(r.svg, join(dir, 'speed-analysis.svg'));
    const svg = readFileSync(r.svg, 'utf8');
    const size = /<svg[^>]*\swidth="([\d.]+)"[^>]*\sheight="([\d.]+)"/.exec(svg)!;
    const png = PNG.sync.read(readFileSync(r.png));
    assert.deepEqual([png.width, png.height], [2 * Number(size[1]), 2 * Number(size[2])]);
    const texts = (role: string) => [...svg.matchAll(new RegExp(`role-${role}"[^>]*>((?:<text[^>]*>[^<]*</text>)+)`, 'g'))]
      .flatMap((m) => [...m[1].matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((t) => t[1]));
    // five panels, each with both axis titles
    assert.equal(texts('axis-title').filter((t) => t === 'time step t').length, 5);
    for (const y of ['√(1 − ᾱₜ)', 'increment', 'p(t) · T  (uniform = 1)', 'w(t)', 'training loss']) assert.ok(texts('axis-title').includes(y), y);
    for (const l of ['acceleration', 'deceleration', 'convergence', 'm = 642', 'τ = 700', 'speed', 'uniform']) assert.ok(texts('legend-label').includes(l), l);
    assert.match(r.text, /figure: .*speed-analysis\.png \(and .*speed-analysis\.svg\)/);

    // no metrics: four panels; a PNG path is used as given, the SVG beside it; tau reported unused for uniform/none
    const out2 = join(dir, 'sub', 'u.png');
    const r2 = await runAnalyze({ schedule: 'cosine', T: 200, speed: { ...SPEED_PAPER_OPTIONS, sampling: 'uniform', weighting: 'none', tau: 140 }, out: out2 });
    assert.equal(r2.png, out2);
    assert.ok(existsSync(out2) && existsSync(join(dir, 'sub', 'u.svg')));
    assert.match(r2.text, /tau = 140 \(not used/);
    const svg2 = readFileSync(r2.svg, 'utf8');
    assert.equal((svg2.match(/>time step t</g) ?? []).length, 4);
    assert.ok(!svg2.includes('τ = 140'), 'no tau marker when tau is unused');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('readBucketLoss: malformed lines are errors naming the file and line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'analyze-'));
  try {
    const f = join(dir, 'metrics.jsonl');
    writeFileSync(f, '{"step": 1}\nnot json\n{"step": 2}\n');
    assert.throws(() => readBucketLoss(f), (e: unknown) => e instanceof DataError && /metrics\.jsonl: line 2 is not valid JSON/.test(e.message));
    writeFileSync(f, '{"loss_per_bucket": [1, 2], "bucket_edges": [0, 1]}\n');
    assert.throws(() => readBucketLoss(f), /line 1: bucket_edges must have one more entry/);
    writeFileSync(f, '{"step": 1}\n');
    assert.equal(readBucketLoss(f), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
