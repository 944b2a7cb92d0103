import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { loadConfig, baseChain, parseOverride } from '../src/config/index.js';
import { ConfigError } from '../src/errors.js';
import { systemFolderReason } from '../src/config/validate.js';

/** Writes a tree of files {relative path: text} under a fresh tmp "configs" root. */
function tree(files: Record<string, string>): string {
  const root = path.join(mkdtempSync(path.join(tmpdir(), 'cfg-')), 'configs');
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), text);
  }
  return root;
}

const BASE = 'model: {name: DiT-Ti/4, input_size: 16, in_channels: 3, num_classes: 10}\ndata: {image_size: 16}\n';

test('base.yaml chain from the root down, then the file; later wins; maps merge deeply', () => {
  const root = tree({
    'base.yaml': BASE + 'seed: 1\nlog_every: 7\noptimizer: {lr: 0.001, warmup_steps: 3}\n',
    'a/base.yaml': 'seed: 2\noptimizer: {lr: 0.002}\n',
    'a/b/base.yaml': 'seed: 3\n',
    'a/b/run.yaml': 'optimizer: {weight_decay: 0.5}\n',
    'other/base.yaml': 'seed: 99\n',
  });
  const file = path.join(root, 'a/b/run.yaml');
  assert.deepEqual(baseChain(file), ['base.yaml', 'a/base.yaml', 'a/b/base.yaml'].map((f) => path.join(root, f)));
  const { config, files } = loadConfig(file);
  assert.equal(files.length, 4);
  assert.equal(config.seed, 3);
  assert.equal(config.log_every, 7);
  assert.equal(config.optimizer.lr, 0.002);
  assert.equal(config.optimizer.warmup_steps, 3);
  assert.equal(config.optimizer.weight_decay, 0.5);
  assert.deepEqual(config.optimizer.betas, [0.9, 0.999]); // schema default survives
});

test('interpolation keeps types, substitutes inside strings, follows chains', () => {
  const root = tree({
    'base.yaml': 'model: {name: DiT-Ti/4, input_size: "${data.image_size}", in_channels: 3, num_classes: "${data.num_classes}"}\n' +
      'data: {image_size: 16, num_classes: 5}\nexperiment_dir: "results/${model.name}-${diffusion.sampling}-bs${data.batch_size}"\n' +
      'diffusion: {sampling: speed}\n',
  });
  const { config } = loadConfig(path.join(root, 'base.yaml'), { overrides: ['data.batch_size=8'] });
  assert.equal(config.model.input_size, 16);
  assert.equal(config.model.num_classes, 5);
  assert.equal(config.experiment_dir, 'results/DiT-Ti/4-speed-bs8');
});

test('command-line overrides are YAML-typed and win over files', () => {
  const root = tree({ 'base.yaml': BASE, 'x.yaml': 'data: {batch_size: 4}\n' });
  const { config, provenance } = loadConfig(path.join(root, 'x.yaml'), {
    overrides: ['data.batch_size=16', 'optimizer.betas=[0.5, 0.9]', 'data.random_flip=false', 'resume_training=null', 'experiment_dir=out/x'],
  });
  assert.equal(config.data.batch_size, 16);
  assert.deepEqual(config.optimizer.betas, [0.5, 0.9]);
  assert.equal(config.data.random_flip, false);
  assert.equal(config.experiment_dir, 'out/x');
  assert.equal(provenance.get('data.batch_size'), 'command line');
  assert.deepEqual(parseOverride('a.b=3'), { a: { b: 3 } });
  assert.throws(() => parseOverride('novalue'), /key\.path=value/);
});

test('phase sections override the globals only in their phase', () => {
  const root = tree({
    'base.yaml': BASE,
    'x.yaml': 'seed: 1\ndata: {batch_size: 4}\nsample: {seed: 7, guidance_scale: 2.5, data: {batch_size: 2}}\n' +
      'train: {seed: 5}\ninference: {num_samples: 10, seed: 9}\n',
  });
  const file = path.join(root, 'x.yaml');
  const tr = loadConfig(file, { phase: 'train' }).config;
  assert.equal(tr.seed, 5);
  assert.equal(tr.data.batch_size, 4);
  assert.equal(tr.sample.guidance_scale, 2.5); // own keys stay in their section
  const sa = loadConfig(file, { phase: 'sample' });
  assert.equal(sa.config.seed, 7);
  assert.equal(sa.config.data.batch_size, 2);
  assert.equal(sa.provenance.get('seed'), file);
  assert.equal(loadConfig(file, { phase: 'inference' }).config.seed, 9);
  assert.equal(loadConfig(file, { phase: 'inference' }).config.inference.num_samples, 10);
});

function rejects(files: Record<string, string>, entry: string, re: RegExp, overrides: string[] = []) {
  const root = tree(files);
  const file = path.join(root, entry);
  assert.throws(() => loadConfig(file, { overrides }), (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
  return file;
}

test('errors name the file, the key path and what was expected', () => {
  const f = rejects({ 'base.yaml': BASE, 'x.yaml': 'data: {batch_sise: 4}\n' }, 'x.yaml', /x\.yaml: data\.batch_sise: unknown key \(did you mean data\.batch_size\?\)/);
  assert.ok(f.endsWith('x.yaml'));
  rejects({ 'base.yaml': BASE, 'x.yaml': 'batch_size: 3\n' }, 'x.yaml', /x\.yaml: batch_size: unknown key \(did you mean data\.batch_size\? For another phase: sample\.batch_size, inference\.batch_size\)/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'data: {batch_size: 0}\n' }, 'x.yaml', /x\.yaml: data\.batch_size: 0 is out of range: expected >= 1/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'data: {batch_size: 2.5}\n' }, 'x.yaml', /data\.batch_size: expected an integer, found number 2\.5/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'data: {random_flip: "yes"}\n' }, 'x.yaml', /data\.random_flip: expected true or false/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'diffusion: {sampling: sped}\n' }, 'x.yaml', /diffusion\.sampling: expected one of uniform, speed.*did you mean speed\?/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'diffusion: {lam: 0.3}\n' }, 'x.yaml', /diffusion\.lam: 0\.3 is out of range/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'diffusion: {tau: 2000}\n' }, 'x.yaml', /diffusion\.tau: 2000 is out of range/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'model: {name: DiT-Q/2}\n' }, 'x.yaml', /model\.name: "DiT-Q\/2" is not valid/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'optimizer: {betas: [0.9]}\n' }, 'x.yaml', /optimizer\.betas: expected a list of 2 numbers/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'data: 5\n' }, 'x.yaml', /data: expected a mapping/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'experiment_dir: "${nope.x}"\n' }, 'x.yaml', /experiment_dir: \$\{nope\.x\} refers to a key that does not exist/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'experiment_dir: "${experiment_dir}"\n' }, 'x.yaml', /circular interpolation/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'seed: [1\n' }, 'x.yaml', /x\.yaml: invalid YAML/);
  rejects({ 'base.yaml': '- 1\n- 2\n' }, 'base.yaml', /expected a YAML mapping/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'seed: 1\nseed: 2\n' }, 'x.yaml', /invalid YAML/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'model: {input_size: 17}\ndata: {image_size: 17}\n' }, 'x.yaml', /model\.input_size: 17 is not divisible by the patch size 4/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'data: {image_size: 32}\n' }, 'x.yaml', /model\.input_size: 16 differs from data\.image_size \(32\)/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'data: {name: image_folder}\n' }, 'x.yaml', /data\.root: data\.name is image_folder/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'sample: {seeed: 1}\n' }, 'x.yaml', /sample\.seeed: unknown key \(did you mean sample\.seed\?\)/);
  rejects({ 'base.yaml': BASE }, 'base.yaml', /command line: data\.batch_size: 0 is out of range/, ['data.batch_size=0']);
  rejects({ 'base.yaml': BASE }, 'base.yaml', /command line: data\.nope: unknown key/, ['data.nope=1']);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'sample: {steps: "fast"}\n' }, 'x.yaml', /sample\.steps: expected a respacing/);
  assert.throws(() => loadConfig('/nonexistent/x.yaml'), /nonexistent\/x\.yaml: config file not found/);
});

test('did-you-mean finds keys of other sections and near misses of other trainers\' names', () => {
  const cases: [string, RegExp][] = [
    ['lerning_rate: 1e-4\n', /x\.yaml: lerning_rate: unknown key \(did you mean optimizer\.lr\?\)/],
    ['learning_rate: 1e-4\n', /learning_rate: unknown key \(did you mean optimizer\.lr\?\)/],
    ['optimizer: {lerning_rate: 1e-4}\n', /optimizer\.lerning_rate: unknown key \(did you mean optimizer\.lr\?\)/],
    ['data: {lr: 1e-4}\n', /data\.lr: unknown key \(did you mean optimizer\.lr\?\)/],
    ['batch_sise: 4\n', /batch_sise: unknown key \(did you mean data\.batch_size\?/],
    ['ema_decy: 0.99\n', /ema_decy: unknown key \(did you mean ema\.decay\?\)/],
    ['results_dir: out\n', /results_dir: unknown key \(did you mean experiment_dir\?\)/],
    ['zzz_qqq: 1\n', /zzz_qqq: unknown key \(expected one of: experiment_dir, seed/],
  ];
  for (const [text, re] of cases) rejects({ 'base.yaml': BASE, 'x.yaml': text }, 'x.yaml', re);
  // enum values are matched against the values only, never against key names
  rejects({ 'base.yaml': BASE, 'x.yaml': 'diffusion: {sampling: lr}\n' }, 'x.yaml', /diffusion\.sampling: expected one of uniform, [a-z_, ]+, found string "lr"$/);
});

test('a mapping given to a scalar key names the file that gave it, not the defaults', () => {
  rejects({ 'base.yaml': BASE, 'x.yaml': 'model:\n  depth: {a: 1}\n' }, 'x.yaml', /\/x\.yaml: model\.depth: expected an integer, found a mapping/);
  rejects({ 'base.yaml': BASE, 'x.yaml': 'seed: {a: 1}\n' }, 'x.yaml', /\/x\.yaml: seed: expected an integer, found a mapping/);
  // a later scalar still wins and is blamed itself
  rejects({ 'base.yaml': BASE + 'seed: {a: 1}\n', 'x.yaml': 'seed: -3\n' }, 'x.yaml', /\/x\.yaml: seed: -3 is out of range/);
});

test('experiment_dir may not be the file-system root, a system folder or the home folder itself', () => {
  const home = homedir();
  for (const dir of ['/', '/etc', '/etc/speed', '/usr', '/bin', '/sbin', '/lib', '/lib64/x', '/proc', '/sys/x', '/dev', '/boot', '/var', home, '/usr/../']) {
    rejects({ 'base.yaml': BASE }, 'base.yaml', /command line: experiment_dir: .* is (the file-system root|a system folder|inside the system folder \/\w+|your home folder itself) \(.*give it a folder of its own/, [`experiment_dir=${dir}`]);
  }
  assert.match(systemFolderReason('/etc/x') ?? '', /inside the system folder \/etc/);
  assert.equal(systemFolderReason('/', '/home/u'), 'the file-system root');
  assert.equal(systemFolderReason('/home/u', '/home/u'), 'your home folder itself');
  // folders of their own inside them are fine
  for (const ok of ['/home/u/results/run', '/var/tmp/run', '/usr/local/runs/a', '/tmp/x', 'results/run', '/library', '/dev/shm/run']) assert.equal(systemFolderReason(ok, '/home/u'), null, ok);
  // /dev/shm is scratch space, but not a run's folder itself; the rest of /dev is refused
  assert.equal(systemFolderReason('/dev/shm', '/home/u'), 'a system folder');
  assert.match(systemFolderReason('/dev/sda1/x', '/home/u') ?? '', /inside the system folder \/dev/);
  // relative paths resolve against the working directory: "." run from / is the root
  assert.equal(systemFolderReason(path.relative(process.cwd(), '/')), 'the file-system root');
});

test('the shipped configs load', async () => {
  const { readdirSync, statSync } = await import('node:fs');
  const root = path.resolve('configs');
  const walk = (d: string): string[] => readdirSync(d).flatMap((n) => {
    const p = path.join(d, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.yaml') ? [p] : [];
  });
  const files = walk(root);
  assert.ok(files.length >= 10, `expected the shipped configs, found ${files.length}`);
  // own-images.yaml is for the user's folder: it names what is missing without one
  const own = path.join(root, 'own-images.yaml');
  assert.throws(() => loadConfig(own), /own-images\.yaml: data\.root: data\.name is image_folder: expected the path of the image folder, found null/);
  for (const f of files) for (const phase of ['train', 'sample', 'inference'] as const) loadConfig(f, { phase, overrides: f === own ? ['data.root=/data/pets'] : [] });
  const oc = loadConfig(own, { overrides: ['data.root=/data/pets'] }).config;
  assert.equal(oc.model.input_size, 32);
  assert.equal(oc.ema.decay, 0.995);
  assert.ok(oc.max_training_steps <= 2000, 'sized for ~10 minutes on 2 cores');
  const def = loadConfig(path.join(root, 'default.yaml')).config;
  assert.equal(def.data.name, 'synthetic');
  assert.equal(def.diffusion.sampling, 'speed');
  assert.equal(def.diffusion.weighting, 'speed');
  const xl = loadConfig(path.join(root, 'imagenet256/speed/dit_xl2.yaml')).config;
  assert.equal(xl.model.name, 'DiT-XL/2');
  assert.equal(xl.data.latent_scale, 0.18215);
  assert.equal(xl.model.in_channels, 4);
});
