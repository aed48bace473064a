// What dumping network sockets relies on: sock_diag for inet and netlink
// sockets, TCP repair mode (CAP_NET_ADMIN) for live connections, and
// nftables' nft to lock them while they move (--tcp-established).
import { fd as fdops } from "../native/mod.ts";
import { sock, SOL } from "../native/inetsk.ts";
import { errnoText } from "../native/errno.ts";
import { InetTable, netlinkDiag } from "../net/diag.ts";
import { nftPath } from "../net/lock.ts";
import { AF_INET, parseIp, sockaddr } from "../net/addr.ts";
import { no, probe, type ProbeResult, yes } from "./types.ts";

const TCP_REPAIR = 19, TCP_REPAIR_WINDOW = 29;

function tcpRepair() {
  // A loopback connection of our own, put in repair mode and back.
  const lst = sock.socket(AF_INET, 1, 6);
  const cli = sock.socket(AF_INET, 1, 6);
  try {
    const lo = sockaddr({
      family: AF_INET,
      addr: parseIp("127.0.0.1")!,
      port: 0,
      flowinfo: 0,
      scopeId: 0,
    });
    let err = sock.bind(lst, lo) || sock.listen(lst, 1);
    if (err) return no(`a loopback listener: ${errnoText(err)}`);
    err = sock.connect(cli, sock.name(lst)!);
    if (err) return no(`a loopback connection: ${errnoText(err)}`);
    err = sock.setInt(cli, SOL.TCP, TCP_REPAIR, 1);
    if (err) return no(`TCP_REPAIR: ${errnoText(err)} (it needs CAP_NET_ADMIN)`);
    const w = sock.get(cli, SOL.TCP, TCP_REPAIR_WINDOW, 20);
    sock.setInt(cli, SOL.TCP, TCP_REPAIR, -1);
    if (typeof w === "number") return no(`TCP_REPAIR_WINDOW: ${errnoText(w)}`);
    return yes("TCP_REPAIR and TCP_REPAIR_WINDOW work on a loopback connection");
  } finally {
    fdops.close(cli);
    fdops.close(lst);
  }
}

async function nft() {
  const path = nftPath();
  if (!path) return no("nft is not installed (apt-get install nftables)");
  const out = await new Deno.Command(path, {
    args: ["list", "tables"],
    stdout: "null",
    stderr: "piped",
  })
    .output();
  if (!out.success) {
    return no(`${path} list tables failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return yes(`${path} works`);
}

export function netProbes(): Promise<ProbeResult[]> {
  return Promise.all([
    probe({
      name: "sock_diag inet/netlink",
      required: false,
      why: "to read TCP/UDP sockets' states and queues and netlink sockets' groups",
    }, () => {
      const n = new InetTable().all.length, m = netlinkDiag().size;
      return yes(`${n} TCP/UDP and ${m} netlink sockets listed`);
    }),
    probe({
      name: "TCP repair",
      required: false,
      why: "to save and rebuild live TCP connections (--tcp-established)",
    }, tcpRepair),
    probe({
      name: "nftables",
      required: false,
      why: "to lock live TCP connections while they are dumped and restored (--tcp-established)",
    }, nft),
  ]);
}
