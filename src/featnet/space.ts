// The trained feature network as an evaluation feature space: images -> the
// classifier's features (the CNN's penultimate fc1 activations, or the ViT's
// mean-pooled final LayerNorm). Its name carries the arch, the file and the
// held-out accuracy, so every metric printed in this space says which
// classifier defined it (e.g. "featnet-cnn(featnet.safetensors, acc 0.912)");
// `classifier` carries the accuracy for the evaluation's threshold, and the
// logits (extractAll) score conditional samples against their labels.
import path from 'node:path';

import { checkImageBatch, registerFeatureSpaceResolver, type FeatureOutputs, type FeatureSpace, type ImageBatch } from '../eval/features.js';
import type { Device } from '../native.js';
import { describeFeatNet, featNetFeatureDim, type FeatNet, type FeatNetArch } from './native.js';
import { loadFeatNet, type FeatNetInfo } from './io.js';

export const FEATNET_SPEC_PREFIX = 'featnet:';

/** uint8 [N, H, W, C] -> float32 [N, C, H, W] in [-1, 1] (the training scale of the data loaders). */
export function imagesToModelInput(images: ImageBatch): Float32Array {
  const { data, N, H, W, C } = images;
  const out = new Float32Array(N * C * H * W);
  const plane = H * W;
  for (let n = 0; n < N; n++) {
    for (let p = 0; p < plane; p++) {
      const s = (n * plane + p) * C;
      for (let c = 0; c < C; c++) out[(n * C + c) * plane + p] = data[s + c] / 127.5 - 1;
    }
  }
  return out;
}

export function featNetSpaceName(file: string, accuracy: number, arch: FeatNetArch): string {
  return `featnet-${arch}(${path.basename(file)}, acc ${accuracy.toFixed(3)})`;
}

/** A FeatureSpace over a loaded network (it stays alive as long as the space). */
export function featNetFeatureSpace(net: FeatNet, info: Pick<FeatNetInfo, 'accuracy' | 'heldOutSize' | 'trainedOn'>, file: string): FeatureSpace {
  const c = net.config;
  const name = featNetSpaceName(file, info.accuracy, c.arch);
  const input = (images: ImageBatch): Float32Array => {
    checkImageBatch(images, `feature space ${name}`);
    if (images.H !== c.inputSize || images.W !== c.inputSize || images.C !== c.inChannels) {
      throw new RangeError(`feature space ${name}: the network takes ${c.inputSize}x${c.inputSize}x${c.inChannels} images, got ${images.H}x${images.W}x${images.C}`);
    }
    return imagesToModelInput(images);
  };
  return {
    name,
    dim: featNetFeatureDim(c),
    description: `${describeFeatNet(c)}, trained by speed-train on ${info.trainedOn}; ` +
      `held-out accuracy ${info.accuracy.toFixed(4)} on ${info.heldOutSize} images; features = ` +
      (c.arch === 'cnn' ? `the ${c.fcHidden} fc1 activations after ReLU (penultimate layer)` : 'mean-pooled final LayerNorm'),
    classifier: { numClasses: c.numClasses, heldOutAccuracy: info.accuracy, heldOutSize: info.heldOutSize },
    extras: { logits: c.numClasses },
    async extract(images: ImageBatch): Promise<Float64Array> {
      const x = input(images);
      if (images.N === 0) return new Float64Array(0);
      return Float64Array.from(await net.features(x));
    },
    async extractAll(images: ImageBatch): Promise<FeatureOutputs> {
      const x = input(images);
      if (images.N === 0) return { features: new Float64Array(0), logits: new Float64Array(0) };
      const features = Float64Array.from(await net.features(x));
      return { features, logits: Float64Array.from(await net.logits(x)) };
    },
  };
}

/** The feature space of a saved network file. */
export function loadFeatNetFeatureSpace(file: string, opts: { device?: Device; threads?: number } = {}): FeatureSpace {
  const { net, info } = loadFeatNet(file, opts);
  return featNetFeatureSpace(net, info, file);
}

/** Lets `featnet:<file.safetensors>` name a feature space wherever src/eval resolves one. */
export function registerFeatNetResolver(): void {
  registerFeatureSpaceResolver(
    'featnet',
    (spec) => (spec.startsWith(FEATNET_SPEC_PREFIX) ? loadFeatNetFeatureSpace(spec.slice(FEATNET_SPEC_PREFIX.length)) : null),
    "'featnet:<file.safetensors>' (a feature network trained by `speed-train featnet`)",
  );
}
