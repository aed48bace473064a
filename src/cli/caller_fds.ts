// Which fds ckpt's caller handed it. The ./ckpt launcher lists them (every fd
// open without close-on-exec) just before it execs Deno, which then opens its
// own — its cache database, event loop, the library — at the lowest free
// numbers. `--inherit-fd fd[N]:…` gives the restored task ckpt's fd N, so N
// must be one of the caller's: a typo must not hand the task one of those.
const ENV = "CKPT_CALLER_FDS";
let taken: Set<number> | undefined;
let read = false;

/** Reads (once) and clears the launcher's list; undefined when ckpt was not
 * started through ./ckpt. */
export function callerFds(): Set<number> | undefined {
  if (!read) {
    read = true;
    const v = Deno.env.get(ENV);
    Deno.env.delete(ENV);
    if (v !== undefined) taken = new Set(v.split(",").filter(Boolean).map(Number));
  }
  return taken;
}
