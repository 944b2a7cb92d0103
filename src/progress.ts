// Progress display: a redrawn one-line bar on a TTY, plain lines otherwise
// (logs, CI), both with the same figures.

export interface ProgressFields {
  [name: string]: string | number;
}

export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '?';
  const s = Math.round(sec);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(r).padStart(2, '0')}s` : `${r}s`;
}

const fmt = (v: string | number): string =>
  typeof v === 'string' ? v : Number.isInteger(v) ? String(v) : Math.abs(v) >= 100 ? v.toFixed(1) : Math.abs(v) >= 0.01 ? v.toFixed(4) : v.toExponential(2);

export class Progress {
  private readonly start = Date.now();
  private lastDraw = 0;
  private readonly tty: boolean;
  private drawn = false;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
    /** units done before this process started (a resumed run): not counted in the rate */
    private readonly startAt = 0,
  ) {
    this.tty = Boolean(out.isTTY) && process.env.TERM !== 'dumb';
  }

  private eta(done: number): number {
    const el = (Date.now() - this.start) / 1000;
    const rate = (done - this.startAt) / el;
    return rate > 0 ? (this.total - done) / rate : NaN;
  }

  /** Redraws the bar (TTY, at most 10 times a second); a no-op otherwise. */
  tick(done: number, fields: ProgressFields = {}): void {
    if (!this.tty) return;
    const now = Date.now();
    if (now - this.lastDraw < 100 && done < this.total) return;
    this.lastDraw = now;
    const width = 24;
    const frac = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const full = Math.round(frac * width);
    const bar = '█'.repeat(full) + '░'.repeat(width - full);
    const extra = Object.entries(fields).map(([k, v]) => `${k} ${fmt(v)}`).join('  ');
    const line = `${this.label} ${bar} ${done}/${this.total}  ${extra}  ETA ${formatDuration(this.eta(done))}`;
    const cols = this.out.columns ?? 120;
    this.out.write('\r\x1b[K' + line.slice(0, cols - 1));
    this.drawn = true;
  }

  /** A permanent line (every log step): above the bar on a TTY, plain otherwise. */
  line(done: number, fields: ProgressFields = {}): void {
    const extra = Object.entries(fields).map(([k, v]) => `${k} ${fmt(v)}`).join('  ');
    const text = `${this.label} ${done}/${this.total}  ${extra}  ETA ${formatDuration(this.eta(done))}`;
    if (this.tty && this.drawn) this.out.write('\r\x1b[K');
    this.out.write(text + '\n');
    this.drawn = false;
  }

  done(): void {
    if (this.tty && this.drawn) this.out.write('\n');
    this.drawn = false;
  }
}
