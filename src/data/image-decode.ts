// Image decoding for every reader of image files (image folders, evaluation
// folders, `encode`): JPEG, PNG and WebP through sharp (libvips: libjpeg-turbo,
// libpng, libwebp), with limits checked BEFORE any pixel is decoded.
//
// Why the header is parsed here as well as by sharp: the file size and the
// claimed width x height are checked from a few header bytes, so a 69-byte PNG
// claiming 2^31-1 pixels or a 1 MB bomb of 20000x20000 zeros is refused without
// allocating anything; sharp's own `limitInputPixels` is the second fence, and
// `failOn: 'warning'` makes truncated or corrupt pixel data an error instead of
// a silently black (or partly black) image.
//
// Pixels alone do not bound the cost: a 40,000,000 x 1 PNG of 16-bit RGBA is
// within 40 MP yet decodes to 320 MB and made libvips use ~3.7 GB (its buffers
// are sized by the row), and 1 x 40,000,000 grey took minutes (a per-row cost
// 40 million times) to end as a 1-pixel-wide strip that the centre crop blows up.
// So the header's depth and channels bound the decoded bytes, and the aspect
// ratio is bounded too: both are refused before decoding.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import sharp, { type OutputInfo } from 'sharp';

import { DataError } from '../errors.js';

export type ImageFormat = 'png' | 'jpeg' | 'webp';

export interface ImageLimits {
  /** largest width * height accepted (data.max_image_pixels) */
  maxPixels: number;
  /** largest file accepted, in bytes (data.max_image_bytes) */
  maxBytes: number;
}

/** 40 MP (e.g. 8000 x 5000) and 64 MiB: far above any photo data set, far below an OOM. */
export const DEFAULT_LIMITS: ImageLimits = { maxPixels: 40_000_000, maxBytes: 64 * 1024 * 1024 };

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp'] as const;

/** An image file name by its extension (case-insensitive); dot files are not images. */
export function isImageName(name: string): boolean {
  if (name.startsWith('.')) return false;
  const n = name.toLowerCase();
  return IMAGE_EXTENSIONS.some((e) => n.endsWith(e));
}

export interface ImageHeader {
  format: ImageFormat;
  width: number;
  height: number;
  /** samples per pixel as decoded (grey 1, grey+alpha 2, RGB 3, RGBA / CMYK / palette 4) */
  channels: number;
  /** bytes per sample as decoded (16-bit PNG and 12-bit JPEG: 2) */
  sampleBytes: number;
}

/** Longest side over shortest accepted: wider panoramas than this are not training images. */
export const MAX_ASPECT_RATIO = 100;
/** Decoded bytes accepted per pixel of data.max_image_pixels: an 8-bit RGBA image at the pixel limit. */
export const DECODED_BYTES_PER_PIXEL = 4;

/** A decoded image: RGB, 8 bits per channel, row-major [height, width, 3]. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

const PNG_SIG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Reads `n` bytes at `pos` (fewer at the end of the file). */
type ReadAt = (pos: number, n: number) => Buffer;

function pngHeader(read: ReadAt): ImageHeader {
  const b = read(0, 33);
  if (b.length < 33) throw new Error(`truncated PNG: ${b.length} bytes, the signature and IHDR need 33`);
  if (b.readUInt32BE(8) !== 13 || b.toString('latin1', 12, 16) !== 'IHDR') throw new Error('malformed PNG: the first chunk is not a 13-byte IHDR');
  // IHDR: bit depth (1, 2, 4, 8, 16) and colour type; libvips expands a palette to RGB(A).
  const depth = b[24];
  const channels = ({ 0: 1, 2: 3, 3: 4, 4: 2, 6: 4 } as Record<number, number>)[b[25]];
  if (channels === undefined) throw new Error(`malformed PNG: colour type ${b[25]} (expected 0, 2, 3, 4 or 6)`);
  return { format: 'png', width: b.readUInt32BE(16), height: b.readUInt32BE(20), channels, sampleBytes: depth > 8 ? 2 : 1 };
}

function jpegHeader(read: ReadAt, size: number): ImageHeader {
  // Walk the marker segments up to the first SOFn frame header.
  let pos = 2;
  for (let seg = 0; seg < 100_000; seg++) {
    const m = read(pos, 2);
    if (m.length < 2) break;
    if (m[0] !== 0xff) throw new Error(`malformed JPEG: expected a marker at byte ${pos}, found 0x${m[0].toString(16)}`);
    const code = m[1];
    if (code === 0xff) { pos += 1; continue; } // fill byte
    if (code === 0xd8 || code === 0x01 || (code >= 0xd0 && code <= 0xd7)) { pos += 2; continue; } // no length
    if (code === 0xd9 || code === 0xda) throw new Error(`malformed JPEG: ${code === 0xd9 ? 'end of image' : 'scan data'} before any frame header (SOF)`);
    const l = read(pos + 2, 2);
    if (l.length < 2) break;
    const len = l.readUInt16BE(0);
    if (len < 2) throw new Error(`malformed JPEG: segment length ${len} at byte ${pos}`);
    const isSof = code >= 0xc0 && code <= 0xcf && code !== 0xc4 && code !== 0xc8 && code !== 0xcc;
    if (isSof) {
      // SOF: precision (8 or 12 bits), height, width, number of components (1, 3 or 4)
      const f = read(pos + 4, 6);
      if (f.length < 6) break;
      return { format: 'jpeg', height: f.readUInt16BE(1), width: f.readUInt16BE(3), channels: Math.max(1, f[5]), sampleBytes: f[0] > 8 ? 2 : 1 };
    }
    pos += 2 + len;
    if (pos >= size) break;
  }
  throw new Error('truncated JPEG: no frame header (SOF) found');
}

function webpHeader(read: ReadAt): ImageHeader {
  const b = read(0, 30);
  if (b.length < 30) throw new Error(`truncated WebP: ${b.length} bytes`);
  const chunk = b.toString('latin1', 12, 16);
  if (chunk === 'VP8 ') {
    if (b[23] !== 0x9d || b[24] !== 0x01 || b[25] !== 0x2a) throw new Error('malformed WebP: bad VP8 start code');
    return { format: 'webp', width: b.readUInt16LE(26) & 0x3fff, height: b.readUInt16LE(28) & 0x3fff, channels: 3, sampleBytes: 1 };
  }
  if (chunk === 'VP8L') {
    if (b[20] !== 0x2f) throw new Error('malformed WebP: bad VP8L signature');
    const bits = b.readUInt32LE(21);
    return { format: 'webp', width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1, channels: 4, sampleBytes: 1 };
  }
  if (chunk === 'VP8X') {
    return { format: 'webp', width: b.readUIntLE(24, 3) + 1, height: b.readUIntLE(27, 3) + 1, channels: 4, sampleBytes: 1 };
  }
  throw new Error(`malformed WebP: unknown first chunk ${JSON.stringify(chunk)}`);
}

/** Format and claimed size from the first bytes; throws Error with the reason. */
export function parseImageHeader(read: ReadAt, size: number): ImageHeader {
  const head = read(0, 12);
  let h: ImageHeader;
  if (head.length >= 8 && head.subarray(0, 8).equals(PNG_SIG)) h = pngHeader(read);
  else if (head.length >= 3 && head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) h = jpegHeader(read, size);
  else if (head.length >= 12 && head.toString('latin1', 0, 4) === 'RIFF' && head.toString('latin1', 8, 12) === 'WEBP') h = webpHeader(read);
  else if (size === 0) throw new Error('empty file');
  else throw new Error('not a JPEG, PNG or WebP image (unknown signature)');
  if (h.width === 0 || h.height === 0) throw new Error(`malformed ${h.format.toUpperCase()}: size ${h.width}x${h.height}`);
  return h;
}

/** Bytes of the decoded pixels the header announces. */
export const decodedBytes = (h: ImageHeader): number => h.width * h.height * h.channels * h.sampleBytes;

function checkLimits(h: ImageHeader, size: number, lim: ImageLimits): void {
  const F = h.format.toUpperCase();
  if (h.width * h.height > lim.maxPixels) {
    throw new Error(`${F} claims ${h.width}x${h.height} = ${h.width * h.height} pixels, above the limit of ${lim.maxPixels} (data.max_image_pixels)`);
  }
  const ratio = Math.max(h.width, h.height) / Math.min(h.width, h.height);
  if (ratio > MAX_ASPECT_RATIO) {
    throw new Error(`${F} is ${h.width}x${h.height}, an aspect ratio of ${ratio < 1000 ? ratio.toFixed(1) : Math.round(ratio)}:1, above the limit of ${MAX_ASPECT_RATIO}:1 ` +
      '(the centre crop would keep a sliver of it, and decoding such shapes costs far more time and memory than their pixels suggest)');
  }
  const bytes = decodedBytes(h);
  const maxBytes = DECODED_BYTES_PER_PIXEL * lim.maxPixels;
  if (bytes > maxBytes) {
    throw new Error(`${F} ${h.width}x${h.height} with ${h.channels} channel(s) of ${8 * h.sampleBytes} bits decodes to ${bytes} bytes, ` +
      `above the limit of ${maxBytes} (${DECODED_BYTES_PER_PIXEL} bytes per pixel of data.max_image_pixels = ${lim.maxPixels})`);
  }
  if (size > lim.maxBytes) throw new Error(`file is ${size} bytes, above the limit of ${lim.maxBytes} (data.max_image_bytes)`);
}

/** libvips reports one line per warning, often repeated: distinct lines joined, bounded. */
function oneLine(msg: string): string {
  const lines = [...new Set(msg.split('\n').map((l) => l.trim()).filter(Boolean))];
  const s = lines.join('; ');
  return s.length > 300 ? s.slice(0, 300) + '...' : s;
}

const bufferReader = (buf: Buffer): ReadAt => (pos, n) => buf.subarray(Math.min(pos, buf.length), Math.min(pos + n, buf.length));

/** Header of an image file (a few positional reads), checked against the limits. Throws DataError naming the file. */
export function readImageHeader(file: string, lim: ImageLimits = DEFAULT_LIMITS): ImageHeader {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw new DataError(file, `cannot open: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const size = fstatSync(fd).size;
    const read: ReadAt = (pos, n) => {
      const b = Buffer.alloc(n);
      return b.subarray(0, readSync(fd, b, 0, n, pos));
    };
    const h = parseImageHeader(read, size);
    checkLimits(h, size, lim);
    return h;
  } catch (e) {
    if (e instanceof DataError) throw e;
    throw new DataError(file, (e as Error).message);
  } finally {
    closeSync(fd);
  }
}

/**
 * Decodes image bytes to RGB uint8 (grey expanded, alpha dropped without
 * compositing, palette expanded, 16-bit reduced to 8), as PIL's
 * `convert("RGB")` does: the stored values, an embedded ICC profile ignored as
 * Pillow ignores it (DiT's latents were made that way). No EXIF rotation (PIL does
 * none either). Throws
 * DataError naming `name` for anything that is not a whole, valid image within
 * the limits.
 */
export async function decodeImage(buf: Buffer, name: string, lim: ImageLimits = DEFAULT_LIMITS): Promise<RgbImage> {
  let h: ImageHeader;
  try {
    h = parseImageHeader(bufferReader(buf), buf.length);
    checkLimits(h, buf.length, lim);
  } catch (e) {
    throw new DataError(name, (e as Error).message);
  }
  let out: { data: Buffer; info: OutputInfo };
  try {
    out = await sharp(buf, { limitInputPixels: lim.maxPixels, failOn: 'warning', sequentialRead: true, ignoreIcc: true })
      .toColourspace('srgb')
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new DataError(name, `cannot decode ${h.format.toUpperCase()}: ${oneLine((e as Error).message)}`);
  }
  const { width, height, channels } = out.info;
  if (width !== h.width || height !== h.height) {
    throw new DataError(name, `decoded size ${width}x${height} differs from the header's ${h.width}x${h.height}`);
  }
  if (channels !== 3 || out.data.length !== width * height * 3) {
    throw new DataError(name, `decoded to ${channels} channels (${out.data.length} bytes), expected RGB ${width}x${height}x3`);
  }
  return { data: new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.length), width, height };
}

/** Reads and decodes an image file; the size limit is checked before the file is read. */
export async function decodeImageFile(file: string, lim: ImageLimits = DEFAULT_LIMITS): Promise<RgbImage> {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw new DataError(file, `cannot open: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let buf: Buffer;
  try {
    const size = fstatSync(fd).size;
    if (size > lim.maxBytes) throw new DataError(file, `file is ${size} bytes, above the limit of ${lim.maxBytes} (data.max_image_bytes)`);
    buf = Buffer.alloc(size);
    let got = 0;
    while (got < size) {
      const n = readSync(fd, buf, got, size - got, got);
      if (n === 0) break;
      got += n;
    }
    buf = buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
  return decodeImage(buf, file, lim);
}
