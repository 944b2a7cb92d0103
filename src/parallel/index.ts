export { initWorld, world, anyRank, maxOverRanks, broadcastJson, gatherBytes, barrier, abortWorld, quietStream, launcherWorldSize, type World } from './world.js';
export { placeRows, shardOf, sliceRows, type Shard } from './shard.js';
export { parallelAddon, type ParallelInfo } from './native.js';
