/**
 * The terminal side of a run: plain log messages on stdout, and a progress bar on stderr that is
 * drawn only when stderr is a terminal (never in pipes, files or CI logs).
 */
export class Terminal {
  private barText = '';
  readonly interactive: boolean;

  constructor(private readonly err: NodeJS.WriteStream = process.stderr, private readonly out: NodeJS.WritableStream = process.stdout) {
    this.interactive = Boolean(err.isTTY) && process.env.CI === undefined;
  }

  /** Writes one message line, keeping the progress bar below it. */
  line(text: string, stream: 'out' | 'err' = 'out'): void {
    this.clearBar();
    (stream === 'out' ? this.out : this.err).write(`${text}\n`);
    this.drawBar();
  }

  /** Shows `done/total` with a label and a rate; a no-op when not interactive. */
  progress(label: string, done: number, total: number, rate?: number): void {
    if (!this.interactive) return;
    const width = 30;
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const filled = Math.round(frac * width);
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const rateText = rate !== undefined && Number.isFinite(rate) ? `  ${Math.round(rate)} samples/s` : '';
    this.clearBar();
    this.barText = `${label} ${bar} ${(frac * 100).toFixed(0).padStart(3)}% ${done}/${total}${rateText}`;
    this.drawBar();
  }

  endProgress(): void {
    this.clearBar();
    this.barText = '';
  }

  private clearBar(): void {
    if (this.interactive && this.barText) this.err.write('\r\x1b[2K');
  }

  private drawBar(): void {
    if (this.interactive && this.barText) this.err.write(this.barText.slice(0, (this.err.columns ?? 100) - 1));
  }
}
