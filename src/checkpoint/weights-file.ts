// Bare DiT weights: one safetensors file holding a facebookresearch/DiT
// state_dict (what `speed-train convert` writes from DiT-XL-2-256x256.pt, or
// `safetensors.torch.save_file(model.state_dict(), ...)`), F32, F16 or BF16.
// The architecture is read off the tensor shapes, so such a file can be
// sampled from, or used to initialise training, without a state.json.
import { statSync } from 'node:fs';

import type { Config } from '../config/schema.js';
import { CheckpointError, ConfigError } from '../errors.js';
import { readSafetensorsHeader } from '../io/safetensors.js';
import type { ModelConfig } from '../native.js';
import { loadTensorsInto, type CheckpointModel } from './index.js';

/** What the shapes of a DiT state_dict determine. */
export interface InferredDiT {
  inputSize: number;
  patchSize: number;
  inChannels: number;
  hiddenSize: number;
  depth: number;
  mlpRatio: number;
  learnSigma: boolean;
  /** rows of y_embedder.embedding_table (num_classes, + 1 with class dropout); 0: no table */
  tableRows: number;
  /** the DiT preset with this depth and width (its head count), if any */
  preset: { size: string; numHeads: number } | null;
}

/** DiT's presets (native/src/core/config.cpp): size -> depth, hidden size, heads. */
const PRESETS: readonly [string, number, number, number][] = [
  ['Ti', 12, 192, 3], ['S', 12, 384, 6], ['B', 12, 768, 12], ['L', 24, 1024, 16], ['XL', 28, 1152, 16],
];

/** True for a path naming a file (not a checkpoint directory) that ends in .safetensors. */
export function isWeightsFile(spec: string | null | undefined): spec is string {
  if (!spec || !/\.safetensors$/i.test(spec)) return false;
  try {
    return statSync(spec).isFile();
  } catch {
    return false;
  }
}

/** Reads the architecture of a DiT state_dict off its tensor shapes. */
export function inferDiT(shapes: ReadonlyMap<string, readonly number[]>, file: string): InferredDiT {
  const need = (name: string, rank: number): readonly number[] => {
    const s = shapes.get(name);
    if (!s) {
      throw new CheckpointError(file, `not a DiT state_dict: tensor ${name} is missing (found ${[...shapes.keys()].slice(0, 4).join(', ')}${shapes.size > 4 ? ', ...' : ''})`);
    }
    if (s.length !== rank) throw new CheckpointError(file, `tensor ${name}: expected ${rank} dimensions, found shape [${s}]`);
    return s;
  };
  const xe = need('x_embedder.proj.weight', 4); // [D, C, p, p]
  const [D, C, p, p2] = xe;
  if (p !== p2 || p < 1) throw new CheckpointError(file, `tensor x_embedder.proj.weight: expected a square patch [D, C, p, p], found [${xe}]`);
  const pe = need('pos_embed', 3); // [1, T, D]
  const tokens = pe[1];
  const grid = Math.round(Math.sqrt(tokens));
  if (pe[0] !== 1 || pe[2] !== D || grid * grid !== tokens) {
    throw new CheckpointError(file, `tensor pos_embed: expected [1, T, ${D}] with T a square number of tokens, found [${pe}]`);
  }
  let depth = 0;
  while (shapes.has(`blocks.${depth}.attn.qkv.weight`)) depth++;
  if (depth === 0) throw new CheckpointError(file, 'not a DiT state_dict: no blocks.0.attn.qkv.weight');
  const fc1 = need('blocks.0.mlp.fc1.weight', 2); // [mlp_hidden, D]
  const fl = need('final_layer.linear.weight', 2); // [p*p*outC, D]
  const outC = fl[0] / (p * p);
  if (!Number.isInteger(outC) || (outC !== C && outC !== 2 * C)) {
    throw new CheckpointError(file, `tensor final_layer.linear.weight [${fl}]: expected ${p * p * C} (learn_sigma false) or ${p * p * 2 * C} (learn_sigma true) output rows for patch ${p} and ${C} channels`);
  }
  const table = shapes.get('y_embedder.embedding_table.weight');
  const hit = PRESETS.find(([, d, h]) => d === depth && h === D);
  return {
    inputSize: grid * p,
    patchSize: p,
    inChannels: C,
    hiddenSize: D,
    depth,
    mlpRatio: fc1[0] / D,
    learnSigma: outC === 2 * C,
    tableRows: table ? table[0] : 0,
    preset: hit ? { size: hit[0], numHeads: hit[3] } : null,
  };
}

export const describeInferred = (a: InferredDiT, m: Config['model']): string =>
  `${m.name}${m.depth !== null ? ` depth ${m.depth}` : ''}${m.hidden_size !== null ? ` hidden ${m.hidden_size}` : ''}, ` +
  `input ${a.inputSize}x${a.inputSize}x${a.inChannels} (pos_embed ${(a.inputSize / a.patchSize) ** 2} tokens), learn_sigma ${a.learnSigma}, ` +
  `${m.num_classes} classes${m.num_classes > 0 ? (m.class_dropout_prob > 0 ? ' + the class-dropout row' : ' (no class-dropout row)') : ''}, mlp_ratio ${a.mlpRatio}`;

/**
 * The config's model section for weights of architecture `a`. What the shapes
 * leave open comes from `cfg`: the head count of a non-preset width, and
 * whether the last embedding row is the class-dropout (null) class.
 */
export function modelSectionFor(a: InferredDiT, cfg: Config['model'], file: string): Config['model'] {
  let numHeads: number | null = null;
  if (!a.preset) {
    numHeads = cfg.num_heads ?? (a.hiddenSize % 64 === 0 ? a.hiddenSize / 64 : null);
    if (numHeads === null || a.hiddenSize % numHeads !== 0) {
      throw new ConfigError('model.num_heads', `the weights in ${file} are ${a.hiddenSize} wide, not a DiT preset: set model.num_heads (a divisor of ${a.hiddenSize})`);
    }
  }
  // The table has num_classes rows, plus one (the null class) when trained with class dropout.
  let numClasses = 0;
  let dropout = 0;
  if (a.tableRows > 0) {
    if (cfg.num_classes === a.tableRows) {
      numClasses = a.tableRows;
      dropout = 0;
    } else {
      numClasses = a.tableRows - 1;
      dropout = cfg.class_dropout_prob > 0 ? cfg.class_dropout_prob : 0.1;
    }
  }
  return {
    ...cfg,
    name: `DiT-${a.preset?.size ?? 'S'}/${a.patchSize}`,
    input_size: a.inputSize,
    in_channels: a.inChannels,
    num_classes: numClasses,
    class_dropout_prob: numClasses > 0 ? dropout : cfg.class_dropout_prob,
    learn_sigma: a.learnSigma,
    depth: a.preset ? null : a.depth,
    hidden_size: a.preset ? null : a.hiddenSize,
    num_heads: a.preset ? null : numHeads,
    mlp_ratio: a.mlpRatio,
  };
}

/** Where a model built from `want` differs from the weights (for init_from: each is an error). */
export function contradictions(a: InferredDiT, want: ModelConfig): string[] {
  const out: string[] = [];
  const cmp = (what: string, weights: unknown, config: unknown) => {
    if (weights !== config) out.push(`${what}: weights ${String(weights)}, config ${String(config)}`);
  };
  cmp('patch size (model.name)', a.patchSize, want.patchSize);
  cmp('depth (model.name / model.depth)', a.depth, want.depth);
  cmp('hidden size (model.name / model.hidden_size)', a.hiddenSize, want.hiddenSize);
  cmp('input size (model.input_size, from pos_embed)', a.inputSize, want.inputSize);
  cmp('in channels (model.in_channels)', a.inChannels, want.inChannels);
  cmp('learn_sigma (model.learn_sigma)', a.learnSigma, want.learnSigma);
  cmp('mlp_ratio (model.mlp_ratio)', a.mlpRatio, want.mlpRatio);
  const rows = want.numClasses > 0 ? want.numClasses + (want.classDropoutProb > 0 ? 1 : 0) : 0;
  if (rows !== a.tableRows) {
    out.push(`class embedding rows (model.num_classes${want.numClasses > 0 ? ' + 1 with class_dropout_prob > 0' : ''}): weights ${a.tableRows}, config ${rows}`);
  }
  return out;
}

/** The architecture a weights file implies, from its header alone (no tensor data is read). */
export function readWeightsFile(file: string): { arch: InferredDiT } {
  const { entries } = readSafetensorsHeader(file);
  return { arch: inferDiT(new Map(entries.map((e) => [e.name, e.shape])), file) };
}

/**
 * Loads a bare weights file into both the raw and the EMA slot (the file holds
 * one set of weights), streaming one tensor at a time: any size of file.
 */
export function loadWeightsFile(model: CheckpointModel, file: string): void {
  loadTensorsInto(file, model.params(), (name, w) => {
    model.writeParam(name, 'model', w);
    model.writeParam(name, 'ema', w);
  });
}
