// Leveled logging to stderr and, with --log-file, to a file (which always gets
// everything at the chosen level, with timestamps).
export const Level = { error: 0, warn: 1, info: 2, debug: 3, trace: 4 } as const;
export type LevelName = keyof typeof Level;

const enc = new TextEncoder();

class Logger {
  level: number = Level.warn;
  private file: Deno.FsFile | undefined;
  private t0 = performance.now();

  configure(opts: { verbosity?: number; logFile?: string }): void {
    if (opts.verbosity !== undefined) {
      this.level = Math.min(Level.warn + opts.verbosity, Level.trace);
    }
    if (opts.logFile) {
      this.file = Deno.openSync(opts.logFile, {
        write: true,
        create: true,
        append: true,
        mode: 0o600,
      });
    }
  }

  private emit(level: number, tag: string, msg: string): void {
    if (level > this.level) return;
    const line = `${tag}: ${msg}\n`;
    if (this.file) {
      const ms = (performance.now() - this.t0).toFixed(1).padStart(8);
      this.file.writeSync(enc.encode(`(${ms} ms) ${line}`));
    } else {
      Deno.stderr.writeSync(enc.encode(line));
    }
  }

  /** Shown at every level (what CRIU prints with pr_msg, e.g. statistics). */
  always(msg: string): void {
    this.emit(Level.error, "Info", msg);
  }
  error(msg: string): void {
    this.emit(Level.error, "Error", msg);
  }
  warn(msg: string): void {
    this.emit(Level.warn, "Warn", msg);
  }
  info(msg: string): void {
    this.emit(Level.info, "Info", msg);
  }
  debug(msg: string): void {
    this.emit(Level.debug, "Debug", msg);
  }
  trace(msg: string): void {
    this.emit(Level.trace, "Trace", msg);
  }

  close(): void {
    this.file?.close();
    this.file = undefined;
  }
}

export const log = new Logger();
