// Progress display: a redrawn one-line bar on a TTY; off a TTY (logs, CI,
// `| tee`) plain lines every `plainFraction` of the work or every
// `plainSeconds`, whichever comes first, so a long grid is never silent.
// Both carry the same figures and an ETA.

export interface ProgressFields {
  [name: string]: string | number;
}

export interface ProgressOptions {
  /** off a TTY: a line each time this fraction of the total is crossed (0: never); default 0.1 */
  plainFraction?: number;
  /** off a TTY: a line when this many seconds passed since the last line (0: never); default 10 */
  plainSeconds?: number;
  /** show "done/total" (default) or a percentage (units the user does not count, e.g. image-steps) */
  counts?: boolean;
  /** clock in ms (tests) */
  now?: () => number;
}

export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '?';
  const s = Math.round(sec);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(r).padStart(2, '0')}s` : `${r}s`;
}

/**
 * A figure as a person reads it: integers as they are; rates (keys ending in
 * "/s") with one decimal ("img/s 37.3"); anything else with 4 significant
 * figures ("loss 0.03312", "grad 1.208"), in exponent form below 1e-3 or from
 * 1e6 on ("lr 1.000e-4").
 */
export function formatValue(key: string, v: string | number): string {
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  if (key.endsWith('/s')) return Math.abs(v) >= 1000 ? v.toFixed(0) : v.toFixed(1);
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e6) return v.toExponential(3);
  if (a >= 1e4) return v.toFixed(0);
  return v.toPrecision(4);
}

const fields = (f: ProgressFields): string => Object.entries(f).map(([k, v]) => `${k} ${formatValue(k, v)}`).join('  ');

export class Progress {
  private readonly now: () => number;
  private readonly start: number;
  private lastDraw = 0;
  private lastPlain: number;
  /** the plainFraction step last reported off a TTY */
  private lastQuantum = 0;
  private readonly tty: boolean;
  private drawn = false;
  private readonly o: Required<Omit<ProgressOptions, 'now'>>;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
    /** units done before this process started (a resumed run): not counted in the rate */
    private readonly startAt = 0,
    opts: ProgressOptions = {},
  ) {
    this.tty = Boolean(out.isTTY) && process.env.TERM !== 'dumb';
    this.now = opts.now ?? Date.now;
    this.start = this.now();
    this.lastPlain = this.start;
    this.o = { plainFraction: opts.plainFraction ?? 0.1, plainSeconds: opts.plainSeconds ?? 10, counts: opts.counts ?? true };
    if (this.o.plainFraction > 0 && total > 0) this.lastQuantum = Math.floor(startAt / total / this.o.plainFraction);
  }

  private eta(done: number): number {
    const el = (this.now() - this.start) / 1000;
    const rate = (done - this.startAt) / el;
    return rate > 0 ? Math.max(0, this.total - done) / rate : NaN;
  }

  private position(done: number): string {
    if (this.o.counts) return `${Math.floor(done)}/${this.total}`;
    return `${this.total > 0 ? Math.floor((100 * Math.min(done, this.total)) / this.total) : 100}%`;
  }

  private text(done: number, f: ProgressFields): string {
    const extra = fields(f);
    const elapsed = (this.now() - this.start) / 1000;
    const time = done >= this.total ? `in ${formatDuration(elapsed)}` : `ETA ${formatDuration(this.eta(done))}`;
    return `${this.label} ${this.position(done)}  ${extra}${extra ? '  ' : ''}${time}`;
  }

  /** Redraws the bar on a TTY (at most 10 times a second); off a TTY, a plain line now and then (see ProgressOptions). */
  tick(done: number, f: ProgressFields = {}): void {
    const now = this.now();
    if (!this.tty) {
      const q = this.o.plainFraction > 0 && this.total > 0 ? Math.floor(Math.min(done, this.total) / this.total / this.o.plainFraction + 1e-9) : 0;
      const byFraction = q > this.lastQuantum;
      const byTime = this.o.plainSeconds > 0 && now - this.lastPlain >= 1000 * this.o.plainSeconds;
      if (!byFraction && !byTime) return;
      this.lastQuantum = Math.max(this.lastQuantum, q);
      this.lastPlain = now;
      this.out.write(this.text(done, f) + '\n');
      return;
    }
    if (now - this.lastDraw < 100 && done < this.total) return;
    this.lastDraw = now;
    const width = 24;
    const frac = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const full = Math.round(frac * width);
    const bar = '█'.repeat(full) + '░'.repeat(width - full);
    const line = `${this.label} ${bar} ${this.text(done, f).slice(this.label.length + 1)}`;
    const cols = this.out.columns ?? 120;
    this.out.write('\r\x1b[K' + line.slice(0, cols - 1));
    this.drawn = true;
  }

  /** A permanent line (every log step): above the bar on a TTY, plain otherwise. */
  line(done: number, f: ProgressFields = {}): void {
    if (this.tty && this.drawn) this.out.write('\r\x1b[K');
    this.out.write(this.text(done, f) + '\n');
    this.drawn = false;
    this.lastPlain = this.now();
    if (this.o.plainFraction > 0 && this.total > 0) {
      this.lastQuantum = Math.max(this.lastQuantum, Math.floor(Math.min(done, this.total) / this.total / this.o.plainFraction + 1e-9));
    }
  }

  done(): void {
    if (this.tty && this.drawn) this.out.write('\n');
    this.drawn = false;
  }
}

/** 1536 -> "1.5 KiB", 3.2e9 -> "3.0 GiB" (binary units, 3 significant figures at most). */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 || v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}
