// netlink sock_diag for UNIX sockets: how dump learns peers, names and queues
// of every UNIX socket in one request instead of guessing from /proc.
import { NativeError } from "../native/mod.ts";
import { EBADMSG, probeUnixDiag } from "../native/probe.ts";
import { probe, type ProbeResult, type ProbeSpec, yes } from "./types.ts";

const SPEC: ProbeSpec = {
  name: "sock_diag UNIX",
  required: true,
  why: "to find each UNIX socket's peer, name and queues, and tell internal from external",
};

const EPROTONOSUPPORT = 93;

function hint(err: unknown): string | undefined {
  if (!(err instanceof NativeError)) return undefined;
  if (err.errno === EBADMSG) return "the reply was not well formed";
  if (err.errno === EPROTONOSUPPORT || err.errno === 2) {
    return "the kernel has no UNIX sock_diag (CONFIG_UNIX_DIAG, module unix_diag)";
  }
  return undefined;
}

export function sockdiagProbes(): Promise<ProbeResult[]> {
  return Promise.all([probe(SPEC, () => {
    // A socket of our own with a name, so an empty namespace cannot pass.
    const dir = Deno.makeTempDirSync({ prefix: "ckpt-check-" });
    const listener = Deno.listen({ transport: "unix", path: `${dir}/probe.sock` });
    try {
      const { sockets, named } = probeUnixDiag();
      if (named === 0) throw new Error(`dumped ${sockets} UNIX sockets but none had its name`);
      return yes(
        `one dump request listed ${sockets} UNIX sockets, ${named} of them bound to a name`,
      );
    } finally {
      listener.close();
      Deno.removeSync(dir, { recursive: true });
    }
  }, hint)]);
}
