// A one-line progress display on stderr, only when stderr is a terminal.
import { formatBytes } from "./units.ts";

const enc = new TextEncoder();

export class Progress {
  private readonly tty = Deno.stderr.isTerminal();
  private last = 0;

  constructor(private readonly label: string, private readonly total: number) {}

  update(done: number): void {
    if (!this.tty) return;
    const now = performance.now();
    if (now - this.last < 100 && done < this.total) return;
    this.last = now;
    const pct = this.total ? Math.floor((done / this.total) * 100) : 100;
    Deno.stderr.writeSync(
      enc.encode(
        `\r${this.label}: ${formatBytes(done)} / ${formatBytes(this.total)} (${pct}%)\x1b[K`,
      ),
    );
  }

  done(): void {
    if (this.tty) Deno.stderr.writeSync(enc.encode("\r\x1b[K"));
  }
}
