// The 'inception-v3' feature space: the FID Inception network (pool_3 features,
// 2048) with its logits (Inception Score) and mixed_6/conv spatial features
// (sFID), the space in which published DiT / SpeeD / ADM numbers are reported.
// The network lives in ./inception.ts; it is loaded on first use only, so the
// other feature spaces work without it.
import { existsSync } from 'node:fs';

import { ConfigError, SpeedTrainError } from '../errors.js';
import type { FeatureSpace } from './space.js';

export const INCEPTION_SPACE = 'inception-v3';
/** pool_3 features, logits and the first 7 channels of mixed_6/conv (17x17x7), as ADM's evaluator */
export const INCEPTION_DIMS = { features: 2048, logits: 1008, spatial: 2023 } as const;

interface InceptionNet {
  dispose(): void;
}
interface InceptionModule {
  InceptionV3: { load(weightsPath: string, opts?: { device?: 'cpu' | 'cuda'; threads?: number }): Promise<InceptionNet> };
  inceptionFeatureSpace(net: InceptionNet, batchSize?: number): FeatureSpace;
}

/** Checks that a space is the one the Inception metrics assume (names and lengths). */
export function checkInceptionSpace(space: FeatureSpace): FeatureSpace {
  const e = space.extras ?? {};
  if (space.name !== INCEPTION_SPACE || space.dim !== INCEPTION_DIMS.features || e.logits !== INCEPTION_DIMS.logits ||
    e.spatial !== INCEPTION_DIMS.spatial || !space.extractAll) {
    throw new SpeedTrainError(
      `the Inception network gave feature space '${space.name}' (dim ${space.dim}, logits ${e.logits ?? 'none'}, spatial ${e.spatial ?? 'none'}); ` +
        `expected '${INCEPTION_SPACE}' with ${INCEPTION_DIMS.features} features, ${INCEPTION_DIMS.logits} logits and ${INCEPTION_DIMS.spatial} spatial features`,
    );
  }
  return space;
}

export interface InceptionSpaceOptions {
  device?: 'cpu' | 'cuda';
  threads?: number;
  /** the config key that named the weights, for messages */
  key?: string;
}

/** Loads the Inception-v3 weights and returns its feature space. */
export async function loadInceptionFeatureSpace(weights: string | null | undefined, opts: InceptionSpaceOptions = {}): Promise<FeatureSpace> {
  const key = opts.key ?? 'evaluate.inception.path';
  if (!weights) {
    throw new ConfigError(key, `feature space '${INCEPTION_SPACE}' needs the Inception-v3 weights file: set ${key}=FILE or pass --inception FILE`);
  }
  if (!existsSync(weights)) throw new ConfigError(key, `${weights} does not exist (expected the Inception-v3 weights file)`);
  // A computed specifier: this build may not hold the network yet, and then
  // only this space is unavailable.
  const specifier: string = './inception.js';
  let mod: InceptionModule;
  try {
    mod = (await import(specifier)) as InceptionModule;
  } catch (e) {
    const code = (e as { code?: string }).code;
    // only the network module itself missing (not a module it imports)
    if (code === 'ERR_MODULE_NOT_FOUND' && /eval[\\/]inception\.(js|ts)\b/.test((e as Error).message)) {
      throw new SpeedTrainError(`feature space '${INCEPTION_SPACE}' is not available: this build has no Inception-v3 network (src/eval/inception.ts)`);
    }
    throw e;
  }
  const net = await mod.InceptionV3.load(weights, { device: opts.device, threads: opts.threads });
  try {
    return checkInceptionSpace(mod.inceptionFeatureSpace(net));
  } catch (e) {
    net.dispose();
    throw e;
  }
}
