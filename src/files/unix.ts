// UNIX sockets as one kind of file. The model lives in src/unix/ (dump.ts
// reads each socket and decides about outside peers once the whole tree is
// known; restore.ts rebuilds every socket of the image together, since they
// depend on each other); this module plugs it into the file registry.
import { FileKind } from "../gen/ckpt/images_pb.ts";
import { RestoreError } from "../errors.ts";
import { UnixDumper } from "../unix/dump.ts";
import { UnixSockets } from "../unix/restore.ts";
import type { DumpContext, DumpedFd, FileKindOps, RestoreContext } from "./kind.ts";
import { BlockedDump } from "./collect.ts";
import { authorityOf } from "./authority.ts";
import { knownSockKind } from "./inet.ts";

const AF_UNIX = 1;

function dumper(ctx: DumpContext): UnixDumper {
  return ctx.local(unix, () => {
    const d = new UnixDumper(ctx.unix, (n) => ctx.ownFile(n));
    ctx.atFinish((pids) => {
      const refused = d.finish(pids);
      if (refused.length) {
        throw new BlockedDump(refused.map((message) => ({ pid: 0, message })));
      }
    });
    ctx.atRelease(() => d.release());
    return d;
  });
}

function sockets(ctx: RestoreContext): UnixSockets {
  return ctx.local(unix, () => {
    const s = new UnixSockets(
      ctx.entries,
      {
        ...ctx.unix,
        inherit: ctx.inherit,
        authorityOf: (pid) => authorityOf(ctx.taskOf(pid) ?? ctx.task!),
      },
      (id, where) => ctx.get(id, where),
    );
    ctx.atClose(() => s.closeAll());
    return s;
  });
}

/** The inode of a socket fd, from its link "socket:[INO]" (a sockfs file
 * has that very inode: its stat gives it without parsing). */
function socketIno(fd: DumpedFd): number | undefined {
  const link = fd.link;
  if (!link.startsWith("socket:[") || !link.endsWith("]")) return undefined;
  if (fd.st.isSocket && fd.st.ino) return fd.st.ino;
  const digits = link.slice(8, -1);
  return /^\d+$/.test(digits) ? Number(digits) : undefined;
}

export const unix: FileKindOps = {
  name: "unix socket",
  kinds: [FileKind.FILE_UNIX],
  network: true,

  claims: (fd, ctx) => {
    const ino = socketIno(fd);
    return ino !== undefined && dumper(ctx).isUnix(ino);
  },

  prefetch(fds, ctx) {
    const socks: { fd: number; ino: number }[] = [];
    for (const fd of fds) {
      const ino = socketIno(fd);
      if (ino !== undefined) socks.push({ fd: fd.fd, ino });
    }
    if (socks.length && fds[0].pid !== Deno.pid) {
      dumper(ctx).prefetch(
        fds[0].pid,
        socks,
        (ino, type) => knownSockKind(ctx, ino, { domain: AF_UNIX, type, protocol: 0 }),
      );
    }
  },

  dump(fd, ctx) {
    const ino = socketIno(fd)!;
    return {
      kind: FileKind.FILE_UNIX,
      unix: dumper(ctx).describe(fd.pid, fd.fd, ino, fd.flags, fd),
    };
  },

  validate(f, fail) {
    if (!f.unix) fail("socket details missing");
  },

  open(f, ctx, where) {
    if (!f.unix) throw new RestoreError(`${where}: files.img entry ${f.id} has no socket data`);
    return sockets(ctx).open(f, where);
  },

  inheritKey: (f) => `socket:[${f.unix?.ino}]`,
};
