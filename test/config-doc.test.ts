// docs/config.md is generated from the schema; this fails when they drift.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { configReference } from '../src/config/doc.js';
import { describeSchema, SCHEMA } from '../src/config/schema.js';

test('docs/config.md is what `npm run docs:config` generates from the schema', () => {
  const want = configReference();
  const have = readFileSync('docs/config.md', 'utf8');
  assert.ok(have === want, 'docs/config.md differs from the schema: run `npm run docs:config` and commit the result');
});

test('--help-config and docs/config.md list the same keys and defaults', () => {
  const doc = configReference();
  const help = describeSchema();
  assert.ok(help.length > 50);
  for (const line of help) {
    const m = /^(\S+)  \((.*), default (.*)\)  (.*)$/.exec(line);
    assert.ok(m, line);
    assert.ok(doc.includes(`| \`${m[1]}\` |`), `${m[1]} missing from docs/config.md`);
    assert.ok(doc.includes(`\`${m[3].replace(/\|/g, '\\|')}\``), `${m[1]}: default ${m[3]} missing`);
  }
  assert.match(help.join('\n'), /model\.in_channels  \(int, default = data\.channels\)/);
  assert.match(doc, /\| `diffusion\.clts_target_steps` \| int \| `100000` \|/);
  assert.ok(Object.keys(SCHEMA.keys).every((k) => doc.includes(k)));
});
