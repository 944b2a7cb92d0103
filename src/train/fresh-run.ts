// A fresh run (not --resume) into an experiment_dir that already holds
// checkpoints would mix two runs: metrics.jsonl restarted while the old
// checkpoints stayed, so a later `-p sample` picked the earlier run's weights.
// Refuse, unless overwrite=true, which clears the earlier run's outputs first.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';

import { checkpointsDir, listCheckpoints } from '../checkpoint/index.js';
import { ConfigError } from '../errors.js';

/** Files of an earlier run that a fresh run replaces (TensorBoard's event files too). */
const RUN_LOGS = /^(metrics\.jsonl|events\.out\.tfevents\..*)$/;

export function prepareFreshRun(exp: string, overwrite: boolean, log: (m: string) => void): void {
  const ckpts = listCheckpoints(exp);
  if (ckpts.length === 0) return;
  if (!overwrite) {
    throw new ConfigError('experiment_dir', `${exp} already holds ${ckpts.length} checkpoint(s) of an earlier run (newest: ${path.basename(ckpts[ckpts.length - 1])}); ` +
      'a fresh run would mix with them. Continue that run with --resume latest, or start anew with another experiment_dir=... ' +
      'or with overwrite=true (deletes its checkpoints and metrics)');
  }
  rmSync(checkpointsDir(exp), { recursive: true, force: true });
  const logs = existsSync(exp) ? readdirSync(exp).filter((n) => RUN_LOGS.test(n)) : [];
  for (const n of logs) rmSync(path.join(exp, n), { force: true });
  log(`overwrite: removed ${ckpts.length} checkpoint(s)${logs.length ? ` and ${logs.join(', ')}` : ''} of the earlier run in ${exp}`);
}

/**
 * What `--resume` (or resume_training) means for this run: a checkpoint spec
 * to load, or null for a fresh start. "latest" with no checkpoint is an error
 * naming the folder searched: a typo in experiment_dir must not cost a full
 * run from scratch. "auto" resumes the newest checkpoint when there is one and
 * starts fresh otherwise, for job schedulers that rerun the same command.
 */
export function resolveResume(spec: string | null | undefined, exp: string, log: (m: string) => void): string | null {
  if (!spec) return null;
  if (spec !== 'latest' && spec !== 'auto') return spec;
  if (listCheckpoints(exp).length > 0) return 'latest';
  const dir = path.resolve(checkpointsDir(exp));
  if (spec === 'auto') {
    log(`resume auto: no checkpoint in ${dir} yet; starting from scratch`);
    return null;
  }
  throw new ConfigError('--resume', `latest: no checkpoint in ${dir}${existsSync(dir) ? '' : ' (the folder does not exist)'}; ` +
    'check experiment_dir, or use --resume auto to start fresh when there is none');
}
