// Collects every problem of a config so that one run reports them all (a
// config copied from another code base can have dozens; seeing them one per
// run is how a user loses an afternoon). Each problem keeps the file (or
// "command line") that set the key, and the key path.
import { ConfigError } from '../errors.js';

/** Several config problems at once; `problems` holds each with its file and key. */
export class ConfigErrorList extends ConfigError {
  override name = 'ConfigError';
  constructor(readonly problems: readonly ConfigError[]) {
    super('', problems.length === 1 ? problems[0].message : `${problems.length} problems in the config:\n${problems.map((p) => '  ' + p.message).join('\n')}`);
  }
}

/** Where a loader records problems instead of stopping at the first. */
export class Problems {
  readonly list: ConfigError[] = [];

  add(keyPath: string, message: string, file?: string): void {
    this.push(new ConfigError(keyPath, message, file));
  }

  /** Records a problem once (a bad reference is met from every key that uses it). */
  push(e: ConfigError): void {
    if (!this.list.some((x) => x.message === e.message)) this.list.push(e);
  }

  /** Runs `fn`, recording a ConfigError it throws (other errors propagate). */
  catch<T>(fn: () => T): T | undefined {
    try {
      return fn();
    } catch (e) {
      if (e instanceof ConfigErrorList) e.problems.forEach((p) => this.push(p));
      else if (e instanceof ConfigError) this.push(e);
      else throw e;
      return undefined;
    }
  }

  get size(): number {
    return this.list.length;
  }

  /** Throws one error listing every problem so far (the single one as it is). */
  throwIfAny(): void {
    if (this.list.length === 1) throw this.list[0];
    if (this.list.length > 1) throw new ConfigErrorList(this.list);
  }
}
