// /proc/PID/maps
import { readProcText } from "./read.ts";

export interface MapsEntry {
  start: bigint;
  end: bigint;
  read: boolean;
  write: boolean;
  exec: boolean;
  shared: boolean;
  offset: bigint;
  dev: string;
  inode: number;
  name: string;
}

export function parseMaps(text: string): MapsEntry[] {
  const out: MapsEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const m = /^([0-9a-f]+)-([0-9a-f]+) (....) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$/.exec(line);
    if (!m) throw new Error(`unexpected line in maps: ${line}`);
    const p = m[3];
    out.push({
      start: BigInt(`0x${m[1]}`),
      end: BigInt(`0x${m[2]}`),
      read: p[0] === "r",
      write: p[1] === "w",
      exec: p[2] === "x",
      shared: p[3] === "s",
      offset: BigInt(`0x${m[4]}`),
      dev: m[5],
      inode: Number(m[6]),
      name: m[7],
    });
  }
  return out;
}

export function readMaps(pid: number | "self"): MapsEntry[] {
  return parseMaps(readProcText(pid, "maps"));
}

export function protOf(e: MapsEntry): number {
  return (e.read ? 1 : 0) | (e.write ? 2 : 0) | (e.exec ? 4 : 0);
}
