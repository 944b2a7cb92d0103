// Image decoding: the inputs that once crashed, OOM-killed or decoded to
// black (each a DataError naming the file, or a counted skip), JPEG/PNG/WebP
// folders, symlink loops and dangling links, and a seeded mutation fuzz of
// PNG/JPEG/WebP decoding (FUZZ_ITERS; default sized to ~15 s on CI).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { deflateSync } from 'node:zlib';
import { PNG } from 'pngjs';
import sharp from 'sharp';

import { ImageFolderDataset, scanImageFolder } from '../src/data/index.js';
import { decodeImage, decodeImageFile, readImageHeader, type ImageLimits } from '../src/data/image-decode.js';
import { DataError } from '../src/errors.js';
import { Rng } from '../src/rng.js';

const tmp = () => mkdtempSync(path.join(tmpdir(), 'imgdec-'));

const CRC = new Int32Array(256).map((_, n) => { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; return c; });
function crc32(b: Buffer): number {
  let c = -1;
  for (const v of b) c = CRC[(c ^ v) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
function chunk(type: string, data: Buffer): Buffer {
  const t = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(t));
  return Buffer.concat([len, t, crc]);
}
/** A PNG from parts: IHDR (width, height, bit depth, colour type) and the IDAT payload. */
function pngFile(w: number, h: number, depth: number, colour: number, idat: Buffer | null): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = depth; ihdr[9] = colour;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr),
    ...(idat ? [chunk('IDAT', idat)] : []), chunk('IEND', Buffer.alloc(0)),
  ]);
}

const isTypedError = (file: string, re?: RegExp) => (e: unknown) =>
  e instanceof DataError && e.file === file && e.message.startsWith(file + ': ') && (!re || re.test(e.message));

test('hostile headers: width 2^31-1, 8 x (2^31-1), a 20000x20000 zero bomb, 32 x 5.8M: refused from the header, naming the file', async () => {
  const dir = tmp();
  const tiny = deflateSync(Buffer.alloc(8)); // a few bytes of IDAT: the header is the lie
  const cases: [string, Buffer, RegExp][] = [
    ['wide.png', pngFile(2 ** 31 - 1, 1, 8, 2, tiny), /claims 2147483647x1 = 2147483647 pixels, above the limit of 40000000 \(data\.max_image_pixels\)/],
    ['eight.png', pngFile(8, 2 ** 31 - 1, 8, 2, tiny), /claims 8x2147483647/],
    // 1-bit grey rows: 50 MB of zeros deflate to ~50 KB, the file claims 4e8 pixels.
    ['bomb.png', pngFile(20000, 20000, 1, 0, deflateSync(Buffer.alloc(20000 * 2501), { level: 9 })), /claims 20000x20000 = 400000000 pixels/],
    ['tall.png', pngFile(32, 5_800_000, 8, 0, tiny), /claims 32x5800000/],
  ];
  for (const [name, buf, re] of cases) {
    const f = path.join(dir, name);
    writeFileSync(f, buf);
    if (name !== 'bomb.png') assert.ok(buf.length < 200, `${name} is ${buf.length} bytes`);
    const rss0 = process.memoryUsage().rss;
    const t0 = Date.now();
    assert.throws(() => readImageHeader(f), isTypedError(f, re));
    await assert.rejects(decodeImageFile(f), isTypedError(f, re));
    assert.ok(Date.now() - t0 < 2000, `${name}: ${Date.now() - t0} ms`);
    assert.ok(process.memoryUsage().rss - rss0 < 200 * 2 ** 20, `${name}: rss grew by ${(process.memoryUsage().rss - rss0) / 2 ** 20} MiB`);
  }
  // The limit is the config's: a smaller one refuses a normal image, naming the key.
  const ok = path.join(dir, 'ok.png');
  writeFileSync(ok, await sharp({ create: { width: 40, height: 30, channels: 3, background: '#c80a32' } }).png().toBuffer());
  await assert.rejects(decodeImageFile(ok, { maxPixels: 1000, maxBytes: 1e9 }), isTypedError(ok, /40x30 = 1200 pixels, above the limit of 1000/));
  await assert.rejects(decodeImageFile(ok, { maxPixels: 1e9, maxBytes: 50 }), isTypedError(ok, /bytes, above the limit of 50 \(data\.max_image_bytes\)/));
  const img = await decodeImageFile(ok);
  assert.deepEqual([img.width, img.height, img.data[0], img.data[1], img.data[2]], [40, 30, 0xc8, 0x0a, 0x32]);
});

test('within the pixel limit but not the memory or shape bounds: 40M x 1 16-bit RGBA, 1 x 40M grey, 6324^2 16-bit RGBA: refused from the header', async () => {
  // Before: the first decoded in 83 s at a 3.76 GB peak (OOM-killed under a 3 GB cap),
  // the second ran past 120 s; both are exactly 40 MP. Their real IDAT is 311 KB / 78 KB
  // of zeros: a few bytes do here, the header is what is refused.
  const dir = tmp();
  const tiny = deflateSync(Buffer.alloc(8));
  const cases: [string, Buffer, RegExp][] = [
    ['wide16.png', pngFile(40_000_000, 1, 16, 6, tiny), /PNG is 40000000x1, an aspect ratio of 40000000:1, above the limit of 100:1/],
    ['tall.png', pngFile(1, 40_000_000, 8, 0, tiny), /PNG is 1x40000000, an aspect ratio of 40000000:1, above the limit of 100:1/],
    ['sliver.png', pngFile(632, 63245, 8, 0, tiny), /PNG is 632x63245, an aspect ratio of 100\.1:1/],
    ['deep.png', pngFile(6324, 6324, 16, 6, tiny), /PNG 6324x6324 with 4 channel\(s\) of 16 bits decodes to 319943808 bytes, above the limit of 160000000 \(4 bytes per pixel of data\.max_image_pixels = 40000000\)/],
  ];
  for (const [name, buf, re] of cases) {
    const f = path.join(dir, name);
    writeFileSync(f, buf);
    const t0 = Date.now();
    assert.throws(() => readImageHeader(f), isTypedError(f, re), name);
    await assert.rejects(decodeImageFile(f), isTypedError(f, re), name);
    assert.ok(Date.now() - t0 < 2000, `${name}: ${Date.now() - t0} ms`);
  }
  // The byte bound scales with data.max_image_pixels and counts depth and channels:
  // with a 1000-pixel limit, 30x30 8-bit RGB (2700 bytes) decodes, 30x30 16-bit RGBA (7200) does not.
  const lim = { maxPixels: 1000, maxBytes: 1e9 };
  const rows = (w: number, h: number, bpp: number) => deflateSync(Buffer.alloc((1 + w * bpp) * h));
  const rgb8 = path.join(dir, 'rgb8.png');
  writeFileSync(rgb8, pngFile(30, 30, 8, 2, rows(30, 30, 3)));
  assert.equal((await decodeImageFile(rgb8, lim)).data.length, 30 * 30 * 3);
  const rgba16 = path.join(dir, 'rgba16.png');
  writeFileSync(rgba16, pngFile(30, 30, 16, 6, rows(30, 30, 8)));
  await assert.rejects(decodeImageFile(rgba16, lim), isTypedError(rgba16, /decodes to 7200 bytes, above the limit of 4000/));
  const h = readImageHeader(rgb8, lim);
  assert.deepEqual([h.channels, h.sampleBytes], [3, 1]);
  const jpg = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } }).jpeg().toBuffer();
  const jf = path.join(dir, 'a.jpg');
  writeFileSync(jf, jpg);
  assert.deepEqual([readImageHeader(jf).channels, readImageHeader(jf).sampleBytes], [3, 1]);
  const grey = path.join(dir, 'g.jpg');
  writeFileSync(grey, await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } }).toColourspace('b-w').jpeg().toBuffer());
  assert.equal(readImageHeader(grey).channels, 1);
});

test('skip_bad_files: a bad file drawn again and again is warned about and counted once', async () => {
  const root = tmp();
  mkdirSync(path.join(root, 'a'));
  writeFileSync(path.join(root, 'a/0.png'), await sharp({ create: { width: 8, height: 8, channels: 3, background: '#102030' } }).png().toBuffer());
  const good = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#405060' } }).png().toBuffer();
  const corrupt = Buffer.from(good);
  corrupt.fill(0x41, 40, corrupt.length - 12); // a valid header, corrupt pixel data: found only when decoded
  writeFileSync(path.join(root, 'a/1.png'), corrupt);
  const warnings: string[] = [];
  const ds = new ImageFolderDataset({ root, imageSize: 8, channels: 3, numClasses: 1, centerCrop: true, skipBadFiles: true, warn: (m) => warnings.push(m) });
  try {
    for (let i = 0; i < 8; i++) await ds.load(Int32Array.from([0, 1]), new Uint8Array(2));
  } finally {
    await ds.close();
  }
  assert.equal(warnings.length, 1, warnings.join('\n'));
  assert.match(warnings[0], /warning: skipping .*a\/1\.png: cannot decode PNG.*\(said once; the file is replaced whenever it is drawn\)/);
  assert.equal(ds.badFiles, 1);
});

test('empty, truncated and corrupt pixel data are errors, never a black image', async () => {
  const dir = tmp();
  const rgb = Buffer.alloc(16 * 16 * 3).map((_, i) => ((i % 48) / 3) * 10 + Math.floor(i / 48) * 5 + (i % 3) * 20); // smooth gradients
  const raw = { raw: { width: 16, height: 16, channels: 3 as const } };
  const png = await sharp(rgb, raw).png().toBuffer();
  const jpg = await sharp(rgb, raw).jpeg({ quality: 90 }).toBuffer();
  const webp = await sharp(rgb, raw).webp({ quality: 80 }).toBuffer();
  const webpLossless = await sharp(rgb, raw).webp({ lossless: true }).toBuffer();
  const cases: [string, Buffer, RegExp][] = [
    ['empty.png', Buffer.alloc(0), /empty file/],
    ['noidat.png', pngFile(16, 16, 8, 2, null), /cannot decode PNG/],
    ['emptyidat.png', pngFile(16, 16, 8, 2, Buffer.alloc(0)), /cannot decode PNG/],
    ['shortidat.png', pngFile(16, 16, 8, 2, deflateSync(Buffer.alloc(100))), /cannot decode PNG/],
    ['cut.png', png.subarray(0, png.length - 30), /cannot decode PNG/],
    ['cut.jpg', jpg.subarray(0, Math.floor(jpg.length * 0.6)), /cannot decode JPEG/],
    ['cut.webp', webp.subarray(0, Math.floor(webp.length * 0.6)), /cannot decode WEBP/],
    ['cut-lossless.webp', webpLossless.subarray(0, Math.floor(webpLossless.length * 0.6)), /cannot decode WEBP/],
    ['header-only.jpg', jpg.subarray(0, 2), /JPEG|truncated/],
    ['text.png', Buffer.from('this is not a png'), /not a JPEG, PNG or WebP image/],
  ];
  for (const [name, buf, re] of cases) {
    const f = path.join(dir, name);
    writeFileSync(f, buf);
    await assert.rejects(decodeImageFile(f), isTypedError(f, re), name);
  }
  // The intact files decode, to their pixels (PNG and lossless WebP exactly).
  // (JPEG: lossy, near on average.)
  for (const [name, buf, tol] of [['a.png', png, 0], ['a.webp', webpLossless, 0], ['a.jpg', jpg, 6]] as const) {
    const img = await decodeImage(buf, name);
    assert.equal(img.data.length, 16 * 16 * 3);
    const d = name === 'a.jpg' ? img.data.reduce((m, v, i) => m + Math.abs(v - rgb[i]), 0) / img.data.length : img.data.reduce((m, v, i) => Math.max(m, Math.abs(v - rgb[i])), 0);
    assert.ok(d <= tol, `${name}: diff ${d}`);
  }
});

test('an embedded ICC profile is ignored, as Pillow ignores it: the stored values come back', async () => {
  const rgb = Buffer.alloc(4 * 4 * 3).map((_, i) => (i * 20) % 256);
  const png = await sharp(rgb, { raw: { width: 4, height: 4, channels: 3 } }).withIccProfile('p3').png().toBuffer();
  assert.ok((await sharp(png).metadata()).icc, 'the file carries a profile');
  const stored = PNG.sync.read(png).data.filter((_, i) => i % 4 !== 3);
  assert.notDeepEqual([...stored], [...rgb]); // the P3 conversion changed the stored values
  assert.deepEqual([...(await decodeImage(png, 'p3.png')).data], [...stored]);
});

test('image folders: .jpg/.JPEG/.png/.webp by class or flat; bad files, symlink loops and dangling links named or skipped', async () => {
  const root = tmp();
  const px = (c: string) => sharp({ create: { width: 12, height: 10, channels: 3, background: c } });
  mkdirSync(path.join(root, 'a')); mkdirSync(path.join(root, 'b'));
  writeFileSync(path.join(root, 'a/0.JPG'), await px('#ff0000').jpeg().toBuffer());
  writeFileSync(path.join(root, 'a/1.webp'), await px('#00ff00').webp({ lossless: true }).toBuffer());
  writeFileSync(path.join(root, 'b/2.jpeg'), await px('#0000ff').jpeg().toBuffer());
  writeFileSync(path.join(root, 'b/3.png'), await px('#ffffff').png().toBuffer());
  writeFileSync(path.join(root, 'b/notes.txt'), 'ignored');
  const o = { root, imageSize: 8, channels: 3, numClasses: 2, centerCrop: true, skipBadFiles: false, warn: () => {} };
  const ds = new ImageFolderDataset(o);
  try {
    assert.equal(ds.size, 4);
    const b = await ds.load(Int32Array.from([0, 1, 2, 3]), new Uint8Array(4));
    assert.deepEqual([...b.y], [0, 0, 1, 1]);
    const at = (i: number, c: number) => b.x[i * 192 + c * 64 + 27];
    assert.ok(at(0, 0) > 0.9 && at(0, 1) < -0.9, 'red jpeg'); assert.equal(at(1, 1), 1); assert.ok(at(2, 2) > 0.9); assert.equal(at(3, 0), 1);
  } finally {
    await ds.close();
  }
  // Flat: unconditional, label 0.
  const flat = tmp();
  writeFileSync(path.join(flat, 'x.jpg'), await px('#808080').jpeg().toBuffer());
  writeFileSync(path.join(flat, 'y.PNG'), await px('#808080').png().toBuffer());
  assert.deepEqual([...scanImageFolder({ ...o, root: flat, numClasses: 0 }).labels], [0, 0]);
  // Unconditional (num_classes 0) in subfolders, as FFHQ ships: every image, label 0, no classes.
  const u = scanImageFolder({ ...o, numClasses: 0 });
  assert.deepEqual([u.files.length, [...new Set(u.labels)], u.classes], [4, [0], []]);

  // A link to itself, a loop of two, a dangling link, a link loop as a class folder.
  symlinkSync('self.png', path.join(root, 'b/self.png'));
  symlinkSync('loop2.jpg', path.join(root, 'b/loop1.jpg'));
  symlinkSync('loop1.jpg', path.join(root, 'b/loop2.jpg'));
  symlinkSync('/nonexistent/file.png', path.join(root, 'a/dangling.png'));
  assert.throws(() => scanImageFolder(o), (e: unknown) => e instanceof DataError && e.file === path.join(root, 'a/dangling.png') && /dangling symbolic link/.test(e.message) && /skip_bad_files/.test(e.message));
  const warnings: string[] = [];
  const s = scanImageFolder({ ...o, skipBadFiles: true, warn: (m) => warnings.push(m) });
  assert.equal(s.files.length, 4);
  assert.equal(s.skipped, 4);
  assert.ok(warnings.some((w) => /self\.png: symbolic link loop \(ELOOP\)/.test(w)), warnings.join('\n'));
  symlinkSync('c', path.join(root, 'c'));
  assert.throws(() => scanImageFolder({ ...o, numClasses: 3, skipBadFiles: false }), (e: unknown) => e instanceof DataError && /symbolic link loop/.test(e.message));
  const loopRoot = path.join(tmp(), 'r');
  symlinkSync('r', loopRoot);
  assert.throws(() => scanImageFolder({ ...o, root: loopRoot }), (e: unknown) => e instanceof DataError && e.file === loopRoot && /data\.root.*symbolic link loop/.test(e.message));

  // The 69-byte PNG in a training folder: a DataError (and a counted skip with skip_bad_files), not SIGABRT.
  const bad = tmp();
  mkdirSync(path.join(bad, 'k'));
  writeFileSync(path.join(bad, 'k/good.png'), await px('#102030').png().toBuffer());
  writeFileSync(path.join(bad, 'k/wide.png'), pngFile(2 ** 31 - 1, 1, 8, 2, deflateSync(Buffer.alloc(8))));
  const bo = { ...o, root: bad, numClasses: 1 };
  assert.throws(() => new ImageFolderDataset(bo), (e: unknown) => e instanceof DataError && e.file === path.join(bad, 'k/wide.png'));
  const lenient = new ImageFolderDataset({ ...bo, skipBadFiles: true });
  assert.equal(lenient.size, 1);
  assert.equal(lenient.badFiles, 1);
  await lenient.close();
});

// ---- fuzz ------------------------------------------------------------------

async function seeds(): Promise<[string, Buffer][]> {
  const W = 24, H = 20;
  const rgb = Buffer.alloc(W * H * 3).map((_, i) => (i * 53 + (i % 7) * 19) % 256);
  const s = () => sharp(rgb, { raw: { width: W, height: H, channels: 3 } });
  return [
    ['png', await s().png().toBuffer()],
    ['png-palette', await s().png({ palette: true, colours: 16 }).toBuffer()],
    ['png-grey16', await s().toColourspace('grey16').png().toBuffer()],
    ['png-interlaced', await s().png({ progressive: true }).toBuffer()],
    ['jpeg', await s().jpeg({ quality: 85 }).toBuffer()],
    ['jpeg-progressive', await s().jpeg({ quality: 85, progressive: true }).toBuffer()],
    ['webp', await s().webp({ quality: 80 }).toBuffer()],
    ['webp-lossless', await s().webp({ lossless: true }).toBuffer()],
  ];
}

function mutate(src: Buffer, rng: Rng): Buffer {
  let b = Buffer.from(src);
  const kinds = 1 + rng.int(3);
  for (let k = 0; k < kinds; k++) {
    switch (rng.int(7)) {
      case 0: for (let i = 1 + rng.int(8); i > 0; i--) b[rng.int(b.length)] ^= 1 << rng.int(8); break; // bit flips
      case 1: b[rng.int(b.length)] = [0, 0xff, 0x7f, 0x80][rng.int(4)]; break;
      case 2: b = b.subarray(0, rng.int(b.length)); break; // truncation
      case 3: { const at = rng.int(b.length); b = Buffer.concat([b.subarray(0, at), Buffer.from(Array.from({ length: 1 + rng.int(32) }, () => rng.int(256))), b.subarray(at)]); break; }
      case 4: { const at = Math.min(b.length - 4, 12 + rng.int(24)); if (at >= 0) b.writeUInt32BE([0xffffffff, 0x7fffffff, 0x10000, rng.int(2 ** 31)][rng.int(4)], at); break; } // sizes/lengths in headers
      case 5: { const a = rng.int(b.length); const n = rng.int(64); b.copy(b, rng.int(b.length), a, a + n); break; }
      case 6: { const a = rng.int(b.length); b = Buffer.concat([b.subarray(0, a), b.subarray(Math.min(b.length, a + 1 + rng.int(64)))]); break; }
    }
    if (b.length === 0) break;
  }
  return b;
}

test('fuzz: mutated PNG/JPEG/WebP files give a decoded RGB image or a DataError, in bounded time and memory', async () => {
  const iters = Number(process.env.FUZZ_ITERS ?? 4000);
  const lim: ImageLimits = { maxPixels: 4_000_000, maxBytes: 1 << 20 };
  const base = await seeds();
  const rng = new Rng(20261201);
  const rss0 = process.memoryUsage().rss;
  let ok = 0, clean = 0, maxMs = 0, maxRss = 0;
  const t0 = Date.now();
  for (let it = 0; it < iters; it++) {
    const [kind, src] = base[it % base.length];
    const buf = mutate(src, rng);
    const name = `fuzz-${it}-${kind}`;
    const t = Date.now();
    try {
      const img = await decodeImage(buf, name, lim);
      assert.equal(img.data.length, img.width * img.height * 3, name);
      assert.ok(img.width * img.height <= lim.maxPixels);
      ok++;
    } catch (e) {
      if (!(e instanceof DataError) || e.file !== name) throw new Error(`${name}: untyped error ${(e as Error)?.stack ?? e}`);
      clean++;
    }
    maxMs = Math.max(maxMs, Date.now() - t);
    if (it % 50 === 0) maxRss = Math.max(maxRss, process.memoryUsage().rss - rss0);
  }
  console.log(`# fuzz: ${iters} inputs in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${ok} decoded, ${clean} clean DataErrors, 0 crashes/untyped; slowest ${maxMs} ms, rss +${(maxRss / 2 ** 20).toFixed(0)} MiB`);
  assert.ok(maxMs < 5000, `slowest decode ${maxMs} ms`);
  assert.ok(maxRss < 512 * 2 ** 20, `rss grew by ${maxRss / 2 ** 20} MiB`);
  assert.ok(clean > iters / 10 && ok > 0, 'the mutations reach both outcomes');
});
