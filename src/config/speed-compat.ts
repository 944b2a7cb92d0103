// SpeeD's spellings (github.com/1zeryu/SpeeD, configs/image/imagenet_256/*.yaml and
// speed/diffusion/iddpm) mapped onto speed-train's keys, so a copied SpeeD
// config chain loads. SpeeD builds its objects with Hydra-style `_target_`
// keys and passes `diffusion:` to IDDPM(...) as keyword arguments; those
// become our keys here. Keys that only configure PyTorch tooling (wandb,
// DataLoader workers, TF32) or that SpeeD's code never reads are dropped with
// one warning naming each. What SpeeD builds and speed-train does not (a UNet,
// MDT's masked training, text conditioning) changes the result, so it is
// refused with a message naming it rather than dropped.
// The loader logs one line listing every mapping used.
import type { Provenance, Tree } from './tree.js';
import type { Problems } from './problems.js';
import { nodeAt } from './schema.js';
import { SAMPLING_NAMES } from '../speed/options.js';
import { sourceOf } from './validate.js';

export interface CompatReport {
  /** "old -> new" for every SpeeD spelling found */
  mapped: string[];
  /** "key (file)" for every tooling key dropped */
  ignored: string[];
}

const isMap = (v: unknown): v is Tree => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Keys (dotted) that configure PyTorch/Python tooling only: dropped with a warning when the schema lacks them. */
const TOOLING = [
  'wandb', 'wandb_api_key', 'enable_wandb_log', 'enable_tensorboard_log', 'logger',
  'allow_tf32', 'save_firt_step_ckpt', 'num_workers', 'pin_memory', 'vae',
  // Read by SpeeD's unconditional runner and then unused (no sample is logged).
  'enable_sample_log', 'sample_log_every',
  // Read by no SpeeD code (its loops stop on epoch and max_training_steps).
  'max_iters',
  // SpeeD's vae: a Hugging Face hub name for diffusers' from_pretrained (nothing
  // downloads here): ours is vae.path, the weight file (docs/latent.md).
  'vae.pretrained_model_name_or_path',
  'data.num_workers', 'data.pin_memory',
];

function getAt(t: Tree, p: string[]): { found: boolean; value: unknown } {
  let cur: unknown = t;
  for (const k of p) {
    if (!isMap(cur) || !Object.hasOwn(cur, k)) return { found: false, value: undefined };
    cur = cur[k];
  }
  return { found: true, value: cur };
}

function deleteAt(t: Tree, p: string[], prov: Provenance): void {
  const parent = getAt(t, p.slice(0, -1));
  if (isMap(parent.value)) delete parent.value[p[p.length - 1]];
  const key = p.join('.');
  for (const k of [...prov.keys()]) if (k === key || k.startsWith(key + '.')) prov.delete(k);
}

function setAt(t: Tree, p: string[], value: unknown, source: string, prov: Provenance): void {
  let cur = t;
  for (const k of p.slice(0, -1)) {
    if (!isMap(cur[k])) cur[k] = {};
    cur = cur[k] as Tree;
  }
  cur[p[p.length - 1]] = value;
  prov.set(p.join('.'), source);
}

/** Every dotted path under `t` whose last part is `name`. */
function pathsNamed(t: Tree, name: string, prefix: string[] = []): string[][] {
  return Object.entries(t).flatMap(([k, v]) => [
    ...(k === name ? [[...prefix, k]] : []),
    ...(isMap(v) ? pathsNamed(v, name, [...prefix, k]) : []),
  ]);
}

/** Rewrites `${old}` references (SpeeD's top-level variables) to `${new}` everywhere. */
function rewriteRefs(v: unknown, from: string, to: string): unknown {
  if (typeof v === 'string') return v.split('${' + from + '}').join('${' + to + '}');
  if (Array.isArray(v)) return v.map((x) => rewriteRefs(x, from, to));
  if (isMap(v)) {
    for (const k of Object.keys(v)) v[k] = rewriteRefs(v[k], from, to);
  }
  return v;
}

const show = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v));

/**
 * Maps SpeeD's keys in `tree` (in place) to ours. `order` lists the sources
 * from weakest to strongest (the files in merge order, then "command line"):
 * a SpeeD switch such as `faster` sets our keys only where no source at least
 * as strong set them itself.
 */
export function translateSpeedKeys(tree: Tree, prov: Provenance, problems: Problems, order: string[]): CompatReport {
  const mapped: string[] = [];
  const ignored: string[] = [];
  const rank = (src: string | undefined) => (src === undefined || src === 'defaults' ? -1 : order.indexOf(src));
  const src = (p: string) => prov.get(p) ?? 'defaults';

  /** Sets `to` from SpeeD's `from` unless a source at least as strong set `to` itself. */
  const assign = (to: string, value: unknown, from: string): boolean => {
    if (getAt(tree, to.split('.')).found && rank(prov.get(to)) >= rank(src(from))) return false;
    setAt(tree, to.split('.'), value, src(from), prov);
    return true;
  };
  /** Renames a key; both spellings set is a problem unless they agree. */
  const rename = (from: string, to: string, convert: (v: unknown) => unknown = (v) => v) => {
    const f = getAt(tree, from.split('.'));
    if (!f.found) return;
    const value = convert(f.value);
    const fromSrc = src(from);
    if (value === '${' + to + '}') {
      // `dataset.image_size: ${image_size}` after the rewrite: the key names itself.
      deleteAt(tree, from.split('.'), prov);
      mapped.push(`${from} -> ${to}`);
      return;
    }
    const t = getAt(tree, to.split('.'));
    const rTo = rank(prov.get(to));
    if (t.found && rTo > rank(fromSrc)) {
      // A later file or the command line sets our key: it wins, as it would over SpeeD's own.
      deleteAt(tree, from.split('.'), prov);
      mapped.push(`${from} -> ${to} (overridden by ${prov.get(to)})`);
      return;
    }
    if (t.found && rTo === rank(fromSrc) && JSON.stringify(t.value) !== JSON.stringify(value)) {
      problems.add(from, `SpeeD's spelling of ${to}, which the same file sets to ${show(t.value)}: keep one`, fromSrc);
      deleteAt(tree, from.split('.'), prov);
      return;
    }
    deleteAt(tree, from.split('.'), prov);
    setAt(tree, to.split('.'), value, fromSrc, prov);
    mapped.push(`${from} -> ${to}`);
  };
  const drop = (p: string, why: 'ignored' | 'mapped', note?: string) => {
    const where = sourceOf(p, prov);
    deleteAt(tree, p.split('.'), prov);
    if (why === 'ignored') ignored.push(`${p}${where ? ` (${where})` : ''}`);
    else if (note) mapped.push(note);
  };
  const has = (p: string) => getAt(tree, p.split('.')).found;
  const val = (p: string) => getAt(tree, p.split('.')).value;

  // Top-level variables that SpeeD's files interpolate (`num_classes: ${num_classes}`).
  for (const [from, to] of [['num_classes', 'data.num_classes'], ['image_size', 'data.image_size']] as const) {
    if (!has(from) || nodeAt(from.split('.'))) continue;
    rewriteRefs(tree, from, to);
    rename(from, to);
  }
  if (has('epoch') && !nodeAt(['epoch'])) rename('epoch', 'epochs');

  // ckpt_path: SpeeD's checkpoint for -p sample / inference.
  if (has('ckpt_path') && !nodeAt(['ckpt_path'])) {
    const v = val('ckpt_path');
    if (v === null || v === '') drop('ckpt_path', 'mapped');
    else {
      assign('sample.ckpt', v, 'ckpt_path');
      assign('inference.ckpt', v, 'ckpt_path');
      drop('ckpt_path', 'mapped', 'ckpt_path -> sample.ckpt + inference.ckpt');
    }
  }

  /** Records a setting speed-train cannot honour and removes it (with `also`, keys that only it uses). */
  const refuse = (p: string, why: string, also: string[] = []) => {
    const v = show(val(p));
    problems.add(p, `${v.length > 60 ? v.slice(0, 57) + '...' : v}${why.startsWith('is ') ? ' ' : ': '}${why}`, src(p));
    deleteAt(tree, p.split('.'), prov);
    for (const a of also) if (has(a)) deleteAt(tree, a.split('.'), prov);
  };
  /** Sets our key to a SpeeD class default unless any file or the command line set it. */
  const fillDefault = (to: string, value: unknown, from: string): boolean => {
    if (rank(prov.get(to)) >= 0) return false;
    setAt(tree, to.split('.'), value, src(from), prov);
    return true;
  };
  const TEXT = 'text conditioning (captions through a CLIP/T5 encoder) is not implemented: speed-train\'s DiT is class-conditional or unconditional';

  // model._target_: speed.networks.dit.DiT_XL_2 -> model.name DiT-XL/2.
  if (has('model._target_')) {
    const v = val('model._target_');
    const m = typeof v === 'string' ? /(?:^|\.)DiT_(XL|L|B|S|Ti)_(2|4|8)$/.exec(v) : null;
    if (m) {
      const name = `DiT-${m[1]}/${m[2]}`;
      const set = assign('model.name', name, 'model._target_');
      drop('model._target_', 'mapped', `model._target_=${v} -> model.name=${set ? name : show(val('model.name')) + ' (set explicitly)'}`);
    } else {
      // Keyword arguments of the other networks (UNet channels, MDT's mask ratio) go with it: the one problem is the network.
      const kind = typeof v !== 'string' ? '' : /unet/i.test(v) ? ' (a UNet, ADM\'s network)'
        : /MDT/.test(v) ? ' (MDT, a masked diffusion transformer)' : /pixart/i.test(v) ? ' (PixArt, a text-to-image transformer)' : '';
      const own = new Set(['_target_', ...Object.keys((nodeAt(['model']) as { keys: Record<string, unknown> }).keys), 'condition', 'cond_dropout_prob']);
      const extra = Object.keys(isMap(val('model')) ? (val('model') as Tree) : {}).filter((k) => !own.has(k)).map((k) => `model.${k}`);
      refuse('model._target_', `is not a DiT preset speed-train builds${kind}: expected ...DiT_{S,B,L,XL}_{2,4,8}`, extra);
    }
  }
  if (has('model.cond_dropout_prob')) rename('model.cond_dropout_prob', 'model.class_dropout_prob');

  // model.condition: what SpeeD's DiT embeds next to the time step (its default is text).
  if (has('model.condition')) {
    const v = val('model.condition');
    if (v === 'class') drop('model.condition', 'mapped', 'model.condition=class (labels embedded, model.num_classes of them)');
    else if (v === null || v === 'none') {
      const set = assign('model.num_classes', 0, 'model.condition');
      drop('model.condition', 'mapped', `model.condition=${show(v)} -> ${set ? 'model.num_classes=0 (unconditional)' : 'model.num_classes kept (set explicitly)'}`);
    } else if (v === 'text') refuse('model.condition', TEXT, ['model.condition_channels']);
    else refuse('model.condition', 'expected class, none or text (SpeeD\'s DiT condition)');
  }
  // condition_encoder: how SpeeD's class runner turns labels into the model's input.
  if (has('condition_encoder') && !nodeAt(['condition_encoder'])) {
    const t = val('condition_encoder._target_');
    if (typeof t === 'string' && /(^|\.)ClassEncoder$/.test(t)) {
      // Labels pass through; its null label (num_classes) is DiT's classifier-free guidance label too.
      drop('condition_encoder', 'mapped', `condition_encoder._target_=${t} (labels as they are; the null label is model.num_classes, as here)`);
    } else if (isMap(val('condition_encoder'))) {
      problems.add('condition_encoder._target_', `${show(t)}: ${TEXT}`, src('condition_encoder._target_'));
      deleteAt(tree, ['condition_encoder'], prov);
    }
  }
  // experiment_name: which of SpeeD's runners main.py builds.
  if (has('experiment_name') && !nodeAt(['experiment_name'])) {
    const v = val('experiment_name');
    if (v === 'base') drop('experiment_name', 'mapped', 'experiment_name=base (the class-conditional runner)');
    else if (v === 'unconditional') {
      // That runner never passes labels to the model.
      const already = val('model.num_classes') === 0;
      const set = !already && assign('model.num_classes', 0, 'experiment_name');
      drop('experiment_name', 'mapped', `experiment_name=unconditional -> ${already ? 'model.num_classes=0 already' : set ? 'model.num_classes=0' : 'model.num_classes kept (set explicitly)'}`);
    } else if (v === 'text2img') refuse('experiment_name', TEXT);
    else refuse('experiment_name', 'expected base, unconditional or text2img (the runners of SpeeD\'s main.py)');
  }
  // Text-to-image keys (captions, prompts).
  if (has('data.dataset.text_cond')) {
    if (val('data.dataset.text_cond') === true) refuse('data.dataset.text_cond', TEXT, ['data.dataset.ann_path']);
    else drop('data.dataset.text_cond', 'mapped', `data.dataset.text_cond=${show(val('data.dataset.text_cond'))} (no captions)`);
  }
  if (has('data.dataset.ann_path')) drop('data.dataset.ann_path', 'ignored'); // read only when text_cond is true
  for (const p of ['sample.prompts', 'inference.prompt_path']) if (has(p)) refuse(p, TEXT);

  if (has('optimizer._target_')) {
    const v = val('optimizer._target_');
    if (typeof v === 'string' && /(^|\.)AdamW$/.test(v)) drop('optimizer._target_', 'mapped', `optimizer._target_=${v} -> optimizer.name=adamw`);
    else {
      problems.add('optimizer._target_', `${show(v)}: speed-train trains with AdamW only (torch.optim.AdamW)`, src('optimizer._target_'));
      deleteAt(tree, ['optimizer', '_target_'], prov);
    }
  }

  // data.dataset: SpeeD's image folder dataset and its arguments.
  if (isMap(val('data.dataset')) && !nodeAt(['data', 'dataset'])) {
    const t = val('data.dataset._target_');
    if (typeof t === 'string' && /image_data(e?st|set)$/.test(t)) {
      if (assign('data.name', 'image_folder', 'data.dataset._target_')) mapped.push(`data.dataset._target_=${t} -> data.name=image_folder`);
      deleteAt(tree, ['data', 'dataset', '_target_'], prov);
    }
    if (has('data.dataset.class_cond')) {
      const v = val('data.dataset.class_cond');
      if (v === false) {
        // SpeeD's unconditional runs (FFHQ, MetFaces): no labels, no class embedding.
        assign('data.num_classes', 0, 'data.dataset.class_cond');
        assign('model.num_classes', 0, 'data.dataset.class_cond');
        drop('data.dataset.class_cond', 'mapped', 'data.dataset.class_cond=false -> data.num_classes=0 + model.num_classes=0 (unconditional)');
      } else drop('data.dataset.class_cond', 'mapped', `data.dataset.class_cond=${show(v)} (class-conditional, as data.num_classes says)`);
    }
    if (has('data.dataset.root')) rename('data.dataset.root', 'data.root');
    // SpeeD's DataLoader batch is per process (torchrun, 8 GPUs in its scripts); ours is global.
    const bs = val('data.batch_size');
    if (typeof bs === 'number' && rank(prov.get('data.batch_size')) >= 0 && prov.get('data.batch_size') !== 'command line') {
      mapped.push(`data.batch_size=${bs} is the global batch here; SpeeD's is per GPU (its 8-GPU runs trained on ${8 * bs}): set data.batch_size=${8 * bs} to match one`);
    }
    if (has('data.dataset.image_size')) rename('data.dataset.image_size', 'data.image_size');
  }

  // IDDPM(...)'s keyword arguments.
  const diffusionKeys = (prefix: string, phase: string | null) => {
    const p = (k: string) => `${prefix}${k}`;
    if (has(p('faster'))) {
      const v = val(p('faster'));
      if (typeof v !== 'boolean') problems.add(p('faster'), `expected true or false (SpeeD's switch for its sampling and weighting), found ${show(v)}`, src(p('faster')));
      else {
        const [s, w] = v ? ['speed', 'speed'] : ['uniform', 'none'];
        const setS = assign('diffusion.sampling', s, p('faster'));
        const setW = assign('diffusion.weighting', w, p('faster'));
        const got = [setS ? `diffusion.sampling=${s}` : 'diffusion.sampling kept (set explicitly)', setW ? `diffusion.weighting=${w}` : 'diffusion.weighting kept (set explicitly)'];
        mapped.push(`${p('faster')}=${v} -> ${got.join(' + ')}`);
      }
      deleteAt(tree, p('faster').split('.'), prov);
    }
    if (has(p('timestep_respacing'))) {
      const v = val(p('timestep_respacing'));
      const targets = phase ? [`${phase}.steps`] : ['sample.steps', 'inference.steps'];
      if (v === null || v === '') drop(p('timestep_respacing'), 'mapped', `${p('timestep_respacing')}="" -> training uses all diffusion.diffusion_steps`);
      else {
        const spec = Array.isArray(v) ? v.join(',') : String(v);
        for (const to of targets) assign(to, spec, p('timestep_respacing'));
        drop(p('timestep_respacing'), 'mapped', `${p('timestep_respacing')}=${spec} -> ${targets.join(' + ')}`);
      }
    }
    if (phase) return;
    if (has('diffusion.noise_schedule')) rename('diffusion.noise_schedule', 'diffusion.schedule');
    if (has('diffusion.learn_sigma')) rename('diffusion.learn_sigma', 'model.learn_sigma');
    if (has('diffusion.cfg_scale')) {
      const v = val('diffusion.cfg_scale');
      assign('sample.guidance_scale', v, 'diffusion.cfg_scale');
      assign('inference.guidance_scale', v, 'diffusion.cfg_scale');
      drop('diffusion.cfg_scale', 'mapped', 'diffusion.cfg_scale -> sample.guidance_scale + inference.guidance_scale');
    }
    for (const k of ['sampling', 'weighting']) {
      if (val(`diffusion.${k}`) === 'ours') {
        setAt(tree, ['diffusion', k], 'speed', src(`diffusion.${k}`), prov);
        mapped.push(`diffusion.${k}=ours -> speed`);
      }
    }
    for (const k of ['use_kl', 'sigma_small', 'predict_xstart']) {
      if (!has(`diffusion.${k}`)) continue;
      if (val(`diffusion.${k}`) === false) drop(`diffusion.${k}`, 'mapped', `diffusion.${k}=false (the only choice here)`);
      else {
        problems.add(`diffusion.${k}`, `${show(val(`diffusion.${k}`))}: speed-train's IDDPM predicts epsilon with a learned range variance (${k}=false)`, src(`diffusion.${k}`));
        deleteAt(tree, ['diffusion', k], prov);
      }
    }
    // Speed_IDDPM lower-cases its sampler name (CLTS in SpeeD's comparison configs).
    const smp = val('diffusion.sampling');
    if (typeof smp === 'string' && smp !== smp.toLowerCase() && (SAMPLING_NAMES as readonly string[]).includes(smp.toLowerCase())) {
      setAt(tree, ['diffusion', 'sampling'], smp.toLowerCase(), src('diffusion.sampling'), prov);
      mapped.push(`diffusion.sampling=${smp} -> ${smp.toLowerCase()}`);
    }
    if (has('diffusion._target_')) {
      const v = val('diffusion._target_');
      const name = typeof v === 'string' ? v.slice(v.lastIndexOf('.') + 1) : '';
      if (/mask/i.test(name)) {
        refuse('diffusion._target_', 'MDT\'s masked training (a second loss on masked tokens each step) is not implemented: use speed.diffusion.iddpm.IDDPM or speed.diffusion.speed.Speed_IDDPM');
      } else if (name === 'Speed_IDDPM') {
        // Its keyword defaults are sampling=ours, weighting=ours, tau=700; they apply where no file sets the key.
        const got: string[] = [];
        for (const [k, d] of [['sampling', 'speed'], ['weighting', 'speed'], ['tau', 700]] as const) {
          got.push(fillDefault(`diffusion.${k}`, d, 'diffusion._target_') ? `diffusion.${k}=${d}` : `diffusion.${k} kept`);
        }
        // SpeeD's CLTS sampler hard-codes its centre (step 300) and schedule length (50_000 steps).
        if (val('diffusion.sampling') === 'clts') {
          for (const [k, d] of [['clts_mu', 0.3], ['clts_target_steps', 50000]] as const) {
            if (fillDefault(`diffusion.${k}`, d, 'diffusion._target_')) got.push(`diffusion.${k}=${d}`);
          }
        }
        // Its signature's k=1 and lam=5 are not used: lam=5 makes the weights below tau
        // span [-4, 5] (negative loss weights); the configs that set them use the paper's k and lam.
        const unset = ['k', 'lam'].filter((k) => rank(prov.get(`diffusion.${k}`)) < 0);
        if (unset.length > 0) got.push(`${unset.map((k) => `diffusion.${k}`).join(', ')} unset: speed-train's ${unset.map((k) => `${k}=${k === 'k' ? 5 : 0.6}`).join(', ')} (the paper's), not Speed_IDDPM's k=1, lam=5`);
        drop('diffusion._target_', 'mapped', `diffusion._target_=${show(v)} -> ${got.join(' + ')}`);
      } else if (name === 'IDDPM' || name === 'SpeeDiffusion') {
        drop('diffusion._target_', 'mapped', `diffusion._target_=${show(v)} -> speed-train's IDDPM`);
      } else {
        refuse('diffusion._target_', 'not a diffusion speed-train implements: expected speed.diffusion.iddpm.IDDPM or speed.diffusion.speed.Speed_IDDPM');
      }
    }
  };
  diffusionKeys('diffusion.', null);
  for (const phase of ['sample', 'inference', 'train', 'evaluate']) {
    if (!isMap(val(`${phase}.diffusion`))) continue;
    diffusionKeys(`${phase}.diffusion.`, phase === 'sample' || phase === 'inference' ? phase : null);
    const d = val(`${phase}.diffusion`);
    if (isMap(d) && Object.keys(d).length === 0) deleteAt(tree, [phase, 'diffusion'], prov);
  }

  // Tooling: the named keys, then any remaining `_target_` (Hydra's class paths).
  for (const p of TOOLING) if (has(p) && !nodeAt(p.split('.'))) drop(p, 'ignored');
  for (const p of pathsNamed(tree, '_target_')) drop(p.join('.'), 'ignored');
  for (const sec of ['data.dataset']) {
    const d = val(sec);
    if (isMap(d) && Object.keys(d).length === 0) deleteAt(tree, sec.split('.'), prov);
  }
  return { mapped, ignored };
}

/** The mappings above, for docs/config.md (SpeeD's key, what speed-train makes of it). */
export const SPEED_SPELLINGS: readonly (readonly [string, string])[] = [
  ['diffusion.faster: true / false', 'diffusion.sampling + diffusion.weighting = speed + speed / uniform + none (where not set explicitly)'],
  ['diffusion.sampling: ours, diffusion.weighting: ours', 'speed'],
  ['diffusion.timestep_respacing: "250" (top level)', 'sample.steps and inference.steps; "" means all T steps (training)'],
  ['sample.diffusion.timestep_respacing, inference.diffusion.timestep_respacing', 'sample.steps, inference.steps'],
  ['diffusion.noise_schedule', 'diffusion.schedule'],
  ['diffusion.learn_sigma', 'model.learn_sigma'],
  ['diffusion.cfg_scale', 'sample.guidance_scale and inference.guidance_scale'],
  ['diffusion.use_kl / sigma_small / predict_xstart: false', 'accepted (the only choice); true is an error'],
  ['diffusion._target_: ...iddpm.IDDPM', "speed-train's IDDPM (the sampler and weighting the config sets, else uniform + none)"],
  ['diffusion._target_: ...speed.Speed_IDDPM', "its defaults where no file sets the key: diffusion.sampling + weighting = speed, tau = 700; with sampling CLTS, clts_mu = 0.3, clts_target_steps = 50000 (its hard-coded values); k and lam unset keep speed-train's 5 and 0.6 (the paper's), not its signature's 1 and 5 (logged)"],
  ['diffusion.sampling: CLTS (any case)', 'clts (Speed_IDDPM lower-cases the name)'],
  ['diffusion._target_: ...Mask_IDDPM, model._target_: ...MDTv2_*, ...create_unet_model, ...PixArt_*', 'refused (a network or masked training speed-train does not build)'],
  ['model.condition: class / none (null)', 'class-conditional / model.num_classes: 0; text is refused'],
  ['model.cond_dropout_prob', 'model.class_dropout_prob'],
  ['condition_encoder: ...ClassEncoder', 'accepted (labels as they are, null label = num_classes, as DiT); ClipEncoder / T5 are refused'],
  ['experiment_name: base / unconditional', 'class-conditional runner / model.num_classes: 0; text2img is refused'],
  ['data.dataset.text_cond: true, sample.prompts, inference.prompt_path', 'refused (text conditioning); text_cond: false is accepted'],
  ['model._target_: ...DiT_XL_2', 'model.name: DiT-XL/2 (any DiT_{S,B,L,XL}_{2,4,8})'],
  ['optimizer._target_: torch.optim.AdamW', 'optimizer.name: adamw'],
  ['data.dataset._target_: ...image_dataest, data.dataset.root, data.dataset.image_size', 'data.name: image_folder, data.root, data.image_size'],
  ['data.batch_size (per GPU in SpeeD)', "the global batch, as written; the log names 8x it (SpeeD's scripts run 8 GPUs)"],
  ['data.dataset.class_cond: false', 'data.num_classes: 0 and model.num_classes: 0 (unconditional)'],
  ['num_classes, image_size (top-level variables, and ${num_classes} references)', 'data.num_classes, data.image_size'],
  ['epoch', 'epochs'],
  ['ckpt_path', 'sample.ckpt and inference.ckpt'],
  ['50_000 (YAML 1.1 numbers)', '50000'],
  [`${TOOLING.join(', ')}, data.dataset.ann_path (without text_cond), any other _target_`, 'ignored with one warning naming each key and its file'],
];
