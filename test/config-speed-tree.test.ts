// Every config of SpeeD's own configs/ tree (test/fixtures/speed-f5650f9, the
// repository's newest commit as vendored) loads, or is refused for a named
// reason: a network or training speed-train does not build. Nothing fails on
// an unknown key, and nothing that changes the result is dropped unsaid.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { loadConfig } from '../src/config/index.js';
import { ConfigError } from '../src/errors.js';

const ROOT = path.resolve('test/fixtures/speed-f5650f9/configs');

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? yamlFiles(p) : e.name.endsWith('.yaml') ? [p] : [];
  }).sort();
}

/** Why a config is refused, from its problems; every problem must be one of these. */
const REASONS: [string, RegExp][] = [
  ['unet', /model\._target_: speed\.networks\.unet\.create_unet_model is not a DiT preset speed-train builds \(a UNet/],
  ['mdt', /model\._target_: speed\.networks\.dit\.mdt\.MDTv2_XL_2 is not a DiT preset speed-train builds \(MDT|diffusion\._target_: speed\.diffusion\.(speed\.Speed_Mask_IDDPM|mask_iddpm\.MASK_IDDPM): MDT's masked training/],
  ['pixart', /model\._target_: speed\.networks\.pixart\.PixArt_XL_2 is not a DiT preset speed-train builds \(PixArt/],
  ['text', /: text conditioning \(captions through a CLIP\/T5 encoder\) is not implemented/],
  // A base.yaml that SpeeD never runs on its own: its dataset has no root (SpeeD's image_dataset requires one too).
  ['no-root', /data\.root: data\.name is image_folder: expected the path of the image folder, found null/],
];

function outcome(file: string, phase: 'train' | 'sample' | 'inference'): string {
  try {
    loadConfig(file, { phase, root: ROOT });
    return 'ok';
  } catch (e) {
    assert.ok(e instanceof ConfigError, `${file}: ${String(e)}`);
    const lines = e.message.split('\n').filter((l) => !/^\d+ problems in the config:$/.test(l));
    const kinds = new Set<string>();
    for (const l of lines) {
      const r = REASONS.find(([, re]) => re.test(l));
      assert.ok(r, `${path.relative(ROOT, file)} (${phase}): a problem that is not a named refusal:\n${l}`);
      kinds.add(r[0]);
    }
    return [...kinds].sort().join('+');
  }
}

// Pinned, so that a mapping that starts refusing (or a refusal that starts loading) shows up.
const REFUSED: Record<string, string> = {
  'ablation/': 'unet', // ablation/base.yaml trains a UNet
  'comparison/unet/': 'unet',
  'maskdit/unet_': 'unet',
  'image/imagenet_256/mdt/': 'mdt',
  'image/unconditional/mdt_metfaces256/': 'mdt',
  'image/text2img/': 'text',
  'text_to_image/': 'pixart+text',
  'comparison/base.yaml': 'no-root',
  'image/unconditional/base.yaml': 'no-root',
};

test("every config of SpeeD's current configs/ tree loads or is refused for a named reason", () => {
  const files = yamlFiles(ROOT);
  assert.equal(files.length, 75); // 76 files under configs/, one of them README.md
  let loaded = 0;
  for (const f of files) {
    const rel = path.relative(ROOT, f).split(path.sep).join('/');
    const want = Object.entries(REFUSED).find(([prefix]) => rel.startsWith(prefix))?.[1] ?? 'ok';
    for (const phase of ['train', 'sample', 'inference'] as const) assert.equal(outcome(f, phase), want, `${rel} (${phase})`);
    if (want === 'ok') loaded++;
  }
  assert.equal(loaded, 40);
});

test("SpeeD's current imagenet and ffhq configs load with their new keys mapped", () => {
  const xl = loadConfig(path.join(ROOT, 'image/imagenet_256/dit_xl2.yaml'));
  assert.equal(xl.config.model.name, 'DiT-XL/2');
  assert.equal(xl.config.model.num_classes, 1000); // condition: class, ClassEncoder
  assert.equal(xl.config.diffusion.sampling, 'uniform'); // IDDPM
  assert.equal(xl.config.experiment_dir, 'outputs/dit_xl2');
  assert.match(xl.notes[0], /model\.condition=class/);
  assert.match(xl.notes[0], /condition_encoder\._target_=speed\.networks\.condition\.ClassEncoder/);
  for (const k of ['enable_sample_log', 'sample_log_every', 'wandb_api_key']) assert.match(xl.notes[1], new RegExp(`${k} \\(.*configs/base\\.yaml\\)`));
  assert.match(xl.notes[1], /^config: warning: ignored keys/);

  // Speed_IDDPM with no sampler keys: its own defaults (ours, ours, tau 700), said in the log.
  const ffhq = loadConfig(path.join(ROOT, 'image/unconditional/ffhq_faster.yaml'));
  assert.equal(ffhq.config.diffusion.sampling, 'speed');
  assert.equal(ffhq.config.diffusion.weighting, 'speed');
  assert.equal(ffhq.config.diffusion.tau, 700);
  assert.equal(ffhq.config.diffusion.schedule, 'quad');
  assert.equal(ffhq.config.model.num_classes, 0); // condition: none
  assert.equal(ffhq.config.data.num_classes, 0);
  assert.match(ffhq.notes[0], /diffusion\.k, diffusion\.lam unset: speed-train's k=5, lam=0\.6 \(the paper's\), not Speed_IDDPM's k=1, lam=5/);

  const faster = loadConfig(path.join(ROOT, 'comparison/ffhq/faster.yaml'));
  assert.equal(faster.config.diffusion.k, 2); // set by the file, kept
  assert.equal(faster.config.diffusion.lam, 0.6);
  assert.doesNotMatch(faster.notes[0], /unset/);

  // A file's explicit sampler wins over Speed_IDDPM's default; CLTS is lower-cased as Speed_IDDPM does.
  const clts = loadConfig(path.join(ROOT, 'comparison/ffhq/clts.yaml'));
  assert.equal(clts.config.diffusion.sampling, 'clts');
  assert.equal(clts.config.diffusion.weighting, 'none');
  assert.equal(clts.config.diffusion.clts_mu, 0.3);
  assert.equal(clts.config.diffusion.clts_target_steps, 50000);
  const theory = loadConfig(path.join(ROOT, 'image/unconditional/metfaces_theory.yaml'));
  assert.equal(theory.config.diffusion.weighting, 'theory');
  assert.equal(theory.config.diffusion.sampling, 'speed');
  // The command line still beats the class default.
  assert.equal(loadConfig(path.join(ROOT, 'image/unconditional/ffhq_faster.yaml'), { overrides: ['diffusion.sampling=uniform'] }).config.diffusion.sampling, 'uniform');
});

test('a refused SpeeD config says what is not built, once per cause, with the file that set it', () => {
  let msg = '';
  try { loadConfig(path.join(ROOT, 'ablation/k/k_1.yaml')); } catch (e) { msg = (e as Error).message; }
  // One problem: the UNet's own keyword arguments (num_channels, ...) are not reported as unknown keys.
  assert.equal(msg, `${path.join(ROOT, 'ablation/base.yaml')}: model._target_: speed.networks.unet.create_unet_model is not a DiT preset speed-train builds (a UNet, ADM's network): expected ...DiT_{S,B,L,XL}_{2,4,8}`);
  // Masked training is refused even where the network would be a DiT.
  msg = '';
  try { loadConfig(path.join(ROOT, 'image/imagenet_256/mdt/faster.yaml'), { overrides: ['model._target_=speed.networks.dit.DiT_XL_2', 'model.mask_ratio=null'] }); } catch (e) { msg = (e as Error).message; }
  assert.match(msg, /mdt\/faster\.yaml: diffusion\._target_: speed\.diffusion\.speed\.Speed_Mask_IDDPM: MDT's masked training/);
});

test("SpeeD's per-GPU batch is named in the log: speed-train's data.batch_size is global", () => {
  const r = loadConfig(path.join(ROOT, 'comparison/ffhq/faster.yaml'));
  assert.equal(r.config.data.batch_size, 32);
  assert.match(r.notes[0], /data\.batch_size=32 is the global batch here; SpeeD's is per GPU \(its 8-GPU runs trained on 256\): set data\.batch_size=256 to match one/);
  assert.doesNotMatch(loadConfig(path.join(ROOT, 'comparison/ffhq/faster.yaml'), { overrides: ['data.batch_size=256'] }).notes[0], /per GPU/);
});
