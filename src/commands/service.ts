// `ckpt service --address PATH`: CRIU's RPC service. Each connection is
// served by a ckpt of its own (`ckpt swrk --from-pid`), as CRIU forks a
// worker per connection: requests of different clients run side by side,
// and a restored tree is that worker's child (WAIT_PID on a kept-open
// connection waits for it).
import type { CommandSpec } from "../cli/spec.ts";
import { CkptError, UsageError } from "../errors.ts";
import { fd as fdops } from "../native/mod.ts";
import { rawName, SOCK, unixsk } from "../native/unixsk.ts";
import { log } from "../util/log.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

export const serviceCommand: CommandSpec = {
  name: "service",
  summary: "serve CRIU's RPC on a UNIX socket (what 'criu service' does)",
  usage: "ckpt service --address PATH [OPTIONS]",
  description: `
Listens on the SOCK_SEQPACKET socket PATH (an abstract name with a leading @)
and serves each connection as 'ckpt swrk' would, in a ckpt process of its
own. rst_sibling and inherit_fd are for swrk only, as in CRIU. A stale socket
file at PATH is replaced; a live one is refused. Stops on SIGINT/SIGTERM and
removes the socket file.`,
  options: [
    {
      name: "address",
      kind: "string",
      arg: "PATH",
      help: "the socket to listen on",
    },
    { name: "pidfile", kind: "string", arg: "FILE", help: "write ckpt's pid to FILE" },
  ],
  async run(opts, positionals) {
    if (positionals.length) {
      throw new UsageError(`service: unexpected argument '${positionals[0]}'`);
    }
    const address = opts.string("address");
    if (!address) throw new UsageError("service: --address PATH is required");
    const sk = listen(address);
    const pidfile = opts.string("pidfile");
    if (pidfile) Deno.writeTextFileSync(pidfile, `${Deno.pid}\n`);
    const stop = () => {
      if (!address.startsWith("@")) Deno.removeSync(address);
      Deno.exit(0);
    };
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
    log.info(`serving CRIU's RPC on ${address}`);
    const passOn = [
      ...(opts.count("verbose") ? [`-v${opts.count("verbose")}`] : []),
      ...(opts.string("log-file") ? ["--log-file", opts.string("log-file")!] : []),
    ];
    for (;;) {
      const conn = await unixsk.accept(sk);
      try {
        const worker = new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--quiet",
            "--no-prompt",
            "--allow-all",
            MAIN,
            "swrk",
            "--from-pid",
            String(Deno.pid),
            ...passOn,
            String(conn),
          ],
          stdin: "null",
        }).spawn();
        // The worker takes its own copy of the connection first thing.
        worker.status.finally(() => fdops.close(conn));
      } catch (err) {
        log.error(`cannot start a worker for a connection: ${(err as Error).message}`);
        fdops.close(conn);
      }
    }
  },
};

function listen(address: string): number {
  const name = rawName(address);
  if (!address.startsWith("@")) {
    let st: Deno.FileInfo | undefined;
    try {
      st = Deno.lstatSync(address);
    } catch { /* free */ }
    if (st && !st.isSocket) throw new CkptError(`${address} exists and is not a socket`);
    if (st) {
      const probe = unixsk.socket(SOCK.SEQPACKET);
      const busy = unixsk.tryConnect(probe, name) === 0;
      fdops.close(probe);
      if (busy) throw new CkptError(`${address}: another service is listening there`);
      Deno.removeSync(address);
    }
  }
  const sk = unixsk.socket(SOCK.SEQPACKET);
  unixsk.bind(sk, name);
  unixsk.listen(sk, 64);
  return sk;
}
