import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { Canvas, figure, niceTicks, formatTick } from '../src/plot/index.js';

const nonWhite = (png: PNG, x0 = 0, y0 = 0, x1 = png.width, y1 = png.height) => {
  let n = 0;
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) {
    const i = 4 * (y * png.width + x);
    if (png.data[i] !== 255 || png.data[i + 1] !== 255 || png.data[i + 2] !== 255) n++;
  }
  return n;
};

test('niceTicks and formatTick', () => {
  assert.deepEqual(niceTicks(0, 1000, 5), [0, 200, 400, 600, 800, 1000]);
  assert.deepEqual(niceTicks(0, 1, 4), [0, 0.25, 0.5, 0.75, 1]);
  assert.deepEqual(niceTicks(-0.3, 0.3, 3), [-0.2, 0, 0.2]);
  assert.equal(formatTick(0.00001), '1.0e-5');
  assert.equal(formatTick(0.25), '0.25');
  assert.equal(formatTick(600), '600');
});

test('canvas text draws the glyphs: "I" is a vertical bar, " " is empty', () => {
  const c = new Canvas(20, 10);
  c.text(0, 0, ' ', [0, 0, 0]);
  const blank = PNG.sync.read(c.toPNG());
  assert.equal(nonWhite(blank), 0);
  c.text(0, 0, 'I', [0, 0, 0]);
  const png = PNG.sync.read(c.toPNG());
  // 'I' = 0x00,0x41,0x7f,0x41,0x00: column 2 is fully set, rows 0 and 6 span columns 1..3
  for (let y = 0; y < 7; y++) assert.equal(png.data[4 * (y * 20 + 2)], 0, `column 2 row ${y}`);
  assert.equal(png.data[4 * (3 * 20 + 1)], 255);
  assert.equal(nonWhite(png), 7 + 4);
  assert.equal(Canvas.textWidth('abc', 2), (3 * 6 - 1) * 2);
  assert.throws(() => new Canvas(0, 5), /positive integers/);
});

test('figure writes a decodable PNG of the expected size with drawn content in every panel', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plot-'));
  try {
    const xs = Array.from({ length: 100 }, (_, i) => i);
    const fig = figure(
      [
        { title: 'sine', xLabel: 't', yLabel: 'y', series: [{ name: 'sin', x: xs, y: xs.map((x) => Math.sin(x / 10)), color: [200, 0, 0] }], spans: [{ from: 10, to: 30, color: [0, 0, 255, 0.2], label: 'area' }], markers: [{ x: 50, color: [0, 120, 0], label: 'm=50' }] },
        { title: 'bars', series: [{ name: 'loss', x: [0, 1, 2, 3], y: [3, 1, 2], color: [0, 0, 200], kind: 'bars' }] },
        { title: 'empty', series: [] },
      ],
      { cols: 2, cellW: 300, cellH: 200, title: 'test figure' },
    );
    const path = join(dir, 'f.png');
    fig.save(path);
    const png = PNG.sync.read(readFileSync(path));
    assert.equal(png.width, 600);
    assert.equal(png.height, 2 * 200 + 14 + 20);
    const head = 34;
    assert.ok(nonWhite(png, 0, head, 300, head + 200) > 2000, 'panel 1');
    assert.ok(nonWhite(png, 300, head, 600, head + 200) > 2000, 'panel 2');
    // the red series and the translucent blue span are both there
    let red = 0;
    let tinted = 0;
    for (let i = 0; i < png.data.length; i += 4) {
      if (png.data[i] === 200 && png.data[i + 1] === 0 && png.data[i + 2] === 0) red++;
      if (png.data[i + 2] === 255 && png.data[i] > 150 && png.data[i] < 255) tinted++;
    }
    assert.ok(red > 100, `red pixels ${red}`);
    assert.ok(tinted > 1000, `span pixels ${tinted}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
