// Child process of checkpoint.test.ts: writes checkpoints in a loop until it is
// killed. Values encode the step, so a reader can tell a mixed checkpoint.
import { writeCheckpoint } from '../src/checkpoint/index.js';
import { FakeModel } from './checkpoint-fake.js';

const exp = process.argv[2];
const model = FakeModel.make(256); // ~1 MB per file: writes take a while
for (let i = 1; ; i++) {
  // Alternate new step directories with rewrites of step 1 (the replace path).
  const step = i % 2 === 0 ? 1 : i;
  model.fill(step);
  writeCheckpoint(model, exp, { step, config: { note: 'fixture' }, train: { i } });
  if (i === 2) process.stdout.write('ready\n');
}
