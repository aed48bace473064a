// CRIU's action scripts: the moments of a dump or restore at which CRIU runs
// the scripts a user gave with --action-script, or sends a NOTIFY to an RPC
// caller that asked for them (notify_scripts) and waits for its answer.
// ckpt's engines take one synchronous callback and call it at the same
// moments; it throws to fail the operation, which is then undone as any
// other failure is (a dump releases the tree, a restore kills it).

/** Names as CRIU gives them (CRTOOLS_SCRIPT_ACTION, criu_notify.script). */
export type ActionScript =
  | "pre-dump"
  | "network-lock"
  | "post-dump"
  | "network-unlock"
  | "pre-restore"
  | "setup-namespaces"
  | "post-setup-namespaces"
  | "post-restore"
  | "pre-resume"
  | "post-resume"
  | "orphan-pts-master"
  | "status-ready";

/** Called at the moment CRIU runs that script; `pid` is the root's (real)
 * pid where CRIU gives one (setup-namespaces, post-restore). */
export type Notify = (script: ActionScript, pid?: number) => void;

/** Runs each of notify's script moments, failing with what the callback
 * threw, named for the moment. */
export function notifier(notify: Notify | undefined, fail: (msg: string) => Error): Notify {
  return (script, pid) => {
    if (!notify) return;
    try {
      notify(script, pid);
    } catch (err) {
      throw fail(`the ${script} action failed: ${(err as Error).message ?? err}`);
    }
  };
}
