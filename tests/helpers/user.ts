// A throwaway unprivileged user for the tests where root dumps and restores
// someone else's process and that someone tries to turn root's power to
// their own ends. Made with useradd (a system user, no home, its own group)
// and removed again; its processes are started through setpriv.

export interface TempUser {
  name: string;
  uid: number;
  gid: number;
  /** A directory of the user's own (0755) for the workload and its tricks. */
  dir: string;
  /** argv that runs argv as the user (no supplementary groups, no caps). */
  as(argv: string[]): string[];
  /** Runs a shell command as the user and waits; throws when it fails. */
  sh(script: string): void;
  remove(): Promise<void>;
}

function run(cmd: string, args: string[]): string {
  const out = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout).trim();
}

export async function tempUser(): Promise<TempUser> {
  const name = `ckpt${crypto.randomUUID().replaceAll("-", "").slice(0, 10)}`;
  run("useradd", [
    "--system",
    "--no-create-home",
    "--user-group",
    "--shell",
    "/usr/sbin/nologin",
    name,
  ]);
  const uid = Number(run("id", ["-u", name]));
  const gid = Number(run("id", ["-g", name]));
  const dir = await Deno.makeTempDir({ prefix: "ckpt-user-" });
  Deno.chownSync(dir, uid, gid);
  Deno.chmodSync(dir, 0o755);
  const as = (argv: string[]) => [
    "/usr/bin/setpriv",
    "--reuid",
    String(uid),
    "--regid",
    String(gid),
    "--clear-groups",
    "--",
    ...argv,
  ];
  return {
    name,
    uid,
    gid,
    dir,
    as,
    sh(script: string) {
      const [cmd, ...args] = as(["/bin/sh", "-c", script]);
      run(cmd, args);
    },
    async remove() {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      // The test killed what it started; userdel refuses while a process runs.
      for (let i = 0; i < 50; i++) {
        const out = new Deno.Command("userdel", { args: [name], stderr: "null" }).outputSync();
        if (out.success || out.code === 6) break; // 6: no such user
        await new Promise((r) => setTimeout(r, 100));
      }
      new Deno.Command("groupdel", { args: [name], stderr: "null" }).outputSync();
    },
  };
}

/** argv for startSession: a python3 script run by the user. */
export function userPython(u: TempUser, script: string, ...args: string[]): string[] {
  return u.as(["/usr/bin/python3", "-c", script, ...args]);
}
