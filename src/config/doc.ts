// docs/config.md, generated from the schema (the one source of every key's
// type, default and meaning; `--help-config` prints the same schema). Run
// `npm run docs:config` after editing src/config/schema.ts; a test fails
// when the file and the schema disagree.
import { PHASES, SCHEMA, defaultText, typeText, type Section } from './schema.js';
import { SPEED_SPELLINGS } from './speed-compat.js';

const cell = (s: string) => s.replace(/\|/g, '\\|');

function sectionRows(node: Section, prefix: string, nested: boolean): string[] {
  const rows: string[] = [];
  for (const [k, v] of Object.entries(node.keys)) {
    const p = prefix ? `${prefix}.${k}` : k;
    // the top level's sections get their own headings; a section inside one is listed in its table
    if (v.kind === 'section') {
      if (nested) rows.push(...sectionRows(v, p, true));
      continue;
    }
    rows.push(`| \`${p}\` | ${cell(typeText(v))} | \`${cell(defaultText(v))}\` | ${cell(v.doc)} |`);
  }
  return rows;
}

function sectionTable(node: Section, prefix: string): string[] {
  const rows = sectionRows(node, prefix, prefix !== '');
  return rows.length ? ['| key | type | default | meaning |', '| --- | --- | --- | --- |', ...rows] : [];
}

/** The Markdown of docs/config.md. */
export function configReference(): string {
  const out: string[] = [
    '# Config reference',
    '',
    '<!-- Generated from src/config/schema.ts by `npm run docs:config`; do not edit by hand',
    '     (test/config-doc.test.ts fails when this file and the schema disagree). -->',
    '',
    'How a config is read: every `base.yaml` from the configs root (the nearest folder named',
    '`configs`) down to the chosen file\'s folder, then the file, deep-merged in that order; then',
    'the command-line overrides `key.path=value` (YAML-typed); SpeeD\'s spellings are mapped (below);',
    `the section of the phase (\`${PHASES.join('`, `')}\`) overrides the global keys for that phase;`,
    '`${key.path}` references are resolved; every key is checked. All problems of a config are',
    'reported in one error, each with the file (or "command line") that set the key.',
    '`speed-train --help-config` prints the same keys.',
    '',
    'A key whose default reads `= other.key` takes that key\'s value unless set: the model\'s',
    'shape follows the data, so the defaults alone form a valid config.',
    '',
    '## Top-level keys',
    '',
    ...sectionTable(SCHEMA, ''),
  ];
  for (const [k, v] of Object.entries(SCHEMA.keys)) {
    if (v.kind !== 'section') continue;
    out.push('', `## \`${k}:\` ${v.doc}`, '');
    const t = sectionTable(v, k);
    if (t.length) out.push(...t);
    if ((PHASES as readonly string[]).includes(k)) {
      out.push(...(t.length ? [''] : []), `Besides its own keys, \`${k}:\` may hold any global key (for example \`${k}: {seed: 1, data: {batch_size: 8}}\`); it applies in \`-p ${k}\` only.`);
    }
  }
  out.push(
    '',
    '## SpeeD\'s spellings',
    '',
    'A config copied from SpeeD (github.com/1zeryu/SpeeD) loads: its keys are mapped as below and',
    'the log says once which mappings a config used. Keys that configure PyTorch tooling only are',
    'dropped with one warning naming each key and its file.',
    '',
    '| SpeeD | speed-train |',
    '| --- | --- |',
    ...SPEED_SPELLINGS.map(([a, b]) => `| ${cell(a)} | ${cell(b)} |`),
    '',
  );
  return out.join('\n');
}
