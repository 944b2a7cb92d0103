// Real images of a data set as uint8 [N, H, W, C], quantised the way samples are,
// and the default reference set of -p evaluate and the speed-up experiment.
import type { Config } from '../config/index.js';
import path from 'node:path';

import { FashionMnistDataset, imageLimits, ImageFolderDataset, makeDataset, SceneDataset, SyntheticDataset, type Dataset } from '../data/index.js';
import { ConfigError } from '../errors.js';
import type { ImageSet } from './index.js';
import { toUint8NHWC } from '../generate/images.js';

/** [N, C, H, W] floats of `data` at `indices` -> uint8 [N, H, W, C] (the samples' quantisation). */
export async function realImages(data: Dataset, indices: Int32Array, source: string): Promise<ImageSet> {
  const [C, H, W] = data.shape;
  const out = new Uint8Array(indices.length * H * W * C);
  for (let a = 0; a < indices.length; a += 256) {
    const idx = indices.subarray(a, Math.min(indices.length, a + 256));
    const b = await data.load(idx, new Uint8Array(idx.length));
    out.set(toUint8NHWC(b.x, idx.length, C, H, W), a * H * W * C);
  }
  return { data: out, N: indices.length, H, W, C, source };
}

export const range = (from: number, n: number): Int32Array => Int32Array.from({ length: n }, (_, i) => from + i);

/** A seeded permutation of 0..n-1 (an LCG Fisher-Yates: stable across versions, no Rng state needed). */
export function seededOrder(n: number, seed: number): Int32Array {
  const order = range(0, n);
  let s = (seed * 2654435761) >>> 0;
  for (let i = order.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    const t = order[i]; order[i] = order[j]; order[j] = t;
  }
  return order;
}

/**
 * `n` real images of the configured data set. The generated sets (synthetic,
 * scenes) are functions of (data seed, index), so indices past data.num_samples were never trained
 * on: those are used. Fashion-MNIST gives a seeded subset of its test split. Other
 * data sets give a seeded subset of their images (as ImageNet FID uses training images).
 */
export async function referenceImages(c: Config, n: number, keyPath = 'evaluate.num_reference'): Promise<ImageSet> {
  const d = c.data;
  if (d.name === 'synthetic' || d.name === 'scenes') {
    const seed = d.data_seed ?? c.seed;
    const all = d.name === 'synthetic'
      ? new SyntheticDataset({ seed, size: d.num_samples + n, imageSize: d.image_size, channels: d.channels, numClasses: d.num_classes })
      : new SceneDataset({ seed, size: d.num_samples + n, imageSize: d.image_size, channels: d.channels });
    try {
      return await realImages(all, range(d.num_samples, n), `${d.name} data (seed ${seed}), ${n} held-out images`);
    } finally {
      await all.close();
    }
  }
  // A latent data set holds no images: the reference is the encoded image
  // folder, centre-cropped the same way (encode.images, encode.image_size).
  if (d.name === 'latents') {
    if (!c.encode.images) {
      throw new ConfigError(keyPath.startsWith('evaluate') ? 'evaluate.reference' : keyPath,
        'the data set is latents (no images to compare with): set evaluate.reference (an .npz of uint8 images, e.g. the ADM reference batch, or a PNG/JPEG folder) or encode.images');
    }
    const folder = new ImageFolderDataset({
      root: path.resolve(c.encode.images), imageSize: c.encode.image_size, channels: 3, numClasses: d.num_classes,
      centerCrop: true, skipBadFiles: d.skip_bad_files, limits: imageLimits(c), rootKey: 'encode.images',
    });
    try {
      if (folder.size < n) throw new ConfigError(keyPath, `the image folder has ${folder.size} images, fewer than the ${n} asked for`);
      return await realImages(folder, seededOrder(folder.size, c.seed).slice(0, n), `${folder.description}, ${n} images (seeded subset)`);
    } finally {
      await folder.close();
    }
  }
  // Fashion-MNIST has a test split no run trains on: the reference comes from it.
  if (d.name === 'fashion_mnist') {
    const test = new FashionMnistDataset({
      root: d.root ? path.resolve(d.root) : null, split: 't10k', imageSize: d.image_size, channels: d.channels, numClasses: d.num_classes, fit: d.fashion_mnist_fit,
    });
    try {
      if (test.size < n) throw new ConfigError(keyPath, `the Fashion-MNIST test split has ${test.size} images, fewer than the ${n} asked for`);
      return await realImages(test, seededOrder(test.size, c.seed).slice(0, n), `${test.description}, ${n} images (seeded subset; never trained on)`);
    } finally {
      await test.close();
    }
  }
  const data = makeDataset(c);
  try {
    if (data.size < n) throw new ConfigError(keyPath, `the data set has ${data.size} images, fewer than the ${n} asked for`);
    return await realImages(data, seededOrder(data.size, c.seed).slice(0, n), `${data.description}, ${n} images (seeded subset)`);
  } finally {
    await data.close();
  }
}
