// How sockets are named in messages and listings: "TCP6", "UDP-Lite",
// "raw IPv4 (protocol 47)", "ICMP ping", "netlink route"…
const IP_PROTOCOLS: Record<number, string> = { 6: "TCP", 17: "UDP", 136: "UDP-Lite" };

export const NETLINK_PROTOCOLS: Record<number, string> = {
  0: "route",
  4: "sock_diag",
  6: "xfrm",
  9: "audit",
  10: "fib_lookup",
  11: "connector",
  12: "netfilter",
  15: "kobject_uevent",
  16: "generic",
};

/** An inet socket's protocol as people say it; type 3 is SOCK_RAW. */
export function protoName(family: number, type: number, protocol: number): string {
  const six = family === 10;
  if (type === 3) return `raw IPv${six ? 6 : 4} (protocol ${protocol})`;
  if (protocol === 1 || protocol === 58) return `ICMP${six ? "v6" : ""} ping`;
  return `${IP_PROTOCOLS[protocol] ?? `IP protocol ${protocol}`}${six ? "6" : ""}`;
}

export function netlinkName(protocol: number): string {
  return `netlink ${NETLINK_PROTOCOLS[protocol] ?? `protocol ${protocol}`}`;
}
