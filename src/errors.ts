// Errors ckpt reports to people: one line saying what failed, where, and what
// to do. The CLI prints the message alone (no stack) and exits with exitCode.

export class CkptError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = "CkptError";
  }
}

/** A bad command line: exit status 2, like CRIU and most tools. */
export class UsageError extends CkptError {
  constructor(message: string) {
    super(message, 2);
    this.name = "UsageError";
  }
}

/** An image that is missing, damaged, foreign or from a newer ckpt. */
export class ImageError extends CkptError {
  constructor(readonly file: string, message: string) {
    // What a damaged image says is quoted in messages: its control
    // characters are shown escaped, so the error stays one line.
    // deno-lint-ignore no-control-regex
    super(`${file}: ${message}`.replace(/[\x00-\x1f\x7f]/g, (c) => JSON.stringify(c).slice(1, -1)));
    this.name = "ImageError";
  }
}

/** Dump refused or failed; the tree was left running. */
export class DumpError extends CkptError {
  constructor(message: string) {
    super(message);
    this.name = "DumpError";
  }
}

/** Restore failed at a stage; everything it started was killed. */
export class RestoreError extends CkptError {
  constructor(message: string) {
    super(message);
    this.name = "RestoreError";
  }
}

export function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
