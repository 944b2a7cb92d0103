// Writes docs/config.md from the config schema: `npm run docs:config`.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { configReference } from '../src/config/doc.js';

const file = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'config.md');
writeFileSync(file, configReference());
process.stdout.write(`wrote ${file}\n`);
