// Bounds and shape of a network namespace in namespaces.img, checked before
// anything is restored: what the kernel would refuse anyway is refused here
// with the image named, and nothing malformed reaches a netlink request.
import type { NetNamespace } from "../../gen/ckpt/images_pb.ts";
import { KINDS_MADE } from "./links.ts";
import { attrs } from "./netlink.ts";
import { OBJECT_KINDS } from "./objects.ts";

const IFNAME = /^[^\s/:]{1,15}$/;
const MAX_OBJECTS = 1 << 20;

export function validateNet(n: NetNamespace, fail: (why: string) => never): void {
  if (n.empty && (n.links.length || n.addrs.length || n.routes.length)) {
    fail("an empty network namespace with links or addresses");
  }
  const indexes = new Set<number>();
  const names = new Set<string>();
  for (const l of n.links) {
    const what = `network link ${JSON.stringify(l.name)} (index ${l.index})`;
    if (!IFNAME.test(l.name)) fail(`${what}: not an interface name`);
    if (l.index < 1 || l.index > 0x7fffffff) fail(`${what}: index out of range`);
    if (indexes.has(l.index) || names.has(l.name)) fail(`${what}: appears twice`);
    indexes.add(l.index);
    names.add(l.name);
    if (!KINDS_MADE.includes(l.kind)) fail(`${what}: kind ${JSON.stringify(l.kind)} is not made`);
    if (l.kind === "loopback" && l.index !== 1) fail(`${what}: a loopback other than index 1`);
    if (l.peerName && !IFNAME.test(l.peerName)) fail(`${what}: outside end name not valid`);
    if (l.peerBridge && !IFNAME.test(l.peerBridge)) fail(`${what}: bridge name not valid`);
    if (l.address.length > 32 || l.broadcast.length > 32) {
      fail(`${what}: hardware address too long`);
    }
  }
  for (const l of n.links) {
    if (l.kind === "veth" && !l.peerOutside && !indexes.has(l.peerIndex)) {
      fail(`veth ${l.name}: its peer (index ${l.peerIndex}) is not in the image`);
    }
  }
  const lists = [n.addrs, n.routes, n.rules, n.neighbours];
  lists.forEach((list, i) => {
    const kind = OBJECT_KINDS[i];
    if (list.length > MAX_OBJECTS) fail(`too many ${kind.name}s`);
    for (const o of list) {
      if (o.head.length !== kind.head) {
        fail(`a ${kind.name} whose header is ${o.head.length} bytes`);
      }
      try {
        attrs(o.attrs);
      } catch (err) {
        fail(`${kind.name} ${o.text}: ${(err as Error).message}`);
      }
    }
  });
  for (const s of n.sysctls) {
    const parts = s.path.split("/");
    if (parts.some((p) => p === "" || p === "." || p === ".." || p.includes("\0"))) {
      fail(`sysctl path ${JSON.stringify(s.path)} is not a plain path under /proc/sys/net`);
    }
  }
}
