// Config loading for users coming from SpeeD: its spellings, every problem in
// one error, hostile YAML (__proto__, aliases), defaults that form a config.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { loadConfig, parseOverride, ConfigErrorList } from '../src/config/index.js';
import { ConfigError } from '../src/errors.js';

function tree(files: Record<string, string>): string {
  const root = path.join(mkdtempSync(path.join(tmpdir(), 'cfgc-')), 'configs');
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), text);
  }
  return root;
}

function loadError(file: string, overrides: string[] = []): ConfigError {
  try {
    loadConfig(file, { overrides });
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    return e;
  }
  assert.fail(`${file} loaded`);
}

const SPEED_XL = path.resolve('test/fixtures/speed-chain/configs/image/imagenet_256/dit_xl2.yaml');

test("SpeeD's dit_xl2.yaml chain loads with its spellings mapped and tooling keys named", () => {
  for (const phase of ['train', 'sample', 'inference'] as const) {
    const r = loadConfig(SPEED_XL, { phase });
    const c = r.config;
    assert.equal(r.files.length, 3);
    assert.equal(c.model.name, 'DiT-XL/2'); // model._target_ speedit.networks.dit.DiT_XL_2
    assert.equal(c.model.num_classes, 1000); // ${num_classes}
    assert.equal(c.data.num_classes, 1000);
    assert.equal(c.data.image_size, 256);
    assert.equal(c.data.name, 'image_folder'); // dataset._target_ image_dataest
    assert.equal(c.data.root, 'xxx'); // dit_xl2.yaml wins over base.yaml
    assert.equal(c.data.batch_size, 80);
    assert.equal(c.diffusion.sampling, 'speed'); // faster: true
    assert.equal(c.diffusion.weighting, 'speed');
    assert.equal(c.epochs, 1400); // epoch
    assert.equal(c.ckpt_every, 50000); // 50_000, as YAML 1.1 reads it
    assert.equal(c.sample.steps, '250'); // sample.diffusion.timestep_respacing
    assert.equal(c.inference.steps, '250');
    assert.equal(c.sample.guidance_scale, 3.8);
    assert.deepEqual(c.sample.sample_classes, [207, 360]);
    assert.equal(c.experiment_dir, 'outputs/dit_xl2_faster');
    // One line of mappings, one warning naming every tooling key with its file.
    assert.equal(r.notes.length, 2);
    for (const m of ['diffusion.faster=true -> diffusion.sampling=speed + diffusion.weighting=speed', 'epoch -> epochs',
      'model._target_=speedit.networks.dit.DiT_XL_2 -> model.name=DiT-XL/2', 'sample.diffusion.timestep_respacing=250 -> sample.steps']) {
      assert.ok(r.notes[0].includes(m), `${m} missing from: ${r.notes[0]}`);
    }
    const base = path.resolve('test/fixtures/speed-chain/configs/base.yaml');
    for (const k of ['wandb', 'wandb_api_key', 'enable_wandb_log', 'allow_tf32']) assert.ok(r.notes[1].includes(`${k} (${base})`), `${k}: ${r.notes[1]}`);
    assert.match(r.notes[1], /data\.num_workers \(.*dit_xl2\.yaml\)/);
    // experiment_name picks SpeeD's runner, which decides whether labels reach the model: mapped, not ignored
    assert.match(r.notes[0], /experiment_name=base \(the class-conditional runner\)/);
    // our schema has a vae: section (vae.path, the weight file): SpeeD's hub name for diffusers is named, not used
    assert.match(r.notes[1], /vae\.pretrained_model_name_or_path \(.*imagenet_256\/base\.yaml\)/);
  }
});

test('SpeeD spellings: sampling=ours, faster=false, explicit keys win, both spellings disagreeing is an error', () => {
  const root = tree({
    'a.yaml': 'diffusion: {sampling: ours, weighting: ours, noise_schedule: cosine, learn_sigma: false}\n',
    'b.yaml': 'diffusion: {faster: true, sampling: lognorm}\ndiffusion_note: 1\n',
    'c.yaml': 'diffusion: {faster: false, timestep_respacing: "100"}\n',
    'd.yaml': 'epoch: 3\nepochs: 4\n',
    'e.yaml': 'diffusion: {faster: "yes", sigma_small: true}\nmodel: {_target_: speed.networks.unet.UNet}\n',
  });
  const a = loadConfig(path.join(root, 'a.yaml')).config;
  assert.equal(a.diffusion.sampling, 'speed');
  assert.equal(a.diffusion.weighting, 'speed');
  assert.equal(a.diffusion.schedule, 'cosine');
  assert.equal(a.model.learn_sigma, false);
  // faster sets only what its file does not set itself
  const b = loadError(path.join(root, 'b.yaml'));
  assert.match(b.message, /diffusion_note: unknown key/);
  const c = loadConfig(path.join(root, 'c.yaml'), { overrides: ['diffusion.weighting=p2'] });
  assert.equal(c.config.diffusion.sampling, 'uniform');
  assert.equal(c.config.diffusion.weighting, 'p2'); // the command line is stronger than the file
  assert.equal(c.config.sample.steps, '100');
  assert.equal(c.config.inference.steps, '100');
  assert.match(c.notes[0], /diffusion\.weighting kept \(set explicitly\)/);
  assert.match(loadError(path.join(root, 'd.yaml')).message, /d\.yaml: epoch: SpeeD's spelling of epochs, which the same file sets to 4: keep one/);
  // our key set by a stronger source wins over SpeeD's spelling in a file
  const d = loadConfig(path.join(root, 'd.yaml'), { overrides: ['epochs=9'] });
  assert.equal(d.config.epochs, 9);
  assert.match(d.notes[0], /epoch -> epochs \(overridden by command line\)/);
  assert.equal(loadConfig(SPEED_XL, { overrides: ['data.root=/data/in'] }).config.data.root, '/data/in');
  const e = loadError(path.join(root, 'e.yaml'));
  assert.ok(e instanceof ConfigErrorList);
  assert.match(e.message, /diffusion\.faster: expected true or false/);
  assert.match(e.message, /diffusion\.sigma_small: true: speed-train's IDDPM/);
  assert.match(e.message, /model\._target_: speed\.networks\.unet\.UNet is not a DiT preset/);
});

test('faster=true next to an explicit sampling in the same file keeps the explicit one', () => {
  const root = tree({ 'x.yaml': 'diffusion: {faster: true, sampling: lognorm}\n' });
  const c = loadConfig(path.join(root, 'x.yaml')).config;
  assert.equal(c.diffusion.sampling, 'lognorm');
  assert.equal(c.diffusion.weighting, 'speed');
});

test("SpeeD's unconditional dataset (class_cond: false) is an unconditional run", () => {
  // From SpeeD's configs/ablation/base.yaml (commit d2702fb).
  const root = tree({ 'x.yaml': 'image_size: 32\ndata:\n  dataset:\n    _target_: speedit.dataset.image.image_dataset\n    image_size: ${image_size}\n' +
    '    class_cond: false\n    root: "/data/ffhq"\n  batch_size: 32\n  num_workers: 4\nepoch: 200_000\nmax_training_steps: 50_000\n' +
    'model: {_target_: speedit.networks.dit.DiT_S_2}\ndiffusion: {_target_: speedit.diffusion.speed.Speed_IDDPM, timestep_respacing: "", weighting: ours, sampling: ours, k: 5, lam: 0.6, tau: 700}\n' });
  const r = loadConfig(path.join(root, 'x.yaml'));
  assert.equal(r.config.data.num_classes, 0);
  assert.equal(r.config.model.num_classes, 0);
  assert.equal(r.config.data.name, 'image_folder');
  assert.equal(r.config.data.image_size, 32);
  assert.equal(r.config.model.input_size, 32);
  assert.equal(r.config.epochs, 200000);
  assert.equal(r.config.max_training_steps, 50000);
  assert.equal(r.config.diffusion.sampling, 'speed');
  assert.match(r.notes[0], /data\.dataset\.class_cond=false -> data\.num_classes=0 \+ model\.num_classes=0/);
});

test('every problem of a config is reported in one error, each with its file or "command line"', () => {
  const root = tree({
    'base.yaml': 'wandb_project: x\nfoo: {bar: 1, baz: 2}\n',
    'run.yaml': 'data: {batch_sise: 4, batch_size: 0}\nmodel: {name: DiT-Q/2}\nsampler_x: {a: 1}\nseed: -1\n',
  });
  const e = loadError(path.join(root, 'run.yaml'), ['optimizer.lrr=1', 'ema.decay=2']);
  assert.ok(e instanceof ConfigErrorList, e.message);
  const base = path.join(root, 'base.yaml');
  const run = path.join(root, 'run.yaml');
  const want = [
    `${base}: wandb_project: unknown key`,
    `${base}: foo: unknown key`, // a section: its file named too
    `${run}: data.batch_sise: unknown key (did you mean data.batch_size?)`,
    `${run}: sampler_x: unknown key`,
    'command line: optimizer.lrr: unknown key (did you mean optimizer.lr?)',
    `${run}: data.batch_size: 0 is out of range`,
    `${run}: model.name: "DiT-Q/2" is not valid`,
    `${run}: seed: -1 is out of range`,
    'command line: ema.decay: 2 is out of range',
  ];
  for (const w of want) assert.ok(e.message.includes(w), `missing "${w}" in:\n${e.message}`);
  assert.equal(e.problems.length, want.length, e.message);
  assert.match(e.message, /^9 problems in the config:\n/);
});

test('__proto__, constructor and prototype keys are refused and never reach Object.prototype', () => {
  const root = tree({
    'x.yaml': '__proto__: {handleSignals: false, polluted: 1}\nmodel: {constructor: {x: 1}}\ndata: {prototype: 2, batch_size: 4}\n',
  });
  const e = loadError(path.join(root, 'x.yaml'));
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(({} as Record<string, unknown>).handleSignals, undefined);
  assert.ok(e instanceof ConfigErrorList);
  assert.match(e.message, /x\.yaml: __proto__: key "__proto__" is not allowed/);
  assert.match(e.message, /x\.yaml: model\.constructor: key "constructor" is not allowed/);
  assert.match(e.message, /x\.yaml: data\.prototype: key "prototype" is not allowed/);
  const e2 = loadError(path.join(root, 'x.yaml'), ['__proto__.polluted=1']);
  assert.match(e2.message, /command line: __proto__\.polluted: key "__proto__" is not allowed/);
  assert.throws(() => parseOverride('data={__proto__: {polluted: 1}}'), /command line: data\.__proto__: key "__proto__" is not allowed/);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

test('YAML alias errors and alias bombs are ConfigErrors naming the file', () => {
  const bomb = 'a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n' +
    'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n';
  const root = tree({ 'x.yaml': 'seed: *nope\n', 'bomb.yaml': bomb, 'ok.yaml': 'data: &d {batch_size: 4}\nsample: {data: *d}\n' });
  const x = path.join(root, 'x.yaml');
  assert.match(loadError(x).message, new RegExp(`^${x.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: invalid YAML: Unresolved alias.*nope`));
  assert.match(loadError(path.join(root, 'bomb.yaml')).message, /bomb\.yaml: expands more than 100 YAML aliases/);
  assert.match(loadError(path.join(root, 'ok.yaml'), ['seed=*nope']).message, /command line: seed: cannot parse value/);
  assert.equal(loadConfig(path.join(root, 'ok.yaml'), { phase: 'sample' }).config.data.batch_size, 4); // a plain alias works
  const big = path.join(root, 'big.yaml');
  writeFileSync(big, `# ${'x'.repeat(5 * 1024 * 1024)}\nseed: 1\n`);
  assert.match(loadError(big).message, /big\.yaml: is \d+ bytes: expected a config file of at most 4194304 bytes/);
});

test('the defaults form a valid config: a file outside configs/ setting only optimizer.lr loads', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lone-'));
  writeFileSync(path.join(dir, 'mine.yaml'), 'optimizer: {lr: 0.0003}\n');
  const c = loadConfig(path.join(dir, 'mine.yaml')).config;
  assert.equal(c.optimizer.lr, 0.0003);
  assert.equal(c.model.in_channels, c.data.channels);
  assert.equal(c.model.input_size, c.data.image_size);
  assert.equal(c.model.num_classes, c.data.num_classes);
  // the model's shape keys follow the data unless set
  const c2 = loadConfig(path.join(dir, 'mine.yaml'), { overrides: ['data.channels=1', 'data.image_size=8', 'model.name=DiT-S/4'] }).config;
  assert.equal(c2.model.in_channels, 1);
  assert.equal(c2.model.input_size, 8);
});
