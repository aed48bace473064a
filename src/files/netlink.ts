// Netlink sockets (route, generic, audit, uevent…): protocol, the port id it
// was bound or autobound to, the groups it listens to, where it is
// connected, and its options. Queued messages describe kernel state as it
// was at dump and would be stale when read after restore: they are dropped,
// with a warning, as CRIU does. A socket in the middle of a dump request
// (the kernel still owes it the rest of a multi-part answer) is refused:
// the program would wait for parts nobody sends.
import { create } from "@bufbuild/protobuf";
import { FileKind, NetlinkSocketFileSchema } from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { fd as fdops, O } from "../native/mod.ts";
import { errnoText } from "../native/errno.ts";
import { sock } from "../native/inetsk.ts";
import { log } from "../util/log.ts";
import { NDIAG_FLAG_CB_RUNNING, netlinkDiag } from "../net/diag.ts";
import { applyOptions, checkOption, readOptions } from "../net/options.ts";
import { AF_NETLINK, socketInode, sockKind } from "./inet.ts";
import type { DumpContext, FileKindOps } from "./kind.ts";
import { netlinkName } from "../net/names.ts";
import { asTask } from "../native/creds.ts";

const SOL_NETLINK = 270;
const NETLINK_ADD_MEMBERSHIP = 1, NETLINK_LIST_MEMBERSHIPS = 9;
const SOCK_NONBLOCK = 0o4000;
const MAX_GROUPS = 4096;
const POLLIN = 1;

const tables = {};

function diagOf(ctx: DumpContext, ino: number) {
  return ctx.local(tables, () => netlinkDiag()).get(ino);
}

/** sockaddr_nl: port id and the first 32 groups. */
function nl(raw: Uint8Array | null): { portid: number; groups: number } {
  if (!raw || raw.length < 12) return { portid: 0, groups: 0 };
  const v = new DataView(raw.buffer, raw.byteOffset);
  return { portid: v.getUint32(4, true), groups: v.getUint32(8, true) };
}

function sockaddrNl(portid: number, groups: number): Uint8Array {
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  v.setUint16(0, AF_NETLINK, true);
  v.setUint32(4, portid >>> 0, true);
  v.setUint32(8, groups >>> 0, true);
  return b;
}

/** Every group the socket listens to, 1-based. */
function memberships(copy: number): number[] {
  const v = sock.get(copy, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, MAX_GROUPS / 8);
  if (typeof v === "number") return [];
  const out: number[] = [];
  const dv = new DataView(v.buffer);
  for (let w = 0; w + 4 <= v.length; w += 4) {
    const word = dv.getUint32(w, true);
    for (let b = 0; b < 32; b++) if (word & (1 << b)) out.push(w * 8 + b + 1);
  }
  return out;
}

export const netlink: FileKindOps = {
  name: "netlink socket",
  // Made inside the tree's network namespace when it has its own.
  network: true,
  kinds: [FileKind.FILE_NETLINK],

  claims: (fd, ctx) => sockKind(fd, ctx)?.domain === AF_NETLINK,

  dump(fd, ctx) {
    const kind = sockKind(fd, ctx)!;
    const ino = socketInode(fd);
    const what = `${fd.where}: the ${netlinkName(kind.protocol)} socket`;
    const diag = diagOf(ctx, ino);
    if (diag && diag.flags & NDIAG_FLAG_CB_RUNNING) {
      throw new DumpError(
        `${what} is waiting for the rest of a multi-part answer the kernel is still sending; ` +
          `dump again once the program has read it`,
      );
    }
    const copy = ctx.copyFd(fd.pid, fd.fd, fd.where);
    try {
      const self = nl(sock.name(copy));
      const peer = nl(sock.name(copy, true));
      const entry = create(NetlinkSocketFileSchema, {
        ino: BigInt(ino),
        type: kind.type,
        protocol: kind.protocol,
        flags: fd.flags & O.NONBLOCK,
        portid: self.portid,
        dstPortid: peer.portid,
        dstGroup: peer.groups,
        groups: memberships(copy),
        opts: readOptions(copy, "netlink", AF_NETLINK),
        dropped: fdops.poll(copy, POLLIN) & POLLIN ? Math.max(1, diag?.rmem ?? 0) : 0,
        pid: fd.pid,
        fd: fd.fd,
      });
      if (entry.dropped) {
        log.warn(
          `${what} has queued messages: they describe the kernel ` +
            `as it was and are not saved; the program will not see them`,
        );
      }
      return { kind: FileKind.FILE_NETLINK, netlink: entry };
    } finally {
      if (copy !== fd.fd) fdops.close(copy);
    }
  },

  validate(f, fail) {
    const n = f.netlink ?? fail("netlink socket details missing");
    if (n.type !== 2 && n.type !== 3) fail(`netlink socket type ${n.type}`);
    if (n.protocol > 31) fail(`netlink protocol ${n.protocol}`);
    if (n.groups.length > MAX_GROUPS || n.groups.some((g) => g < 1 || g > MAX_GROUPS)) {
      fail("netlink groups");
    }
    for (const o of n.opts) {
      const why = checkOption(o);
      if (why) fail(why);
    }
  },

  open(f, ctx, where) {
    const n = f.netlink!;
    const what = `${where}: the ${netlinkName(n.protocol)} socket`;
    let fd: number;
    try {
      // Made as the task, so that it is its own socket.
      fd = asTask(
        ctx.authority,
        () =>
          sock.socket(AF_NETLINK, n.type | (n.flags & O.NONBLOCK ? SOCK_NONBLOCK : 0), n.protocol),
      );
    } catch (err) {
      throw new RestoreError(`${what} cannot be created: ${(err as Error).message}`);
    }
    try {
      applyOptions(fd, n.opts, { prebind: false }, where);
      if (n.portid) {
        const err = sock.bind(fd, sockaddrNl(n.portid, 0));
        if (err) {
          throw new RestoreError(
            `${what} cannot be bound to port id ${n.portid} again: ${errnoText(err)}` +
              (err === 98 ? " (another netlink socket has it)" : ""),
          );
        }
      }
      for (const g of n.groups) {
        const err = sock.setInt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g);
        if (err) throw new RestoreError(`${what} cannot join group ${g} again: ${errnoText(err)}`);
      }
      if (n.dstPortid || n.dstGroup) {
        const err = sock.connect(fd, sockaddrNl(n.dstPortid, n.dstGroup));
        if (err) throw new RestoreError(`${what} cannot connect again: ${errnoText(err)}`);
      }
      return fd;
    } catch (err) {
      fdops.close(fd);
      throw err instanceof RestoreError ? err : new RestoreError((err as Error).message);
    }
  },

  inheritKey: (f) => `socket:[${f.netlink?.ino}]`,
};
