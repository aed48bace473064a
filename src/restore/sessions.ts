// Sessions and process groups as the kernel lets them be made. A task gets
// its session from whoever forks it (or makes its own with setsid), and can
// join a group only of its own session. So each task is forked by its parent
// — after the parent made its own session, or before (a parent that called
// setsid after forking it) — or, when neither gives it its session (its
// leader is gone, or lives elsewhere in the tree, and it was reparented to
// a child subreaper), by a helper ("ghost") that sets up that session, forks
// it and exits, so the kernel reparents it to its subreaper parent, as CRIU
// does. A group whose leader is gone is made by a ghost with the leader's
// pid that one member forks, and reaps once it has joined. Zombies are made
// the same way and die as they did. The same plan is run at dump, so what
// cannot be made is refused there, with the tree left running.

export interface SessionTask {
  pid: number;
  ppid: number;
  sid: number;
  pgid: number;
  zombie: boolean;
  exitStatus: number;
  exitSignal: number;
  comm: string;
  subreaper: boolean;
  sharesFiles: boolean;
}

/** What a live task does to itself before its children. */
export interface SelfSession {
  setsid: boolean;
  setpgid: boolean;
  /** Joins this group (0: none) once it has forked its `prejoin` children. */
  joinPgid: number;
  subreaper: boolean;
}

/** One entry of a forker's list. Tasks are forked by the task whose list
 * it is (`forker` -1) or by a ghost or zombie of the same list (`forker` its
 * index), at a moment of the forker's own setup (`when`). Zombies and ghosts
 * set their own session and group (setsid, setpgid, joinPgid), fork their
 * entries, then exit; a ghost's forker reaps it. */
export interface ForkEntry {
  pid: number;
  kind: "task" | "zombie" | "ghost";
  forker: number;
  when: "early" | "prejoin" | "normal";
  setsid: boolean;
  setpgid: boolean;
  joinPgid: number;
  exitStatus: number;
  exitSignal: number;
  comm: string;
}

export interface SessionPlan {
  self: Map<number, SelfSession>;
  /** Per live task, the entries it forks. */
  forks: Map<number, ForkEntry[]>;
  /** Pids of ghosts (they exit during the restore). */
  ghosts: number[];
}

export class SessionError extends Error {}

/** The fields the plan needs from the tree's cores (parents first). */
export function sessionTasks(
  cores: {
    pid: number;
    ppid: number;
    sid: number;
    pgid: number;
    zombie: boolean;
    exitStatus: number;
    exitSignal: number;
    comm: string;
    childSubreaper: boolean;
    sharesFiles: boolean;
  }[],
): SessionTask[] {
  return cores.map((c) => ({
    pid: c.pid,
    ppid: c.ppid,
    sid: c.sid,
    pgid: c.pgid,
    zombie: c.zombie,
    exitStatus: c.exitStatus,
    exitSignal: c.exitSignal,
    comm: c.comm,
    subreaper: c.childSubreaper,
    sharesFiles: c.sharesFiles,
  }));
}

export interface SessionOptions {
  /** The root may be in a session it does not lead: ckpt's stands in. */
  shellJob: boolean;
  /** A pid no task of the tree has and nothing else uses, for a ghost that
   * needs one of its own. */
  freePid: () => number;
  /** At dump: whether pid is a process outside the tree (a session or group
   * whose leader lives on outside cannot be made again). */
  livesOutside?: (pid: number) => boolean;
}

interface Place {
  /** The forker's list the task is in (a live task's pid). */
  owner: number;
  /** The entry forking it in that list (-1: the owner itself). */
  forker: number;
  when: ForkEntry["when"];
  /** Session and group it is born into. */
  sid: number;
  pgid: number;
}

export function planSessions(tasks: SessionTask[], opts: SessionOptions): SessionPlan {
  const root = tasks[0];
  const byPid = new Map(tasks.map((t) => [t.pid, t]));
  const self = new Map<number, SelfSession>();
  const forks = new Map<number, ForkEntry[]>(
    tasks.filter((t) => !t.zombie).map((t) => [t.pid, []]),
  );
  const ghosts: number[] = [];
  const place = new Map<number, Place>();
  // A session or group of the root's that it does not lead is ckpt's own
  // (--shell-job): every task of the tree in it inherits it from the root.
  const outSid = root.sid === root.pid ? undefined : root.sid;
  const outPgid = root.pgid === root.pid ? undefined : root.pgid;
  if (outSid !== undefined && !opts.shellJob) {
    throw new SessionError(
      `pid ${root.pid} was in session ${root.sid}, which it did not lead; restore with --shell-job`,
    );
  }
  const fail = (msg: string): never => {
    throw new SessionError(msg);
  };
  const entryOf = (owner: number, e: ForkEntry): number => forks.get(owner)!.indexOf(e);
  const add = (owner: number, e: ForkEntry): number => {
    forks.get(owner)!.push(e);
    return forks.get(owner)!.length - 1;
  };
  const entry = (t: SessionTask, p: Place): ForkEntry => ({
    pid: t.pid,
    kind: t.zombie ? "zombie" : "task",
    forker: p.forker,
    when: p.when,
    setsid: false,
    setpgid: false,
    joinPgid: 0,
    exitStatus: t.exitStatus,
    exitSignal: t.exitSignal || 17,
    comm: t.comm,
  });
  // Where in its owner's list each zombie or ghost is, for what it forks.
  const entries = new Map<number, { owner: number; e: ForkEntry }>();
  const sessionGhosts = new Map<string, number>(); // `${owner}/${sid}` -> ghost pid
  const groupGhosts = new Set<number>();

  const parentStages = (p: SessionTask) => {
    const s = self.get(p.pid)!;
    const at = place.get(p.pid)!;
    return {
      early: { sid: at.sid, pgid: at.pgid },
      prejoin: { sid: p.sid, pgid: s.setsid || s.setpgid ? p.pid : at.pgid },
      normal: { sid: p.sid, pgid: p.pgid },
      setsid: s.setsid,
    };
  };

  /** Chooses who forks t and when, so that it is born into its session. */
  const placeTask = (t: SessionTask): Place => {
    const p = byPid.get(t.ppid)!;
    const st = parentStages(p);
    const normal = { owner: p.pid, forker: -1, when: "normal" as const, ...st.normal };
    if (t.sid === t.pid || t.sid === p.sid) return normal;
    if (st.setsid && t.sid === st.early.sid) {
      if (t.sharesFiles) {
        fail(
          `pid ${t.pid} shares its parent's fd table and was forked before its parent's setsid; this cannot be restored`,
        );
      }
      return { owner: p.pid, forker: -1, when: "early", ...st.early };
    }
    const x = t.sid;
    const why =
      `pid ${t.pid} is in session ${x}, which its parent ${p.pid} neither leads nor is in`;
    if (t.sharesFiles) fail(`${why}, and it shares its parent's fd table; this cannot be restored`);
    // Only an orphan gets here (its session came from a task that exited),
    // and orphans go to a child subreaper: a ghost's exit hands t to p then.
    if (!p.subreaper) {
      fail(`${why}, and ${p.pid} is not a child subreaper; this cannot be restored`);
    }
    const leader = byPid.get(x);
    if (!leader) {
      if (opts.livesOutside?.(x)) {
        fail(`${why}: the session's leader ${x} is outside the tree; dump the tree it leads`);
      }
      const key = `${p.pid}/${x}`;
      let g = sessionGhosts.get(key);
      if (g === undefined) {
        g = x;
        sessionGhosts.set(key, g);
        ghosts.push(g);
        const e: ForkEntry = {
          ...ghost(g),
          forker: -1,
          when: "normal",
          setsid: true,
        };
        add(p.pid, e);
        entries.set(g, { owner: p.pid, e });
      }
      const at = entries.get(g)!;
      return { owner: p.pid, forker: entryOf(p.pid, at.e), when: "normal", sid: x, pgid: x };
    }
    if (leader.zombie && leader.ppid === p.pid && leader.sid === leader.pid) {
      const at = entries.get(leader.pid)!;
      return { owner: p.pid, forker: entryOf(p.pid, at.e), when: "normal", sid: x, pgid: x };
    }
    if (!leader.zombie && leader.sid === leader.pid) {
      // A ghost forked by the live leader hands t over to the leader's
      // nearest subreaper, which must be t's parent.
      let up: SessionTask | undefined = leader;
      while (up && !up.subreaper && up.pid !== root.pid) up = byPid.get(up.ppid);
      if (up?.pid !== p.pid || leader.pid === p.pid) {
        fail(`${why}, and no helper of that session would hand it over to ${p.pid}`);
      }
      const key = `${leader.pid}/${x}`;
      let g = sessionGhosts.get(key);
      if (g === undefined) {
        g = opts.freePid();
        sessionGhosts.set(key, g);
        ghosts.push(g);
        const e: ForkEntry = { ...ghost(g), forker: -1, when: "normal" };
        add(leader.pid, e);
        entries.set(g, { owner: leader.pid, e });
      }
      const at = entries.get(g)!;
      return {
        owner: leader.pid,
        forker: entryOf(leader.pid, at.e),
        when: "normal",
        sid: x,
        pgid: leader.pgid,
      };
    }
    return fail(`${why}; this cannot be restored`);
  };

  /** What t does about its group, given the group it is born into. */
  const groupOf = (t: SessionTask, born: { sid: number; pgid: number }) => {
    const setsid = t.sid === t.pid;
    if (setsid) {
      if (t.pgid !== t.pid) fail(`pid ${t.pid} leads session ${t.sid} but is in group ${t.pgid}`);
      return { setsid, setpgid: false, joinPgid: 0 };
    }
    if (t.pgid === t.pid) return { setsid, setpgid: true, joinPgid: 0 };
    if (t.pgid === born.pgid) return { setsid, setpgid: false, joinPgid: 0 };
    if (t.pgid === outPgid) {
      fail(`pid ${t.pid} is in group ${t.pgid} outside the tree, which it cannot join again`);
    }
    const leader = byPid.get(t.pgid);
    if (leader && leader.pgid !== leader.pid) {
      fail(
        `pid ${t.pid} is in group ${t.pgid}, which its leader ${t.pgid} has left; this cannot be restored`,
      );
    }
    if (!leader && !groupGhosts.has(t.pgid) && !ghosts.includes(t.pgid)) {
      if (opts.livesOutside?.(t.pgid)) {
        fail(`pid ${t.pid} is in group ${t.pgid}, whose leader lives outside the tree`);
      }
      // The first member makes the group with a ghost of the leader's pid.
      groupGhosts.add(t.pgid);
      ghosts.push(t.pgid);
      const mine = t.zombie ? entries.get(t.pid)! : undefined;
      const e: ForkEntry = {
        ...ghost(t.pgid),
        forker: mine ? entryOf(mine.owner, mine.e) : -1,
        when: "prejoin",
        setpgid: true,
      };
      add(mine?.owner ?? t.pid, e);
    }
    return { setsid, setpgid: false, joinPgid: t.pgid };
  };

  // The root is forked by ckpt.
  place.set(root.pid, {
    owner: 0,
    forker: -1,
    when: "normal",
    sid: outSid ?? -1,
    pgid: outSid !== undefined ? (outPgid ?? -1) : -1,
  });
  const rootGroup = groupOf(root, { sid: outSid ?? -1, pgid: outPgid ?? -1 });
  self.set(root.pid, { ...rootGroup, subreaper: root.subreaper });

  // Parents before children (by depth), and a parent's zombies before its
  // live children: a zombie that led a session forks its orphans.
  const depth = (t: SessionTask): number => {
    let d = 0;
    for (let u = t; u.pid !== root.pid && byPid.has(u.ppid) && d < tasks.length; d++) {
      u = byPid.get(u.ppid)!;
    }
    return d;
  };
  const order = tasks.slice(1).map((t, i) => ({ t, i, d: depth(t) }))
    .sort((a, b) => a.d - b.d || Number(b.t.zombie) - Number(a.t.zombie) || a.i - b.i)
    .map((x) => x.t);
  for (const t of order) {
    const parent = byPid.get(t.ppid);
    if (!parent || parent.zombie || !place.has(parent.pid) || parent.pid === t.pid) {
      fail(`pid ${t.pid}: its parent ${t.ppid} is not a live task of the tree before it`);
    }
    const at = placeTask(t);
    place.set(t.pid, at);
    const e = entry(t, at);
    add(at.owner, e);
    if (t.zombie) entries.set(t.pid, { owner: at.owner, e });
    const g = groupOf(t, at);
    if (t.zombie) Object.assign(e, g);
    else self.set(t.pid, { ...g, subreaper: t.subreaper });
  }

  // A task joining a group made by one of its own children forks that
  // child before it joins; one made further down could never be waited for.
  for (const t of tasks) {
    const join = t.zombie ? entries.get(t.pid)?.e.joinPgid : self.get(t.pid)?.joinPgid;
    if (!join) continue;
    const maker = byPid.get(join);
    if (!maker) continue;
    const mp = place.get(maker.pid)!;
    const mine = t.zombie ? entries.get(t.pid)! : undefined;
    const owner = mine?.owner ?? t.pid;
    const forker = mine ? entryOf(mine.owner, mine.e) : -1;
    if (mp.owner === owner && mp.forker === forker) {
      const e = forks.get(owner)!.find((x) => x.pid === maker.pid)!;
      if (e.when === "normal") e.when = "prejoin";
    } else if (isBelow(maker.pid, t.pid, place)) {
      fail(
        `pid ${t.pid} is in group ${join}, made by its descendant ${join}; this cannot be restored`,
      );
    }
  }
  // Within a list: group leaders first, so members find their groups soon.
  for (const list of forks.values()) {
    const order = list.map((e, i) => ({ e, i }));
    const rank = (
      e: ForkEntry,
    ) => (e.setpgid || e.setsid || byPid.get(e.pid)?.pgid === e.pid ? 0 : 1);
    order.sort((a, b) => rank(a.e) - rank(b.e) || a.i - b.i);
    const moved = new Map(order.map((x, j) => [x.i, j]));
    list.splice(0, list.length, ...order.map((x) => x.e));
    for (const e of list) if (e.forker >= 0) e.forker = moved.get(e.forker)!;
  }
  return { self, forks, ghosts };
}

function ghost(pid: number): ForkEntry {
  return {
    pid,
    kind: "ghost",
    forker: -1,
    when: "normal",
    setsid: false,
    setpgid: false,
    joinPgid: 0,
    exitStatus: 0,
    exitSignal: 17,
    comm: "ckpt-ghost",
  };
}

/** Whether a is forked, at any depth, below b's own list. */
function isBelow(a: number, b: number, place: Map<number, Place>): boolean {
  for (let p = place.get(a); p && p.owner !== 0; p = place.get(p.owner)) {
    if (p.owner === b) return true;
  }
  return false;
}
