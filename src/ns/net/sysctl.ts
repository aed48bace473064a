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
import { fd as fdops, O } from "../../native/mod.ts";

// One buffer for every read: hundreds of small files are read per namespace.
const buf = new Uint8Array(1 << 16);
const dec = new TextDecoder();

/** A /proc/sys file read on this very thread (its namespace's value). */
function readHere(path: string, mode: number = O.RDONLY): string {
  const n = fdops.open(path, mode | O.CLOEXEC);
  try {
    let used = 0;
    for (;;) {
      const got = fdops.read(n, buf.subarray(used));
      if (got === 0) break;
      used += got;
      if (used === buf.length) throw new Error(`${path} holds more than ${buf.length} bytes`);
    }
    return dec.decode(buf.subarray(0, used));
  } finally {
    fdops.close(n);
  }
}

const ROOT = "/proc/sys/net";

/** Files whose value is not a setting: which logger each protocol uses is
 * the host's module list. */
const SKIP = [/^netfilter\/nf_log\//];

export function readSysctls(): NetSysctl[] {
  const out: NetSysctl[] = [];
  const walk = (rel: string) => {
    for (const e of Deno.readDirSync(`${ROOT}/${rel}`)) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) {
        walk(p);
        continue;
      }
      if (SKIP.some((r) => r.test(p))) continue;
      let value: string;
      try {
        // Opened for reading and writing: the kernel lets only settings
        // that can be written (by root here) open so.
        value = readHere(`${ROOT}/${p}`, O.RDWR);
      } catch {
        continue; // read-only, or an unset secret (stable_secret reads EIO)
      }
      out.push(create(NetSysctlSchema, { path: p, value }));
    }
  };
  walk("");
  return out;
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
  const failed: string[] = [];
  const todo = list.filter((s) => !only || only(s.path)).sort((a, b) =>
    rank(a.path) - rank(b.path)
  );
  // In rank order a setting that spreads (conf/all) is written before the
  // ones it would overwrite; what still differs shows in sysctlDiff after.
  for (const s of todo) {
    const file = `${ROOT}/${s.path}`;
    let now: string;
    try {
      now = readHere(file);
    } catch {
      now = "";
    }
    if (norm(now) === norm(s.value)) continue;
    try {
      writeHere(file, s.value.endsWith("\n") ? s.value : `${s.value}\n`);
    } catch (err) {
      failed.push(`net.${s.path.replaceAll("/", ".")}: ${(err as Error).message}`);
    }
  }
  return failed;
}

/** Saved values the namespace does not have now. */
export function sysctlDiff(list: NetSysctl[]): string[] {
  const out: string[] = [];
  for (const s of list) {
    let now: string;
    try {
      now = readHere(`${ROOT}/${s.path}`);
    } catch (err) {
      out.push(`net.${s.path.replaceAll("/", ".")} cannot be read (${(err as Error).message})`);
      continue;
    }
    if (norm(now) !== norm(s.value)) {
      out.push(`net.${s.path.replaceAll("/", ".")} is ${norm(now)} (dumped ${norm(s.value)})`);
    }
  }
  return out;
}
