// Acting inside a tree's namespaces from ckpt: the JS thread enters them
// (setns acts on the calling thread alone; IPC, UTS, cgroup and network
// namespaces can be entered by one thread of a multi-threaded process), the
// synchronous work runs, and the thread goes back to its own namespaces
// before anything else can run on it.
import { CkptError } from "../errors.ts";
import { fd as fdops, O } from "../native/mod.ts";
import { setns } from "../native/ns.ts";
import { CLONE_FLAG, type NsKind, ownNs } from "./kinds.ts";

/** Kinds one thread of ckpt can enter (user, time and mount namespaces need
 * a single-threaded process; a PID namespace is only ever for children). */
export type EnterableKind = "ipc" | "uts" | "cgroup" | "net";

export function inNamespacesOf<T>(pid: number, kinds: EnterableKind[], fn: () => T): T {
  const theirs: [NsKind, number][] = [];
  const ours: [NsKind, number][] = [];
  try {
    for (const k of kinds) {
      if (Deno.readLinkSync(`/proc/${pid}/ns/${k}`) === ownNs(k)) continue;
      theirs.push([k, fdops.open(`/proc/${pid}/ns/${k}`, O.RDONLY | O.CLOEXEC)]);
      ours.push([k, fdops.open(`/proc/thread-self/ns/${k}`, O.RDONLY | O.CLOEXEC)]);
    }
    let entered = 0;
    let outcome: { ok: true; value: T } | { ok: false; err: unknown };
    try {
      for (const [k, n] of theirs) {
        setns(n, CLONE_FLAG[k], `into the ${k} namespace of pid ${pid}`);
        entered++;
      }
      outcome = { ok: true, value: fn() };
    } catch (err) {
      outcome = { ok: false, err };
    }
    for (const [k, n] of ours.slice(0, entered)) {
      try {
        setns(n, CLONE_FLAG[k], `back into ckpt's own ${k} namespace`);
      } catch (err) {
        // Going on in the tree's namespace would act on the wrong objects.
        throw new FatalNamespaceError((err as Error).message);
      }
    }
    if (!outcome.ok) throw outcome.err;
    return outcome.value;
  } finally {
    for (const [, n] of [...theirs, ...ours]) fdops.close(n);
  }
}

export class FatalNamespaceError extends CkptError {
  constructor(why: string) {
    super(`ckpt could not return to its own namespace (${why}); stopping`);
    this.name = "FatalNamespaceError";
  }
}

/** A /proc file read on this very thread (what /proc/sys and /proc/sysvipc
 * show depends on the reading thread's namespaces). */
export function readHere(path: string): string {
  const n = fdops.open(path, O.RDONLY | O.CLOEXEC);
  try {
    const chunks: Uint8Array[] = [];
    for (;;) {
      const b = new Uint8Array(65536);
      const got = fdops.read(n, b);
      if (got === 0) break;
      chunks.push(b.subarray(0, got));
    }
    const all = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
    let off = 0;
    for (const c of chunks) {
      all.set(c, off);
      off += c.length;
    }
    return new TextDecoder().decode(all);
  } finally {
    fdops.close(n);
  }
}

/** Writes a /proc file on this very thread. */
export function writeHere(path: string, text: string): void {
  const n = fdops.open(path, O.WRONLY | O.CLOEXEC);
  try {
    fdops.writeAll(n, new TextEncoder().encode(text));
  } finally {
    fdops.close(n);
  }
}
