// Raw IP sockets (SOCK_RAW, any protocol: recreated by root, as only root
// could make them) and ICMP/ICMPv6 ping sockets (SOCK_DGRAM with
// IPPROTO_ICMP/ICMPV6): protocol, bound and connected addresses, options
// (IP_HDRINCL, ICMP filters…), multicast memberships. A packet queued to
// read cannot be given back to this socket alone (a raw socket gets a copy
// of every packet of its protocol), so a socket with one is refused at
// dump: it is read within moments by any program that holds such a socket.
import { create } from "@bufbuild/protobuf";
import { FileKind, InetRawSocketFileSchema } from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { fd as fdops } from "../native/mod.ts";
import { errnoText } from "../native/errno.ts";
import { sock } from "../native/inetsk.ts";
import { applyMemberships, readMemberships } from "../net/mcast.ts";
import { procPeer } from "../net/procnet.ts";
import {
  applyLater,
  bindBack,
  isInet,
  newInetSocket,
  readInet,
  SOCK_DGRAM,
  SOCK_RAW,
  sockKind,
  sockText,
  validateInet,
} from "./inet.ts";
import type { FileKindOps } from "./kind.ts";

const POLLIN = 1;
const IPPROTO_ICMP = 1, IPPROTO_ICMPV6 = 58;

export const inetRaw: FileKindOps = {
  name: "raw or ping socket",
  // Made inside the tree's network namespace when it has its own.
  network: true,
  kinds: [FileKind.FILE_INET_RAW],

  claims: (fd, ctx) => {
    const k = sockKind(fd, ctx);
    return isInet(k) && (k.type === SOCK_RAW ||
      (k.type === SOCK_DGRAM && (k.protocol === IPPROTO_ICMP || k.protocol === IPPROTO_ICMPV6)));
  },

  dump(fd, ctx) {
    const kind = sockKind(fd, ctx)!;
    const copy = ctx.copyFd(fd.pid, fd.fd, fd.where);
    try {
      const sk = readInet(copy, fd, kind, kind.type === SOCK_RAW ? "raw" : "ping");
      // connect() of these sets an address and no port: getpeername hides it.
      if (!sk.peer.length) {
        sk.peer = procPeer(kind.domain, kind.type, Number(sk.ino)) ?? sk.peer;
      }
      if (fdops.poll(copy, POLLIN) & POLLIN) {
        throw new DumpError(
          `${fd.where}: the ${sockText(sk)} has a packet queued that the program has not read; ` +
            `it cannot be given back to this socket alone: dump again once it is read`,
        );
      }
      sk.mcast = readMemberships(copy, kind.domain);
      return { kind: FileKind.FILE_INET_RAW, inetRaw: create(InetRawSocketFileSchema, { sk }) };
    } finally {
      if (copy !== fd.fd) fdops.close(copy);
    }
  },

  validate(f, fail) {
    const r = f.inetRaw ?? fail("raw socket details missing");
    const sk = validateInet(r.sk, fail);
    if (sk.type !== SOCK_RAW && !(sk.type === SOCK_DGRAM && [1, 58].includes(sk.protocol))) {
      fail("not a raw or ping socket");
    }
  },

  open(f, _ctx, where) {
    const sk = f.inetRaw!.sk!;
    const fd = newInetSocket(sk, where);
    try {
      bindBack(fd, sk, where);
      if (sk.peer.length) {
        const err = sock.connect(fd, sk.peer);
        if (err) {
          throw new RestoreError(
            `${where}: connecting the ${sockText(sk)} failed: ${errnoText(err)}`,
          );
        }
      }
      applyLater(fd, sk, where);
      try {
        applyMemberships(fd, sk.mcast, where);
      } catch (err) {
        throw new RestoreError((err as Error).message);
      }
      return fd;
    } catch (err) {
      fdops.close(fd);
      throw err;
    }
  },

  inheritKey: (f) => `socket:[${f.inetRaw?.sk?.ino}]`,
};
