// One RPC connection: a SOCK_SEQPACKET socket carrying one protobuf message
// per packet (criu_req in, criu_resp out), as CRIU's swrk and service speak
// it. Reads block the calling thread: a request is served to its end before
// the next is read, and a NOTIFY waits for the caller's answer right there.
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type criu_req,
  criu_reqSchema,
  type criu_resp,
  criu_respSchema,
} from "../gen/criu/rpc_pb.ts";
import { CkptError } from "../errors.ts";
import { fd as fdops, NativeError } from "../native/mod.ts";
import { MSG, SO, SOCK, SOL_SOCKET, unixsk } from "../native/unixsk.ts";

/** Larger than any request a runtime sends (a few KiB of mounts at most). */
const MAX_MESSAGE = 4 << 20;

export class RpcError extends CkptError {
  constructor(message: string) {
    super(message);
    this.name = "RpcError";
  }
}

export class Channel {
  private readonly buf = new Uint8Array(MAX_MESSAGE);
  /** The process at the other end when it connected (for a socketpair, the
   * one that made it): images_dir_fd and work_dir_fd are its descriptors. */
  readonly peer: number;

  constructor(readonly fd: number) {
    let type: number;
    try {
      type = unixsk.getInt(fd, SOL_SOCKET, SO.TYPE);
    } catch (err) {
      if (err instanceof NativeError && err.errno === 88) {
        throw new RpcError(`fd ${fd} is not a socket; give the SOCK_SEQPACKET socket's number`);
      }
      if (err instanceof NativeError && err.errno === 9) {
        throw new RpcError(`fd ${fd} is not open; give the SOCK_SEQPACKET socket's number`);
      }
      throw err;
    }
    if (type !== SOCK.SEQPACKET) {
      throw new RpcError(
        `fd ${fd} is a socket of type ${type}, not SOCK_SEQPACKET (one message per packet)`,
      );
    }
    this.peer = unixsk.peerCred(fd).pid;
  }

  /** The next request, or null when the caller has closed its end. */
  recv(): criu_req | null {
    let r;
    for (;;) {
      try {
        r = unixsk.recv(this.fd, this.buf, MSG.CMSG_CLOEXEC);
      } catch (err) {
        if (err instanceof NativeError && err.errno === 4) continue; // EINTR
        throw err;
      }
      if (r) break; // (null: EAGAIN, which a blocking socket only gives after a signal)
    }
    for (const extra of r.fds) fdops.close(extra); // requests carry none
    if (r.len === 0) return null;
    if (r.flags & MSG.TRUNC) {
      throw new RpcError(`a request of more than ${MAX_MESSAGE} bytes was cut off`);
    }
    try {
      return fromBinary(criu_reqSchema, this.buf.subarray(0, r.len));
    } catch (err) {
      throw new RpcError(`undecodable request (${r.len} bytes): ${(err as Error).message}`);
    }
  }

  /** One response; `fds` go along as SCM_RIGHTS (orphan-pts-master). */
  send(resp: criu_resp, fds: number[] = []): void {
    const bytes = toBinary(criu_respSchema, resp);
    try {
      unixsk.send(this.fd, bytes, null, fds);
    } catch (err) {
      if (err instanceof NativeError && (err.errno === 32 || err.errno === 104)) {
        throw new RpcError("the caller closed the connection before the response");
      }
      throw err;
    }
  }

  close(): void {
    fdops.close(this.fd);
  }
}
