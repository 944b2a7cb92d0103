// Data sets from the config's data: section.
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';

import type { Config } from '../config/schema.js';
import { ImageFolderDataset } from './image-folder.js';
import type { ImageLimits } from './image-decode.js';
import { LatentsDataset } from './latents.js';
import { FeatureFolderDataset, findFeatureFolders, LatentShardsDataset, MANIFEST } from './latent-shards.js';
import { DataError } from '../errors.js';
import { SyntheticDataset } from './synthetic.js';
import { SceneDataset } from './scenes.js';
import { DigitsDataset } from './digits.js';
import { FashionMnistDataset } from './fashion-mnist.js';
import type { Dataset } from './types.js';

export { BatchLoader, type DataPosition } from './loader.js';
export { SyntheticDataset, renderSynthetic, syntheticClassName } from './synthetic.js';
export { ImageFolderDataset, scanImageFolder } from './image-folder.js';
export { LatentsDataset } from './latents.js';
export { LatentShardsDataset, FeatureFolderDataset, readManifest, type LatentManifest } from './latent-shards.js';
export { SceneDataset, renderScene, describeScene, SCENE_CLASSES } from './scenes.js';
export { DigitsDataset, readDigits, parseDigits, DIGITS_FILE } from './digits.js';
export {
  FashionMnistDataset, readFashionMnist, readIdxFile, parseIdx, FASHION_MNIST_ROOT, FASHION_MNIST_CLASSES, MAX_IDX_BYTES,
  type FashionSplit, type FashionFit,
} from './fashion-mnist.js';
export type { Batch, Dataset } from './types.js';

/** The image limits of the config's data: section. */
export function imageLimits(c: Config): ImageLimits {
  return { maxPixels: c.data.max_image_pixels, maxBytes: c.data.max_image_bytes };
}

export function makeDataset(c: Config, warn?: (msg: string) => void): Dataset {
  const d = c.data;
  switch (d.name) {
    case 'synthetic':
      return new SyntheticDataset({ seed: d.data_seed ?? c.seed, size: d.num_samples, imageSize: d.image_size, channels: d.channels, numClasses: d.num_classes });
    case 'scenes':
      return new SceneDataset({ seed: d.data_seed ?? c.seed, size: d.num_samples, imageSize: d.image_size, channels: d.channels });
    case 'digits':
      return new DigitsDataset({ file: d.root ? path.resolve(d.root) : undefined, imageSize: d.image_size, channels: d.channels });
    case 'fashion_mnist':
      // training uses the training split; the test split is the experiment's held-out reference
      return new FashionMnistDataset({
        root: d.root ? path.resolve(d.root) : null, split: 'train', imageSize: d.image_size, channels: d.channels, numClasses: d.num_classes, fit: d.fashion_mnist_fit,
      });
    case 'image_folder':
      return new ImageFolderDataset({
        root: path.resolve(d.root!), imageSize: d.image_size, channels: d.channels, numClasses: d.num_classes,
        centerCrop: d.center_crop, skipBadFiles: d.skip_bad_files, limits: imageLimits(c), warn,
      });
    case 'latents': {
      const root = path.resolve(d.root!);
      if (existsSync(root) && statSync(root).isDirectory()) {
        const o = {
          root, numClasses: d.num_classes, shape: [c.model.in_channels, c.model.input_size, c.model.input_size] as const,
          skipBadFiles: d.skip_bad_files, configuredScale: d.latent_scale, warn,
        };
        if (existsSync(path.join(root, MANIFEST))) return new LatentShardsDataset(o);
        const feats = findFeatureFolders(root);
        if (feats) return new FeatureFolderDataset(o, feats);
        throw new DataError(root, `a latents folder (data.root) must hold ${MANIFEST} (written by speed-train encode) or fast-DiT's <name>_features/ and <name>_labels/ folders`);
      }
      return new LatentsDataset({
        file: path.resolve(d.root!), labels: d.labels ? path.resolve(d.labels) : null, numClasses: d.num_classes,
        shape: [c.model.in_channels, c.model.input_size, c.model.input_size], scale: d.latent_scale, skipBadFiles: d.skip_bad_files, warn,
      });
    }
  }
}
