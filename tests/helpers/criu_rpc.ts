// A CRIU RPC client for tests, written from the schema (src/gen/criu): what
// runc and go-criu do, over a SOCK_SEQPACKET socket — a socketpair end given
// to `ckpt swrk N` (through fdexec, since Deno cannot pass a child extra
// fds), or a connection to `ckpt service --address PATH`.
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  type criu_notify,
  type criu_req_type,
  criu_req_type as T,
  criu_reqSchema,
  type criu_resp,
  criu_respSchema,
} from "../../src/gen/criu/rpc_pb.ts";
import { fd as fdops, O } from "../../src/native/mod.ts";
import { MSG, rawName, SOCK, unixsk } from "../../src/native/unixsk.ts";
import { ROOT, WORKLOADS } from "./ckpt.ts";

export { T };
export type Req = MessageInitShape<typeof criu_reqSchema>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What the client answers to a NOTIFY (default: success). */
export type OnNotify = (n: criu_notify) => boolean | Promise<boolean>;

export class RpcClient {
  private readonly buf = new Uint8Array(1 << 20);
  /** Scripts notified during the last call, in order. */
  notified: { script: string; pid?: number }[] = [];

  private constructor(readonly fd: number, readonly child?: Deno.ChildProcess) {}

  /** Starts `ckpt swrk N` (or `bin/criu swrk N`) with a socketpair end on fd
   * N and `extra` of this process's fds at the numbers given. */
  static async swrk(
    opts: { n?: number; extra?: [number, number][]; launcher?: string } = {},
  ): Promise<RpcClient> {
    const n = opts.n ?? 3;
    const [mine, theirs] = unixsk.pair(SOCK.SEQPACKET);
    const pairs = [[theirs, n], ...(opts.extra ?? [])].map(([s, d]) => `${s}:${d}`).join(",");
    const launcher = opts.launcher ?? `${ROOT}/ckpt`;
    const child = new Deno.Command(`${WORKLOADS}/fdexec`, {
      args: [String(Deno.pid), pairs, launcher, "swrk", String(n)],
      env: { DENO_BIN: Deno.execPath(), NO_COLOR: "1" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // Our copy of its end goes once it holds its own, so its exit is our EOF.
    const ino = Deno.readLinkSync(`/proc/self/fd/${theirs}`);
    for (let i = 0; i < 500; i++) {
      try {
        if (Deno.readLinkSync(`/proc/${child.pid}/fd/${n}`) === ino) break;
      } catch { /* not yet */ }
      await sleep(2);
    }
    fdops.close(theirs);
    return new RpcClient(mine, child);
  }

  static connect(path: string): RpcClient {
    const fd = unixsk.socket(SOCK.SEQPACKET);
    unixsk.connect(fd, rawName(path));
    return new RpcClient(fd);
  }

  send(req: Req): void {
    unixsk.send(this.fd, toBinary(criu_reqSchema, create(criu_reqSchema, req)), null, []);
  }

  /** The next response, or null at EOF; polls so the event loop runs. */
  async recv(timeoutMs = 60_000): Promise<criu_resp | null> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const r = unixsk.recv(this.fd, this.buf, MSG.DONTWAIT | MSG.CMSG_CLOEXEC);
      if (r) {
        for (const f of r.fds) fdops.close(f);
        return r.len === 0 ? null : fromBinary(criu_respSchema, this.buf.subarray(0, r.len));
      }
      if (Date.now() > end) throw new Error("no response from ckpt in time");
      await sleep(1);
    }
  }

  /** Sends req and answers NOTIFYs until the final response. */
  async call(req: Req, onNotify: OnNotify = () => true): Promise<criu_resp> {
    this.notified = [];
    this.send(req);
    for (;;) {
      const resp = await this.recv();
      if (!resp) throw new Error("ckpt closed the connection without a final response");
      if (resp.type !== T.NOTIFY) return resp;
      const n = resp.notify!;
      this.notified.push({ script: n.script, ...(n.pid ? { pid: n.pid } : {}) });
      const ok = await onNotify(n);
      this.send({ type: T.NOTIFY, notifySuccess: ok });
    }
  }

  /** Closes our end; for a swrk, waits for it and returns its exit status
   * and what it wrote to stderr. */
  async close(): Promise<{ code: number; stderr: string } | undefined> {
    fdops.close(this.fd);
    if (!this.child) return undefined;
    const out = await this.child.output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  }
}

/** An fd of this process for a directory (what runc passes as images_dir_fd). */
export function openDir(path: string): number {
  return fdops.open(path, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
}

export function typeName(t: criu_req_type): string {
  return T[t];
}
