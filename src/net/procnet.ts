// /proc/net/{raw,raw6,icmp,icmp6}: where a raw or ping socket is connected
// to. connect() sets only an address there (no port), which getpeername
// does not show, and sock_diag for these sockets is not in every kernel.
import { AF_INET, AF_INET6, sockaddr } from "./addr.ts";

/** An address as /proc/net prints it: 32-bit words in host order, hex. */
function hexAddr(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let w = 0; w < hex.length / 8; w++) {
    const v = parseInt(hex.slice(w * 8, w * 8 + 8), 16);
    out.set([v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24], w * 4);
  }
  return out;
}

/** The connected-to address (port 0) of socket `inode`, if it is connected. */
export function procPeer(family: number, type: number, inode: number): Uint8Array | null {
  const table = (type === 3 ? "raw" : "icmp") + (family === AF_INET6 ? "6" : "");
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/net/${table}`);
  } catch {
    return null;
  }
  for (const line of text.split("\n").slice(1)) {
    const c = line.trim().split(/\s+/);
    if (c.length < 10 || c[9] !== String(inode)) continue;
    const [remHex] = c[2].split(":");
    const addr = hexAddr(remHex);
    if (c[3] !== "01" || addr.every((b) => b === 0)) return null;
    return sockaddr({
      family: family === AF_INET6 ? AF_INET6 : AF_INET,
      addr,
      port: 0,
      flowinfo: 0,
      scopeId: 0,
    });
  }
  return null;
}
