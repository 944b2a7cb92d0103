// The architectures of the feature network (a module without dependencies, so
// that specs and configs can name them without loading the addon).
export const FEATNET_ARCHS = ['cnn', 'vit'] as const;
export type FeatNetArch = (typeof FEATNET_ARCHS)[number];
