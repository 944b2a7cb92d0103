import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PNG } from 'pngjs';

import { Progress, formatValue } from '../src/progress.js';
import { grid, labelledGridPng, labelColumnWidth } from '../src/generate/images.js';

const sink = (tty: boolean) => {
  const writes: string[] = [];
  const out = { isTTY: tty, columns: 200, write: (s: string) => { writes.push(s); return true; } } as unknown as NodeJS.WriteStream;
  return { out, writes };
};

test('formatValue: rates with one decimal, other figures with 4 significant digits, exponents only when tiny or huge', () => {
  assert.equal(formatValue('img/s', 37.3047), '37.3');
  assert.equal(formatValue('img/s', 1234.56), '1235');
  assert.equal(formatValue('loss', 0.0331234), '0.03312');
  assert.equal(formatValue('loss', 1.2), '1.200');
  assert.equal(formatValue('grad', 12.3456), '12.35');
  assert.equal(formatValue('lr', 1e-4), '1.000e-4');
  assert.equal(formatValue('x', 123456.7), '123457');
  assert.equal(formatValue('x', 2.5e7 + 0.5), '2.500e+7');
  assert.equal(formatValue('step', 250), '250');
  assert.equal(formatValue('loss', NaN), 'NaN');
  assert.equal(formatValue('name', 'ddim50'), 'ddim50');
});

test('progress off a TTY: a line every 10% and every 10 s, each with an ETA; nothing redrawn', () => {
  let clock = 0;
  const { out, writes } = sink(false);
  const p = new Progress('sample', 1000, out, 0, { counts: false, now: () => clock });
  // 1% per second: lines at 10%, 20%, ... (each also 10 s apart)
  for (let s = 1; s <= 35; s++) {
    clock = 1000 * s;
    p.tick(10 * s);
  }
  assert.deepEqual(writes.map((w) => w.trim()), ['sample 10%  ETA 1m30s', 'sample 20%  ETA 1m20s', 'sample 30%  ETA 1m10s']);
  assert.ok(writes.every((w) => w.endsWith('\n') && !w.includes('\r')));
  // a slow stretch: no 10% crossed, but 10 s passed -> a line
  clock += 10_000;
  p.tick(355);
  assert.equal(writes.length, 4);
  assert.match(writes[3], /^sample 35% {2}ETA /);
  clock += 1000;
  p.tick(1000);
  assert.match(writes.at(-1)!, /^sample 100% {2}in 46s\n$/);

  // counts, a resumed start (the rate counts only this process's work), fields
  clock = 0;
  const r = sink(false);
  const q = new Progress('inference', 100, r.out, 50, { now: () => clock });
  clock = 5000;
  q.tick(60, { 'img/s': 2.04 });
  assert.deepEqual(r.writes, ['inference 60/100  img/s 2.0  ETA 20s\n']);
  // plainSeconds only (training): no line per 10%, one after a silent minute
  clock = 0;
  const t = sink(false);
  const tr = new Progress('train', 100, t.out, 0, { plainFraction: 0, plainSeconds: 60, now: () => clock });
  for (let s = 1; s <= 50; s++) { clock = 1000 * s; tr.tick(s); }
  assert.equal(t.writes.length, 0);
  tr.line(50, { loss: 0.25 });
  clock = 100_000;
  tr.tick(60);
  assert.equal(t.writes.length, 1, 'the log line reset the minute');
  clock = 111_000;
  tr.tick(61);
  assert.equal(t.writes.length, 2);
  assert.match(t.writes[1], /^train 61\/100 {2}ETA 1m11s\n$/);
});

test('progress on a TTY: one redrawn line, a percentage when asked', () => {
  let clock = 0;
  const { out, writes } = sink(true);
  const p = new Progress('sample', 200, out, 0, { counts: false, now: () => clock });
  clock = 1000;
  p.tick(50);
  clock = 1050;
  p.tick(60); // within 100 ms: not redrawn
  clock = 2000;
  p.tick(100);
  assert.equal(writes.length, 2);
  assert.ok(writes.every((w) => w.startsWith('\r\x1b[K') && !w.includes('\n')));
  assert.match(writes[1], /sample █+░+ 50% {2}ETA 2s$/);
  p.done();
  assert.equal(writes.at(-1), '\n');
});

test('sample grid rows carry their class index as text left of the row; the images are untouched', async () => {
  const H = 8;
  const zoom = 4;
  const rows = 3;
  const cols = 2;
  // image n is a flat colour so the copy can be checked
  const imgs = new Uint8Array(rows * cols * H * H * 3);
  for (let n = 0; n < rows * cols; n++) for (let p = 0; p < H * H; p++) imgs.set([40 * n, 200 - 30 * n, 17], (n * H * H + p) * 3);
  const labels = ['7', '0', '12'];
  const g = await labelledGridPng(imgs, rows, cols, H, H, 3, labels, 2, zoom);
  const plain = grid(imgs, rows, cols, H, H, 3, 2, zoom);
  const rowH = H * zoom + 2;
  assert.equal(g.labelWidth, labelColumnWidth(labels, rowH));
  const png = PNG.sync.read(g.png);
  assert.equal(png.width, plain.W + g.labelWidth);
  assert.equal(png.height, plain.H);
  assert.deepEqual([g.W, g.H], [png.width, png.height]);
  for (let y = 0; y < plain.H; y++) {
    for (let x = 0; x < plain.W; x++) {
      const a = 4 * (y * png.width + x + g.labelWidth);
      const b = 3 * (y * plain.W + x);
      assert.deepEqual([png.data[a], png.data[a + 1], png.data[a + 2]], [plain.hwc[b], plain.hwc[b + 1], plain.hwc[b + 2]], `pixel ${x},${y}`);
    }
  }
  // dark text pixels in the label column, within each row's band, none in the gaps between rows
  const dark = (y0: number, y1: number) => {
    let n = 0;
    for (let y = y0; y < y1; y++) for (let x = 0; x < g.labelWidth; x++) if (png.data[4 * (y * png.width + x)] < 128) n++;
    return n;
  };
  for (let r = 0; r < rows; r++) assert.ok(dark(2 + r * rowH, 2 + r * rowH + H * zoom) > 10, `label of row ${r}`);
  assert.equal(dark(0, 2), 0);
  // "12" has more ink than "7"
  assert.ok(dark(2 + 2 * rowH, 2 + 2 * rowH + H * zoom) > dark(2, 2 + H * zoom));
  await assert.rejects(labelledGridPng(imgs, rows, cols, H, H, 3, ['1'], 2, zoom), /1 labels for 3 rows/);
});
