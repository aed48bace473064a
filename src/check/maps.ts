// Just enough of /proc/PID/maps for the probes: ranges, permissions, offset, name.
export interface MapLine {
  start: bigint;
  end: bigint;
  perms: string;
  offset: bigint;
  name: string;
}

export function readMaps(pid: number | "self"): MapLine[] {
  const out: MapLine[] = [];
  for (const line of Deno.readTextFileSync(`/proc/${pid}/maps`).split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) \S+ \d+\s*(.*)$/.exec(line);
    if (!m) continue;
    out.push({
      start: BigInt(`0x${m[1]}`),
      end: BigInt(`0x${m[2]}`),
      perms: m[3],
      offset: BigInt(`0x${m[4]}`),
      name: m[5],
    });
  }
  return out;
}
