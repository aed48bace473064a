// /proc/PID/status, /proc/PID/stat and /proc/PID/limits
import { readProcText } from "./read.ts";

export type Status = Map<string, string>;

export function readStatus(pid: number | "self", tid?: number): Status {
  const text = readProcText(pid, tid ? `task/${tid}/status` : "status");
  const m = new Map<string, string>();
  for (const line of text.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

export function statusInts(s: Status, key: string): number[] {
  const v = s.get(key);
  return v ? v.split(/\s+/).filter(Boolean).map(Number) : [];
}

export function statusHex(s: Status, key: string): bigint {
  const v = s.get(key);
  return v ? BigInt(`0x${v}`) : 0n;
}

/** Fields of /proc/PID/stat, 1-based as in proc(5); comm is field 2. */
export interface Stat {
  comm: string;
  state: string;
  field(n: number): bigint;
}

export function readStat(pid: number, tid?: number): Stat {
  const text = readProcText(pid, tid ? `task/${tid}/stat` : "stat");
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  const comm = text.slice(open + 1, close);
  const rest = text.slice(close + 2).trim().split(/\s+/);
  // rest[0] is field 3 (state)
  return {
    comm,
    state: rest[0],
    field(n: number): bigint {
      if (n === 1) return BigInt(text.slice(0, open).trim());
      const v = rest[n - 3];
      if (v === undefined) throw new Error(`stat of ${pid} has no field ${n}`);
      return BigInt(v);
    },
  };
}

export const RLIM_INFINITY = 0xffffffffffffffffn;

const LIMIT_NAMES: [string, number][] = [
  ["Max cpu time", 0],
  ["Max file size", 1],
  ["Max data size", 2],
  ["Max stack size", 3],
  ["Max core file size", 4],
  ["Max resident set", 5],
  ["Max processes", 6],
  ["Max open files", 7],
  ["Max locked memory", 8],
  ["Max address space", 9],
  ["Max file locks", 10],
  ["Max pending signals", 11],
  ["Max msgqueue size", 12],
  ["Max nice priority", 13],
  ["Max realtime priority", 14],
  ["Max realtime timeout", 15],
];

/** Reading limits from /proc needs no CAP_SYS_RESOURCE (prlimit on another
 * process would need ptrace rights only, but /proc is simplest). */
export function readLimits(pid: number | "self"): { resource: number; cur: bigint; max: bigint }[] {
  const text = readProcText(pid, "limits");
  const out: { resource: number; cur: bigint; max: bigint }[] = [];
  for (const line of text.split("\n").slice(1)) {
    for (const [name, res] of LIMIT_NAMES) {
      if (!line.startsWith(name)) continue;
      const parts = line.slice(name.length).trim().split(/\s+/);
      const val = (s: string) => (s === "unlimited" ? RLIM_INFINITY : BigInt(s));
      out.push({ resource: res, cur: val(parts[0]), max: val(parts[1]) });
    }
  }
  return out;
}
