// /proc/PID/fd and /proc/PID/fdinfo
import { readProcText } from "./read.ts";

export interface FdInfo {
  fd: number;
  link: string;
  pos: bigint;
  flags: number;
  ino: number;
  extra: Map<string, string>;
}

export function listFds(pid: number): number[] {
  const fds: number[] = [];
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) fds.push(Number(e.name));
  return fds.sort((a, b) => a - b);
}

export function readFdInfo(pid: number, fd: number): FdInfo {
  const link = Deno.readLinkSync(`/proc/${pid}/fd/${fd}`);
  const extra = new Map<string, string>();
  for (const line of readProcText(pid, `fdinfo/${fd}`).split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) extra.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return {
    fd,
    link,
    pos: BigInt(extra.get("pos") ?? "0"),
    flags: parseInt(extra.get("flags") ?? "0", 8),
    ino: Number(extra.get("ino") ?? "0"),
    extra,
  };
}
