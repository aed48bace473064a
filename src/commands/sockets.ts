// ckpt sockets -t PID: a tree's UNIX sockets, which peers are outside the
// tree, and the option dump and restore need for each (rule 4 of the brief).
import { listSockets, type SocketEntry, type SocketReport } from "../api/sockets.ts";
import { UsageError } from "../errors.ts";
import { PID_MAX } from "../proc/read.ts";
import type { CommandSpec } from "../cli/spec.ts";
import type { Holder } from "../unix/inventory.ts";

function who(h: Holder[]): string {
  if (h.length === 0) return "";
  const first = `pid ${h[0].pid} (${h[0].comm}) fd ${h[0].fd}`;
  return h.length > 1 ? `${first} +${h.length - 1}` : first;
}

function peerText(s: SocketEntry): string {
  const p = s.peerInfo;
  switch (p.place) {
    case "none":
      return "-";
    case "gone":
      return "gone (peer closed)";
    case "inside":
      if (p.pendingOn) return `inside: not accepted yet by ${who(p.pendingOn.holders)}`;
      return `inside: ${who(p.holders) || "no descriptor"}`;
    case "outside": {
      const parts = ["outside:"];
      if (p.name) parts.push(p.name);
      if (p.pendingOn) {
        parts.push(`(not accepted yet by ${who(p.pendingOn.holders) || "listener"})`);
      } else parts.push(who(p.holders) || "holder not visible");
      return parts.join(" ");
    }
  }
}

// Brackets are glob characters: quote the value so the line can be pasted.
function shellWord(opt: string): string {
  const sp = opt.indexOf(" ");
  return sp < 0 || !/[[\]]/.test(opt) ? opt : `${opt.slice(0, sp)} '${opt.slice(sp + 1)}'`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c])).join("  ").trimEnd())
    .join("\n");
}

export function formatReport(rep: SocketReport): string {
  const out: string[] = [];
  const s = rep.summary;
  out.push(
    `Process tree ${rep.root}: ${rep.tasks.length} task(s), ${s.total} UNIX socket descriptor(s): ` +
      `${s.inside} peer inside, ${s.outside} outside, ${s.gone} gone, ${s.unconnected} unconnected`,
  );
  if (s.total > 0) {
    out.push("");
    out.push(table([
      ["PID", "FD", "INODE", "TYPE", "STATE", "NAME", "PEER", "PEER IS", "RQ", "WQ", "DUMP NEEDS"],
      ...rep.sockets.map((e) => [
        String(e.pid),
        String(e.fd),
        String(e.inode),
        e.type,
        e.state,
        e.name ?? "-",
        e.peer === null ? "-" : String(e.peer),
        peerText(e),
        e.rqueue === null ? "-" : String(e.rqueue),
        e.wqueue === null ? "-" : String(e.wqueue),
        e.need?.dump ?? "-",
      ]),
    ]));
  }
  const ext = [...new Map(rep.sockets.filter((e) => e.need).map((e) => [e.inode, e])).values()];
  if (ext.length) {
    out.push("", `External sockets (${ext.length}):`);
    for (const e of ext) {
      out.push(`  ${e.inode} (pid ${e.pid} fd ${e.fd}, ${e.type} ${e.state}): ${e.need!.why}`);
      out.push(`    dump: ${e.need!.dump}    restore: ${e.need!.restore}`);
    }
    if (ext.some((e) => e.need!.kind === "unnamed-peer")) {
      out.push("  (fd[N]: a descriptor you pass to ckpt restore that replaces that socket)");
    }
  } else {
    out.push(
      "",
      s.dumpOptions.length
        ? "No external UNIX sockets."
        : "No external UNIX sockets: dump needs no socket options.",
    );
  }
  for (const e of rep.sockets.filter((x) => x.outsideClients.length)) {
    out.push(
      "",
      `Listener ${e.inode} (pid ${e.pid} fd ${e.fd}) has ${e.outsideClients.length} connection(s) ` +
        `from outside the tree waiting in accept(): ${e.outsideClients.join(", ")}`,
    );
  }
  if (rep.net.length) {
    out.push("", `Network sockets (${rep.net.length}):`, "");
    out.push(table([
      [
        "PID",
        "FD",
        "INODE",
        "PROTO",
        "STATE",
        "LOCAL",
        "PEER",
        "PEER IS",
        "RQ",
        "WQ",
        "DUMP NEEDS",
      ],
      ...rep.net.map((n) => [
        String(n.pid),
        String(n.fd),
        String(n.inode),
        n.protocol,
        n.state,
        n.local ?? "-",
        n.peer ?? "-",
        n.peerIs ?? "-",
        n.rqueue === null ? "-" : String(n.rqueue),
        n.wqueue === null ? "-" : String(n.wqueue),
        n.refused ? `refused: ${n.refused}` : n.need ?? "-",
      ]),
    ]));
    for (const n of rep.net.filter((x) => x.pending.length)) {
      out.push(
        "",
        `TCP listener ${n.local} (pid ${n.pid} fd ${n.fd}) has ${n.pending.length} connection(s) ` +
          `not accepted yet, from ${n.pending.join(", ")}: dump refuses them (--skip-in-flight ` +
          `leaves them behind)`,
      );
    }
    if (rep.net.some((n) => n.need === "--tcp-established")) {
      out.push(
        "",
        "Live TCP connections: dump with --tcp-established to keep them " +
          "(nftables locks them meanwhile), or dump with --tcp-close to restore them reset.",
      );
    }
  }
  if (rep.others.length) {
    out.push(
      "",
      `Other sockets (not listed): ` +
        rep.others.map((o) => `pid ${o.pid} fd ${o.fd} socket:[${o.inode}]`).join(", "),
    );
  }
  if (s.dumpOptions.length) {
    out.push("", `ckpt dump -t ${rep.root} -D DIR ${s.dumpOptions.map(shellWord).join(" ")}`);
    out.push(`ckpt restore -D DIR ${s.restoreOptions.map(shellWord).join(" ")}`.trimEnd());
  }
  return out.join("\n");
}

export const socketsCommand: CommandSpec = {
  name: "sockets",
  summary: "list a process tree's sockets (UNIX, TCP, UDP, netlink…) and the options dump needs",
  usage: "ckpt sockets -t PID [--json]",
  description: `
Lists every UNIX socket descriptor of the tree rooted at PID: type, state,
bound name, peer, queued bytes, and whether the peer is inside the tree,
outside it (with its name and owner when visible) or gone. For each external
socket it prints the option 'ckpt dump' and 'ckpt restore' need:
--ext-unix-sk (datagram client of a named server), --ext-unix-sk=INODE
(stream/seqpacket connection to a named server), or --external unix[INODE]
with --inherit-fd fd[N]:socket:[INODE] (socketpairs and nameless peers).
Then every TCP, UDP, raw, ping and netlink socket: protocol, state, both
addresses, queued bytes, whether a TCP connection's peer is in the tree,
connections a listener has not accepted yet, and what dump needs for each
(--tcp-established, --skip-in-flight) or why it would refuse it.`,
  options: [
    { name: "tree", short: "t", kind: "string", arg: "PID", help: "root of the process tree" },
    { name: "json", kind: "boolean", help: "print the report as JSON" },
  ],
  async run(opts, positionals) {
    if (positionals.length) {
      throw new UsageError(`sockets: unexpected argument '${positionals[0]}'`);
    }
    const pid = opts.int("tree", { min: 1, max: PID_MAX });
    if (pid === undefined) throw new UsageError("sockets: -t PID is required");
    const rep = await listSockets(pid);
    console.log(opts.bool("json") ? JSON.stringify(rep, null, 2) : formatReport(rep));
    return 0;
  },
};
