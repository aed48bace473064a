// What dump, pre-dump and restore share on the command line for CRIU's
// users: --action-script (run at each action-script moment, CRIU's way:
// CRTOOLS_SCRIPT_ACTION names the moment; a non-zero exit fails the
// operation) and --display-stats (CRIU's statistics at the end).
import type { OptionSpec } from "../cli/spec.ts";
import { CkptError } from "../errors.ts";
import type { Notify } from "../util/actions.ts";

export const ACTION_OPTIONS: OptionSpec[] = [
  {
    name: "action-script",
    kind: "list",
    arg: "FILE",
    help: "run FILE at each of CRIU's action-script moments (CRTOOLS_SCRIPT_ACTION says " +
      "which: pre-dump, post-dump, pre-restore, post-restore, pre-resume, post-resume); " +
      "a non-zero exit fails the operation",
  },
  {
    name: "display-stats",
    kind: "boolean",
    help: "print CRIU's statistics at the end (also written to DIR/stats-dump, stats-restore)",
  },
];

/** Runs every script at each moment; `quiet` keeps their stdout off ours
 * (it carries an image stream). */
export function actionScripts(
  scripts: string[],
  imagesDir: string,
  quiet = false,
): Notify | undefined {
  if (!scripts.length) return undefined;
  return (action, pid) => {
    for (const script of scripts) {
      const env: Record<string, string> = {
        CRTOOLS_SCRIPT_ACTION: action,
        CRTOOLS_IMAGE_DIR: imagesDir,
      };
      if (pid !== undefined) env.CRTOOLS_INIT_PID = String(pid);
      let out: Deno.CommandOutput;
      try {
        out = new Deno.Command(script, {
          env,
          stdin: "null",
          stdout: quiet ? "null" : "inherit",
          stderr: "inherit",
        }).outputSync();
      } catch (err) {
        throw new CkptError(`${script}: cannot run it: ${(err as Error).message}`);
      }
      if (!out.success) {
        throw new CkptError(
          `${script} ${
            out.signal ? `was killed by ${out.signal}` : `exited with status ${out.code}`
          }`,
        );
      }
    }
  };
}
