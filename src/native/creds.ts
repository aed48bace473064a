// Acting as a restored task (ffi/creds.zig): the JS thread takes on the
// task's fsuid, fsgid, supplementary groups and (at most) its effective
// capabilities for the length of one function, so that every path the
// function opens, creates, binds or unlinks is checked by the kernel against
// the task's authority rather than ckpt's. Only this thread changes; the
// others (fill workers, the page server) keep ckpt's credentials.
import { native } from "./load.ts";
import { NativeError } from "./mod.ts";

/** Who a path operation is done for: the task's filesystem ids, groups and
 * effective capabilities. */
export interface Authority {
  fsuid: number;
  fsgid: number;
  /** Effective ids (what a socket's peer sees, SO_PEERCRED); fsuid/fsgid
   * when not given. */
  euid?: number;
  egid?: number;
  groups: number[];
  capEff: bigint;
  /** For messages: "pid 123 (uid 1000)". */
  who: string;
}

const savedBuffers: Uint8Array<ArrayBuffer>[] = [];
let depth = 0;

/** Runs fn with the thread's credentials switched to `a`, and always
 * switches back (a failure to switch back ends ckpt: going on with the wrong
 * credentials would be worse than stopping). */
export function asTask<T>(a: Authority, fn: () => T): T {
  const saved = savedBuffers[depth] ??= new Uint8Array(Number(native().ck_cred_saved_size()));
  const groups = new Uint32Array(a.groups);
  const rc = native().ck_cred_enter(
    a.fsuid >>> 0,
    a.fsgid >>> 0,
    new Uint8Array(groups.buffer),
    groups.length,
    BigInt.asUintN(64, a.capEff),
    saved,
  );
  if (rc < 0n) throw new NativeError("acting as", Number(-rc), a.who);
  depth++;
  try {
    return fn();
  } finally {
    depth--;
    if (native().ck_cred_leave(saved) < 0n) {
      console.error("ckpt: cannot switch this thread back to ckpt's own credentials; stopping");
      Deno.exit(70);
    }
  }
}
