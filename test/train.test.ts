import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { Rng } from '../src/rng.js';
import { tinyConfig, useAddon } from './helpers-e2e.js';

useAddon();
const { train, lrAt, dropLabels } = await import('../src/train/index.js');
const { formatBytes } = await import('../src/progress.js');

const quiet = { log: () => {}, handleSignals: false, progressStream: { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream };

const metrics = (exp: string) =>
  readFileSync(path.join(exp, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown> & { step: number; loss: number });

test('lr warm-up and label dropout', () => {
  const o = { name: 'adamw' as const, lr: 1e-3, betas: [0.9, 0.999] as [number, number], eps: 1e-8, weight_decay: 0, max_grad_norm: 0, warmup_steps: 4 };
  assert.deepEqual([0, 1, 3, 10].map((s) => lrAt(o, s)), [2.5e-4, 5e-4, 1e-3, 1e-3]);
  assert.equal(lrAt({ ...o, warmup_steps: 0 }, 0), 1e-3);
  const y = Int32Array.from({ length: 2000 }, (_, i) => i % 5);
  const d = dropLabels(y, 5, 0.1, new Rng(1));
  const dropped = d.filter((v) => v === 5).length;
  assert.ok(dropped > 140 && dropped < 260, `dropped ${dropped}`);
  assert.ok(d.every((v, i) => v === 5 || v === y[i]));
  assert.deepEqual(dropLabels(y, 0, 0.1, new Rng(1)), y);
});

test('a short training run lowers the loss and logs the promised metrics', async () => {
  const { config, exp } = tinyConfig(['max_training_steps=60', 'diffusion.sampling=uniform', 'diffusion.weighting=none']);
  const r = await train({ config, ...quiet });
  assert.equal(r.step, 60);
  const m = metrics(exp);
  assert.equal(m.length, 60);
  const mean = (a: typeof m) => a.reduce((s, x) => s + x.loss, 0) / a.length;
  const first = mean(m.slice(0, 10));
  const last = mean(m.slice(-10));
  assert.ok(last < 0.7 * first, `loss ${first.toFixed(4)} -> ${last.toFixed(4)}`);
  for (const k of ['step', 'loss', 'mse', 'vb', 'images_per_sec', 'lr', 'grad_norm', 'skipped', 't_hist', 'loss_per_bucket', 'bucket_edges']) assert.ok(k in m[0], k);
  const l = m[5] as unknown as { t_hist: number[]; bucket_edges: number[]; loss_per_bucket: (number | null)[] };
  assert.equal(l.t_hist.reduce((a, b) => a + b, 0), 8);
  assert.deepEqual(l.bucket_edges, Array.from({ length: 21 }, (_, i) => i * 5));
  assert.equal(l.loss_per_bucket.length, 20);
  assert.ok(existsSync(path.join(exp, 'config.yaml')));
  assert.ok(existsSync(path.join(exp, 'checkpoints', '0000060', 'state.json')));
});

test('resume is exact: 2N steps == N steps + resume + N steps (losses and every weight)', async () => {
  const N = 6;
  const base = ['ckpt_every=4', 'data.num_samples=20']; // epochs of 2 batches: the data position crosses epochs
  const a = tinyConfig([...base, `max_training_steps=${2 * N}`]);
  await train({ config: a.config, ...quiet });
  const b = tinyConfig([...base, `max_training_steps=${N}`]);
  await train({ config: b.config, ...quiet });
  assert.ok(existsSync(path.join(b.exp, 'checkpoints', '0000004')), 'ckpt_every writes intermediate checkpoints');
  // the second half recomputes activations: the same results, in less memory
  const b2 = tinyConfig([...base, `max_training_steps=${2 * N}`, `experiment_dir=${b.exp}`, 'recompute_activations=true']);
  const lines: string[] = [];
  const r = await train({ config: b2.config, resume: 'latest', ...quiet, log: (m) => lines.push(m) });
  const mem = (ls: string[]) => /\+ ([\d.]+ \w+) of activations/.exec(ls.find((l) => l.startsWith('memory:')) ?? '')?.[1];
  const linesA: string[] = [];
  await train({ config: tinyConfig([...base, 'max_training_steps=1']).config, ...quiet, log: (m) => linesA.push(m) });
  // tiny model (depth 2, batch 8, 4 tokens, D 32): block 1 keeps x_in and mod, and drops
  // the other 17600 floats (68.75 KiB) of its 20160
  assert.equal(mem(linesA), '313 KiB');
  assert.equal(mem(lines), '244 KiB', 'recompute_activations lowers the logged activation memory');
  assert.deepEqual(['0 B', '1023 B', '1.5 KiB', '100 MiB', '3.0 GiB'], [0, 1023, 1536, 100 * 2 ** 20, 3.2e9].map(formatBytes));
  assert.equal(r.step, 2 * N);
  const ma = metrics(a.exp);
  const mb = metrics(b.exp);
  assert.equal(mb.length, 2 * N);
  const strip = (x: Record<string, unknown>) => { const { images_per_sec: _i, time: _t, ...rest } = x; return rest; };
  assert.deepEqual(mb.map(strip), ma.map(strip));
  for (const f of ['model.safetensors', 'ema.safetensors', 'optimizer.safetensors']) {
    const fa = readFileSync(path.join(a.exp, 'checkpoints', '0000012', f));
    const fb = readFileSync(path.join(b.exp, 'checkpoints', '0000012', f));
    assert.ok(fa.equals(fb), `${f} differs after resume`);
  }
  const sa = JSON.parse(readFileSync(path.join(a.exp, 'checkpoints', '0000012', 'state.json'), 'utf8'));
  const sb = JSON.parse(readFileSync(path.join(b.exp, 'checkpoints', '0000012', 'state.json'), 'utf8'));
  assert.deepEqual(sb.train, sa.train);
  assert.deepEqual(sb.noise, sa.noise);
});

test('bad settings give clear errors', async () => {
  const { config } = tinyConfig(['max_training_steps=0', 'epochs=0']);
  await assert.rejects(train({ config, ...quiet }), /max_training_steps: nothing to train/);
  const e = tinyConfig(['data.batch_size=100']);
  await assert.rejects(train({ config: e.config, ...quiet }), /data\.batch_size 100 exceeds the data set's 64 samples/);
  const r = tinyConfig(['resume_training=/nonexistent/ckpt']);
  await assert.rejects(train({ config: r.config, ...quiet }), /\/nonexistent\/ckpt: checkpoint directory not found/);
  const ep = tinyConfig(['max_training_steps=0', 'epochs=2']); // 64 samples / 8 = 8 steps per epoch
  assert.equal((await train({ config: ep.config, ...quiet })).step, 16);
});

test('progress: a redrawn bar on a TTY, plain lines otherwise', async () => {
  const { Progress, formatDuration } = await import('../src/progress.js');
  const writes: string[] = [];
  const tty = { isTTY: true, columns: 200, write: (s: string) => { writes.push(s); return true; } } as unknown as NodeJS.WriteStream;
  const p = new Progress('train', 10, tty);
  p.tick(10, { loss: 0.5 });
  assert.match(writes[0], /^\r\x1b\[K.*train █+ 10\/10 {2}loss 0\.5000 {2}in /);
  p.line(10, { loss: 0.25 });
  assert.ok(writes.at(-1)!.endsWith('\n') && writes.at(-1)!.includes('loss 0.2500'));
  const plain: string[] = [];
  const pipe = { isTTY: false, write: (s: string) => { plain.push(s); return true; } } as unknown as NodeJS.WriteStream;
  const q = new Progress('train', 10, pipe, 0, { plainFraction: 0, plainSeconds: 60 }); // as training: its log lines are the progress
  q.tick(3);
  assert.equal(plain.length, 0);
  q.line(3, { 'img/s': 12.5 });
  assert.match(plain[0], /^train 3\/10 {2}img\/s 12\.5 {2}ETA /);
  assert.deepEqual([formatDuration(5), formatDuration(125), formatDuration(3725)], ['5s', '2m05s', '1h02m']);
});
