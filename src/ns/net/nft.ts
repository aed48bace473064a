// Firewall rules of the namespace. nftables (which Debian's iptables drives
// too, as iptables-nft) is saved as `nft list ruleset` and loaded again with
// `nft -f`, both run inside the namespace; whether there is anything to save
// is asked over netlink first, so a namespace without rules needs no nft.
// Legacy x_tables (iptables-legacy) are refused: their tables are listed in
// /proc/PID/net/*_tables_names.
import { DumpError, RestoreError } from "../../errors.ts";
import { NETLINK_NETFILTER } from "../../native/rtnl.ts";
import { NlSocket } from "./netlink.ts";

const NFNL_SUBSYS_NFTABLES = 10, NFT_MSG_GETTABLE = 1;

/** Whether the namespace (of a netfilter socket opened in it) has any
 * nftables table. */
export function hasNftTables(sock: NlSocket): boolean {
  const head = new Uint8Array(4); // struct nfgenmsg: AF_UNSPEC, version 0
  const msgs = sock.dump(
    (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
    head,
    "listing nftables tables",
  );
  return msgs.length > 0;
}

export function openNetfilter(): NlSocket {
  return NlSocket.open(NETLINK_NETFILTER);
}

/** Legacy iptables tables in pid's network namespace. */
export function legacyTables(pid: number): string[] {
  const out: string[] = [];
  for (
    const [f, what] of [["ip_tables_names", "iptables"], ["ip6_tables_names", "ip6tables"], [
      "arp_tables_names",
      "arptables",
    ]]
  ) {
    try {
      const names = Deno.readTextFileSync(`/proc/${pid}/net/${f}`).split("\n").filter(Boolean);
      for (const n of names) out.push(`${what} ${n}`);
    } catch { /* x_tables not loaded */ }
  }
  return out;
}

const PLACES = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

function nft(): string | undefined {
  for (const p of PLACES) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch { /* not there */ }
  }
  return undefined;
}

function nsenter(pid: number, args: string[], what: string, Err: typeof DumpError): string {
  const out = new Deno.Command("nsenter", {
    args: [`--net=/proc/${pid}/ns/net`, "--", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  if (!out.success) {
    const e = new TextDecoder().decode(out.stderr).trim().split("\n")[0];
    throw new Err(`${what} failed: ${e || `exit status ${out.code}`}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** The ruleset of pid's network namespace. */
export function dumpRuleset(pid: number): string {
  const bin = nft();
  if (!bin) {
    throw new DumpError(
      `pid ${pid}: its network namespace has nftables rules, and saving them needs nft ` +
        `(apt-get install nftables)`,
    );
  }
  return nsenter(pid, [bin, "list", "ruleset"], `pid ${pid}: nft list ruleset`, DumpError);
}

/** Loads a saved ruleset into pid's network namespace. */
export function loadRuleset(pid: number, ruleset: string): void {
  const bin = nft();
  if (!bin) {
    throw new RestoreError(
      `the network namespace had nftables rules, and loading them needs nft (apt-get install nftables)`,
    );
  }
  const dir = Deno.makeTempDirSync({ prefix: "ckpt-nft-" });
  try {
    const file = `${dir}/ruleset.nft`;
    Deno.writeTextFileSync(file, ruleset, { mode: 0o600 });
    nsenter(pid, [bin, "-f", file], "nft -f (the dumped ruleset)", RestoreError);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}
