// Mutated .pt files and pickles (fixed seed, bounded time): every failure is a
// CheckpointError naming the file; nothing crashes, hangs or allocates without bound.
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { convertPt } from '../src/convert/index.js';
import { unpickle } from '../src/convert/unpickle.js';
import { CheckpointError } from '../src/errors.js';
import { readZipDirectory, zipEntryDataOffset } from '../src/io/zip.js';
import { Rng } from '../src/rng.js';

const FIX = path.resolve('test/fixtures/pt');
const ITERS = Number(process.env.FUZZ_ITERS ?? 150);

function mutate(src: Uint8Array, rng: Rng, from = 0, to = src.length): Uint8Array {
  const b = Uint8Array.from(src);
  const kind = rng.int(4);
  if (kind === 3) return b.subarray(0, from + rng.int(Math.max(1, to - from))); // truncate
  const n = 1 + rng.int(kind === 0 ? 1 : 8);
  for (let i = 0; i < n; i++) {
    const at = from + rng.int(Math.max(1, to - from));
    b[at] = kind === 2 ? [0x00, 0xff, 0x7f, 0x80, 0x63, 0x52, 0x2e][rng.int(7)] : rng.int(256);
  }
  return b;
}

test('mutated .pt files and pickles give CheckpointErrors only', (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ptfuzz-'));
  const rng = new Rng(2024);
  const started = Date.now();
  const counts = { ok: 0, clean: 0, pickles: 0, pickleErrors: 0 };
  for (const name of ['tiny_f16', 'nested', 'strided']) {
    const file = path.join(FIX, `${name}.pt`);
    const bytes = readFileSync(file);
    const fd = openSync(file, 'r');
    const pkl = readZipDirectory(fd, file).find((e) => e.name.endsWith('data.pkl'))!;
    const start = zipEntryDataOffset(fd, pkl, file);
    closeSync(fd);
    const pickle = bytes.subarray(start, start + pkl.size);
    for (let i = 0; i < ITERS; i++) {
      // whole-file mutations, and mutations inside the pickle (where the interpreter runs)
      const m = i % 2 === 0 ? mutate(bytes, rng) : mutate(bytes, rng, start, start + pkl.size);
      const f = path.join(dir, 'm.pt');
      writeFileSync(f, m);
      try {
        convertPt(f, path.join(dir, 'm.safetensors'), { log: () => {} });
        counts.ok++;
      } catch (e) {
        assert.ok(e instanceof CheckpointError, `${name} #${i}: ${String((e as Error).stack ?? e)}`);
        assert.ok(e.message.includes(f), e.message);
        counts.clean++;
      }
      counts.pickles++;
      try {
        unpickle(mutate(pickle, rng), 'p.pkl');
      } catch (e) {
        counts.pickleErrors++;
        assert.ok(e instanceof CheckpointError, `${name} pickle #${i}: ${String((e as Error).stack ?? e)}`);
      }
    }
  }
  t.diagnostic(`files: ${counts.ok + counts.clean} (${counts.clean} clean errors, ${counts.ok} converted); pickles: ${counts.pickles} (${counts.pickleErrors} clean errors); ${Date.now() - started} ms`);
  assert.ok(counts.clean > 0);
  assert.ok(ITERS > 150 || Date.now() - started < 60_000, `took ${Date.now() - started} ms`);
});
