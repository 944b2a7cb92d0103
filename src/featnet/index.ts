// The trained feature network (a small CNN or ViT classifier, native/src/core/cnn.cpp, vit.cpp):
// training with a held-out split, save/load, and its evaluation feature space.
// Importing this module registers the `featnet:<file>` feature-space spec.
import { registerFeatNetResolver } from './space.js';

export { FeatNet, checkFeatNetConfig, describeFeatNet, featNetFeatureDim, FEATNET_ARCHS, type FeatNetArch, type CNNFeatNetConfig, type ViTFeatNetConfig, type FeatNetConfig, type FeatNetHyper, type FeatNetOptions, type FeatNetStepResult } from './native.js';
export { trainFeatNet, featNetAccuracy, defaultFeatNetConfig, featNetMatches, type FeatNetOverrides, splitIndices, SubsetDataset, featnetLr, type FeatNetTrainOptions, type FeatNetTrainResult } from './train.js';
export { saveFeatNet, loadFeatNet, readFeatNetInfo, FEATNET_FORMAT, type FeatNetInfo } from './io.js';
export { featNetFeatureSpace, loadFeatNetFeatureSpace, featNetSpaceName, imagesToModelInput, registerFeatNetResolver, FEATNET_SPEC_PREFIX } from './space.js';

registerFeatNetResolver();
