// The CLI: pick the command, parse its options, run it, and turn every
// failure into one line on stderr and an exit status.
import { CkptError, describe, UsageError } from "../errors.ts";
import { NativeError } from "../native/mod.ts";
import { log } from "../util/log.ts";
import { VERSION } from "../version.ts";
import { COMMANDS } from "./commands.ts";
import { helpText, parseCommandLine } from "./spec.ts";
import { callerFds } from "./caller_fds.ts";
import { BlockedDump } from "../files/collect.ts";

function topHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 4;
  return [
    "Usage: ckpt COMMAND [OPTIONS]",
    "",
    "Checkpoint a running Linux process tree to a directory of images and restore it",
    "later with the same PIDs, memory, registers, files and sockets.",
    "",
    "Commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    "",
    "Options:",
    "  -h, --help       show this help ('ckpt COMMAND --help' for a command's options)",
    "  -V, --version    print the version",
  ].join("\n");
}

export async function runCli(argv: string[]): Promise<number> {
  // Taken before anything else runs (and gone from the environment).
  callerFds();
  try {
    const [name, ...rest] = argv;
    if (name === undefined || name === "-h" || name === "--help" || name === "help") {
      console.log(topHelp());
      return name === undefined ? 2 : 0;
    }
    if (name === "-V" || name === "--version" || name === "version") {
      console.log(`ckpt ${VERSION}`);
      return 0;
    }
    const spec = COMMANDS.find((c) => c.name === name);
    if (!spec) throw new UsageError(`unknown command '${name}' (see 'ckpt --help')`);
    if (spec.raw) return await spec.raw(rest, (argv) => runCommand(argv));
    return await runCommand(argv);
  } catch (err) {
    return report(err);
  } finally {
    log.close();
  }
}

/** One command of COMMANDS, parsed and run; failures are the caller's. */
async function runCommand(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const spec = COMMANDS.find((c) => c.name === name);
  if (!spec || spec.raw) throw new UsageError(`unknown command '${name}' (see 'ckpt --help')`);
  const { opts, positionals } = parseCommandLine(spec, rest);
  if (opts.bool("help")) {
    console.log(helpText(spec));
    return 0;
  }
  log.configure({ verbosity: opts.count("verbose"), logFile: opts.string("log-file") });
  return await spec.run(opts, positionals);
}

function report(err: unknown): number {
  // Every blocker of a refused dump on a line of its own; anything else on one.
  const msg = err instanceof BlockedDump && err.blockers.length > 1
    ? describe(err).split("\n").map((l) => l.trimEnd()).join("\n")
    : describe(err).replace(/\s*\n\s*/g, "; ");
  console.error(`ckpt: ${msg}`);
  if (err instanceof CkptError) return err.exitCode;
  if (err instanceof NativeError) return 1;
  // Anything else is a bug in ckpt: still one line, but keep the trace in the log.
  if (err instanceof Error && err.stack) log.debug(err.stack);
  return 1;
}
