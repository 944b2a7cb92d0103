// The source tree has no import circles (tools/import-cycles.mjs): modules that
// share types import them from a leaf module instead of from each other.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';

test('src/ has no import circles', () => {
  const r = spawnSync(process.execPath, ['tools/import-cycles.mjs', 'src'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^\d+ files, \d+ imports, 0 import circle\(s\)$/m, r.stdout);
});
