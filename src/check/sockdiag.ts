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

/** The inode of the UNIX socket bound to `path`, from /proc/net/unix. */
function inodeOf(path: string): number {
  for (const line of Deno.readTextFileSync("/proc/net/unix").split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f[7] === path) return Number(f[6]);
  }
  throw new Error(`${path} is not in /proc/net/unix`);
}

export function sockdiagProbes(): Promise<ProbeResult[]> {
  return Promise.all([probe(SPEC, () => {
    // A named socket of our own: the dump must describe it, so an empty
    // namespace or a reply about something else cannot pass.
    const dir = Deno.makeTempDirSync({ prefix: "ckpt-check-" });
    const path = `${dir}/probe.sock`;
    const listener = Deno.listen({ transport: "unix", path });
    try {
      const ino = inodeOf(path);
      const { sockets, named, seen } = probeUnixDiag(ino);
      if (!seen) throw new Error(`the dump of ${sockets} sockets missed ours (inode ${ino})`);
      return yes(
        `one dump request listed ${sockets} UNIX sockets, ${named} with names, ours included`,
      );
    } finally {
      listener.close();
      Deno.removeSync(dir, { recursive: true });
    }
  }, hint)]);
}
