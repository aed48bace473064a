// Every kind of file ckpt dumps and restores, one module each (kind.ts says
// what a module provides). Adding a kind: one module here, one message in
// proto/ckpt/images.proto, one line in KINDS. Order matters at dump only:
// the first module that claims an fd dumps it.
import type { FileEntry, FileKind } from "../gen/ckpt/images_pb.ts";
import type { DumpContext, DumpedFd, FileKindOps } from "./kind.ts";
import { regular } from "./regular.ts";
import { chr } from "./chr.ts";
import { tty } from "./tty.ts";
import { fifo, pipe } from "./pipe.ts";
import { eventfd } from "./eventfd.ts";
import { unix } from "./unix.ts";
import { inotify } from "./inotify.ts";
import { fanotify } from "./fanotify.ts";
import { unlinkedInode, unlinkedOpen } from "./unlinked.ts";
import { epoll } from "./epoll.ts";
import { timerfd } from "./timerfd.ts";
import { signalfd } from "./signalfd.ts";
import { mqueue } from "./mqueue.ts";
import { tcp } from "./tcp.ts";
import { udp } from "./udp.ts";
import { inetRaw } from "./inet_raw.ts";
import { netlink } from "./netlink.ts";
import { pidfd } from "./pidfd.ts";

export const KINDS: readonly FileKindOps[] = [
  pipe,
  eventfd,
  epoll,
  timerfd,
  signalfd,
  pidfd,
  // Inet and netlink sockets before UNIX ones: theirs is a cheap question
  // (SO_DOMAIN of a copy), the UNIX kind's a sock_diag lookup. The UNIX
  // sockets its prefetch found in sock_diag's table are known as such
  // (knownSockKind): no copy is asked.
  tcp,
  udp,
  inetRaw,
  netlink,
  unix,
  inotify,
  fanotify,
  fifo,
  tty,
  chr,
  // Before regular: a memfd or a deleted file is one object for all its fds
  // and mappings, not a file to reopen by path.
  unlinkedOpen,
  unlinkedInode,
  // Before regular: a queue's descriptor looks like a file in "/".
  mqueue,
  regular,
];

const byKind = new Map<FileKind, FileKindOps>();
for (const k of KINDS) for (const v of k.kinds) byKind.set(v, k);

/** The module that dumps fd, if any claims it. */
export function kindForDump(fd: DumpedFd, ctx: DumpContext): FileKindOps | undefined {
  for (const k of KINDS) if (k.claims(fd, ctx)) return k;
  return undefined;
}

/** The module that restores entries of this kind. */
export function kindOf(f: FileEntry): FileKindOps | undefined {
  return byKind.get(f.kind);
}
