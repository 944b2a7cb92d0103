// Data sets from the config's data: section.
import path from 'node:path';

import type { Config } from '../config/schema.js';
import { ImageFolderDataset } from './image-folder.js';
import { LatentsDataset } from './latents.js';
import { SyntheticDataset } from './synthetic.js';
import { SceneDataset } from './scenes.js';
import { DigitsDataset } from './digits.js';
import type { Dataset } from './types.js';

export { BatchLoader, type DataPosition } from './loader.js';
export { SyntheticDataset, renderSynthetic, syntheticClassName } from './synthetic.js';
export { ImageFolderDataset, scanImageFolder } from './image-folder.js';
export { LatentsDataset } from './latents.js';
export { SceneDataset, renderScene, describeScene, SCENE_CLASSES } from './scenes.js';
export { DigitsDataset, readDigits, parseDigits, DIGITS_FILE } from './digits.js';
export type { Batch, Dataset } from './types.js';

export function makeDataset(c: Config, warn?: (msg: string) => void): Dataset {
  const d = c.data;
  switch (d.name) {
    case 'synthetic':
      return new SyntheticDataset({ seed: d.data_seed ?? c.seed, size: d.num_samples, imageSize: d.image_size, channels: d.channels, numClasses: d.num_classes });
    case 'scenes':
      return new SceneDataset({ seed: d.data_seed ?? c.seed, size: d.num_samples, imageSize: d.image_size, channels: d.channels });
    case 'digits':
      return new DigitsDataset({ file: d.root ? path.resolve(d.root) : undefined, imageSize: d.image_size, channels: d.channels });
    case 'image_folder':
      return new ImageFolderDataset({
        root: path.resolve(d.root!), imageSize: d.image_size, channels: d.channels, numClasses: d.num_classes,
        centerCrop: d.center_crop, skipBadFiles: d.skip_bad_files, warn,
      });
    case 'latents':
      return new LatentsDataset({
        file: path.resolve(d.root!), labels: d.labels ? path.resolve(d.labels) : null, numClasses: d.num_classes,
        shape: [c.model.in_channels, c.model.input_size, c.model.input_size], scale: d.latent_scale, skipBadFiles: d.skip_bad_files, warn,
      });
  }
}
