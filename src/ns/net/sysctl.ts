// The namespace's sysctls: every file under /proc/sys/net that can be read
// and written from inside it. In a namespace other than the first, the
// kernel shows there only its per-namespace tables (global ones such as
// net.core.rmem_max are registered for the initial namespace alone), so
// writing one back never touches the host. Read and written on ckpt's
// thread while it is inside the namespace (what /proc/sys/net shows is the
// opener's namespace).
import { create } from "@bufbuild/protobuf";
import { type NetSysctl, NetSysctlSchema } from "../../gen/ckpt/images_pb.ts";
import { writeHere } from "../enter.ts";
import { readSysctlTree } from "../../native/rtnl.ts";

const ROOT = "/proc/sys/net";

/** Files whose value is not a setting: which logger each protocol uses is
 * the host's module list. */
const SKIP = [/^netfilter\/nf_log\//];

export function readSysctls(): NetSysctl[] {
  return readSysctlTree(ROOT).filter(([p]) => !SKIP.some((r) => r.test(p))).map(([path, value]) =>
    create(NetSysctlSchema, { path, value })
  );
}

/** What the namespace has now, by path. */
function snapshot(): Map<string, string> {
  return new Map(readSysctlTree(ROOT));
}

/** Writing order: settings for all devices first (they overwrite each
 * device's), then the defaults, then each device, then the rest. */
function rank(path: string): number {
  if (path === "ipv4/ip_forward" || /^ipv[46]\/conf\/all\//.test(path)) return 0;
  if (/^ipv[46]\/conf\/default\//.test(path)) return 1;
  if (/^ipv[46]\/(conf|neigh)\//.test(path)) return 2;
  return 3;
}

const norm = (v: string) => v.trim().split(/\s+/).join(" ");

/** Writes every saved value that differs from what the new namespace has;
 * returns what could not be set (path: reason). */
export function writeSysctls(list: NetSysctl[], only?: (path: string) => boolean): string[] {
  const failed = new Map<string, string>();
  const todo = list.filter((s) => !only || only(s.path)).sort((a, b) =>
    rank(a.path) - rank(b.path)
  );
  // In rank order a setting that spreads (conf/all) is written before the
  // ones it would overwrite; a second pass sets what a write changed.
  for (let pass = 0; pass < 2; pass++) {
    const now = snapshot();
    let wrote = false;
    for (const s of todo) {
      const v = now.get(s.path);
      if (v !== undefined && norm(v) === norm(s.value)) continue;
      wrote = true;
      try {
        writeHere(`${ROOT}/${s.path}`, s.value.endsWith("\n") ? s.value : `${s.value}\n`);
        failed.delete(s.path);
      } catch (err) {
        failed.set(s.path, `net.${s.path.replaceAll("/", ".")}: ${(err as Error).message}`);
      }
    }
    if (!wrote) break;
  }
  return [...failed.values()];
}

/** Saved values the namespace does not have now. */
export function sysctlDiff(list: NetSysctl[]): string[] {
  const now = snapshot();
  const out: string[] = [];
  for (const s of list) {
    const v = now.get(s.path);
    const name = `net.${s.path.replaceAll("/", ".")}`;
    if (v === undefined) out.push(`${name} is not there (or not writable)`);
    else if (norm(v) !== norm(s.value)) out.push(`${name} is ${norm(v)} (dumped ${norm(s.value)})`);
  }
  return out;
}
