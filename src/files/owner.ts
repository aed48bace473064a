// Whether a task could itself have made a file with a given owner and mode
// (create it, chown it, chmod it), as the kernel would judge it: restore
// gives a file deleted while open back its owner and mode only with the
// task's own authority, so what the task could not do is refused at dump,
// where the tree still runs, rather than at restore.
const CAP_CHOWN = 0, CAP_FOWNER = 3, CAP_FSETID = 4;
const S_ISUID = 0o4000, S_ISGID = 0o2000;

export interface Creds {
  fsuid: number;
  fsgid: number;
  groups: number[];
  capEff: bigint;
}

const has = (c: Creds, cap: number) => ((c.capEff >> BigInt(cap)) & 1n) === 1n;

/** Why `c` could not make a file owned uid:gid with `mode` in a directory
 * whose owner group and set-gid bit are `dir` ("is owned by uid 0", to
 * follow the file's name); undefined when it could. */
export function ownerProblem(
  c: Creds,
  uid: number,
  gid: number,
  mode: number,
  dir?: { gid: number; setgid: boolean },
): string | undefined {
  const created = dir?.setgid ? dir.gid : c.fsgid;
  const inGroup = gid === c.fsgid || c.groups.includes(gid);
  if (uid !== c.fsuid && !has(c, CAP_CHOWN)) return `is owned by uid ${uid}`;
  if (gid !== created && !has(c, CAP_CHOWN) && !inGroup) return `belongs to group gid ${gid}`;
  if (uid !== c.fsuid && !has(c, CAP_FOWNER)) return `is another user's, whose mode it may not set`;
  if ((mode & S_ISGID) && !inGroup && !has(c, CAP_FSETID)) {
    return `is set-group-id for gid ${gid}, a group the task is not in`;
  }
  if ((mode & S_ISUID) && uid !== c.fsuid && !has(c, CAP_FSETID) && !has(c, CAP_FOWNER)) {
    return `is set-user-id for uid ${uid}`;
  }
  return undefined;
}

/** A live task's filesystem credentials, from /proc/PID/status. */
export function credsOf(pid: number): Creds {
  const st = Deno.readTextFileSync(`/proc/${pid}/status`);
  const ints = (k: string) =>
    (new RegExp(`^${k}:\\s*(.*)$`, "m").exec(st)?.[1] ?? "").trim().split(/\s+/).filter(Boolean)
      .map(Number);
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(st)?.[1] ?? "0";
  return {
    fsuid: ints("Uid")[3] ?? 0,
    fsgid: ints("Gid")[3] ?? 0,
    groups: ints("Groups"),
    capEff: BigInt(`0x${capEff}`),
  };
}
