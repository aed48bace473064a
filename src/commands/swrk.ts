// `ckpt swrk FD`: CRIU's RPC on an inherited SOCK_SEQPACKET socket, one
// message per packet, as runc, crun (libcriu) and go-criu start `criu swrk`.
import type { CommandSpec } from "../cli/spec.ts";
import { UsageError } from "../errors.ts";
import { fd as fdops } from "../native/mod.ts";
import { Channel } from "../rpc/channel.ts";
import { serve } from "../rpc/serve.ts";

export const swrkCommand: CommandSpec = {
  name: "swrk",
  summary: "serve CRIU's RPC on an inherited socket (what runc's 'criu swrk 3' runs)",
  usage: "ckpt swrk FD",
  description: `
Reads criu_req messages (CRIU's rpc.proto) from the SOCK_SEQPACKET socket FD
and answers each with a criu_resp: VERSION, CHECK, FEATURE_CHECK, DUMP,
PRE_DUMP (then further PRE_DUMPs or the final DUMP), RESTORE and WAIT_PID.
Options ckpt cannot honour yet are refused in the response, naming each one;
nothing is then done. images_dir_fd and work_dir_fd are the caller's
descriptors (the socket's peer), as in CRIU; the log goes to log_file in the
work directory (criu.log by default). With notify_scripts, each action
script moment is a NOTIFY the operation waits on. ckpt exits once the last
request is answered (0 when it succeeded), or when the caller closes.`,
  options: [
    {
      name: "from-pid",
      kind: "string",
      arg: "PID",
      help: "take FD from process PID (pidfd_getfd) instead of inheriting it " +
        "('ckpt service' starts one such ckpt per connection)",
    },
  ],
  async run(opts, positionals) {
    if (positionals.length !== 1 || !/^\d+$/.test(positionals[0])) {
      throw new UsageError("swrk: give the socket's fd number: ckpt swrk FD");
    }
    let fd = Number(positionals[0]);
    const from = opts.int("from-pid", { min: 1 });
    if (from !== undefined) {
      const pidfd = fdops.pidfdOpen(from);
      try {
        fd = fdops.pidfdGetfd(pidfd, fd, `connection fd ${fd} of the service (pid ${from})`);
      } finally {
        fdops.close(pidfd);
      }
    }
    return await serve(new Channel(fd), from === undefined ? "swrk" : "service");
  },
};
