// POSIX message queue descriptors (mq_open): the queue's name and the open
// flags. A queue of the tree's own IPC namespace is restored with that
// namespace (src/ns/mqueue.ts), so its descriptors can only be opened once
// the restored root's namespaces exist: they are deferred, and the root puts
// them in place at its first stop. A queue of ckpt's namespace is external
// state, like a file: it must still be there at restore.
import { create } from "@bufbuild/protobuf";
import { FileKind, MqueueFileSchema } from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import { mqOpen } from "../native/ns.ts";
import { inNamespacesOf } from "../ns/enter.ts";
import { nsOf, ownNs } from "../ns/kinds.ts";
import { mqueueRoot, readQueueInfo } from "../ns/mqueue.ts";
import type { DumpContext, DumpedFd, FileKindOps } from "./kind.ts";

const MQUEUE_MAGIC = 0x19800202n;
const FLAGS = O.ACCMODE | O.NONBLOCK;

/** The mqueue filesystem of an IPC namespace, mounted once per dump. */
interface Seen {
  dev: number;
  path: string;
}

function queuesOf(pid: number, ctx: DumpContext): Seen {
  const ns = nsOf(pid, "ipc") ?? "";
  const all = ctx.local(queuesOf, () => new Map<string, Seen>());
  let s = all.get(ns);
  if (!s) {
    const root = inNamespacesOf(pid, ["ipc"], mqueueRoot);
    ctx.atRelease(() => fdops.close(root.fd));
    s = { dev: Deno.statSync(root.path).dev, path: root.path };
    all.set(ns, s);
  }
  return s;
}

function isMqueue(fd: DumpedFd, ctx: DumpContext): boolean {
  if (!/^\/[^/]+$/.test(fd.link) || !fd.st.isFile) return false;
  const copy = ctx.copyFd(fd.pid, fd.fd, fd.where);
  try {
    return fdops.fstatfs(copy).type === MQUEUE_MAGIC;
  } finally {
    fdops.close(copy);
  }
}

export const mqueue: FileKindOps = {
  name: "POSIX message queue",
  kinds: [FileKind.FILE_MQUEUE],

  claims: isMqueue,

  dump(fd, ctx) {
    const name = fd.link.slice(1);
    const treeNs = nsOf(fd.pid, "ipc") !== ownNs("ipc");
    const q = queuesOf(fd.pid, ctx);
    if (fd.st.dev !== q.dev) {
      throw new DumpError(
        `${fd.where} is a POSIX message queue of another IPC namespace than its task's; ` +
          `this cannot be dumped`,
      );
    }
    const notify = readQueueInfo(`${q.path}/${name}`).get("NOTIFY_PID") ?? 0;
    if (notify !== 0) {
      throw new DumpError(
        `${fd.where}: POSIX message queue /${name} has a notification registered (mq_notify) ` +
          `by pid ${notify}, which cannot be dumped yet`,
      );
    }
    return {
      kind: FileKind.FILE_MQUEUE,
      mqueue: create(MqueueFileSchema, { name, flags: fd.flags & FLAGS, treeNs }),
    };
  },

  validate(f, fail) {
    const m = f.mqueue ?? fail("message queue details missing");
    if (!m.name || m.name.includes("/") || m.name.includes("\0") || m.name.length > 255) {
      fail(`message queue name ${JSON.stringify(m.name.slice(0, 80))} is malformed`);
    }
    if ((m.flags & ~FLAGS) !== 0 || (m.flags & O.ACCMODE) === O.ACCMODE) {
      fail("message queue open flags are malformed");
    }
  },

  deferred: (f) => !!f.mqueue?.treeNs,

  open(f, _ctx, where) {
    const m = f.mqueue!;
    try {
      return mqOpen(m.name, m.flags | O.CLOEXEC, 0);
    } catch (err) {
      if (err instanceof NativeError && err.errno === 2) {
        throw new RestoreError(`${where}: POSIX message queue /${m.name} is gone`);
      }
      throw err;
    }
  },
};
