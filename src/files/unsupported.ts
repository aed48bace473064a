// What an fd no module claims is, said as precisely as /proc allows, so the
// refusal names the thing (a TCP socket, an io_uring…) and not just "a file".
import type { DumpedFd } from "./kind.ts";

const NET_TABLES: [string, string][] = [
  ["tcp", "TCP"],
  ["tcp6", "TCP6"],
  ["udp", "UDP"],
  ["udp6", "UDP6"],
  ["udplite", "UDP-Lite"],
  ["udplite6", "UDP-Lite6"],
  ["raw", "raw IPv4"],
  ["raw6", "raw IPv6"],
  ["icmp", "ICMP"],
  ["icmp6", "ICMPv6"],
  ["netlink", "netlink"],
  ["packet", "packet"],
];

/** "a TCP socket (127.0.0.1:8080, listening)", "an io_uring instance"… */
export function whatIs(fd: DumpedFd): string {
  const sock = /^socket:\[(\d+)\]$/.exec(fd.link);
  if (sock) return `a ${socketFamily(fd.pid, sock[1]) ?? "non-UNIX"} socket`;
  const anon = /^anon_inode:\[?([^\]]+)\]?$/.exec(fd.link);
  if (anon) return ANON[anon[1]] ?? `an anonymous-inode file (${anon[1]})`;
  if (fd.link.startsWith("/memfd:")) return "a memfd";
  return "this kind of file";
}

const ANON: Record<string, string> = {
  eventpoll: "an epoll instance",
  timerfd: "a timerfd",
  signalfd: "a signalfd",
  inotify: "an inotify instance",
  fanotify: "a fanotify group",
  userfaultfd: "the program's own userfaultfd",
  io_uring: "an io_uring instance",
  pidfd: "a pidfd",
  perf_event: "a perf event",
};

function socketFamily(pid: number, ino: string): string | undefined {
  for (const [table, name] of NET_TABLES) {
    let text: string;
    try {
      text = Deno.readTextFileSync(`/proc/${pid}/net/${table}`);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      // The inode column: 8 in packet, 9 in every other table.
      if (cols[table === "packet" ? 8 : 9] === ino) return name;
    }
  }
  return undefined;
}
