// The connection lock: while a live TCP connection is between its old socket
// and its new one, no packet of it may reach either side, or the kernel
// would answer for a socket that is not there (a reset) or change state the
// dump already read. An nftables table of ckpt's own (family inet, one per
// dump: `ckpt-ROOT-RANDOM`) drops both directions of every locked 4-tuple at
// the raw hook, before conntrack; packets marked LOCK_MARK (the FINs and
// ACKs ckpt injects at restore) pass. Removing it is one `nft delete table`.
//
// During a dump a watchdog process (ffi/inetsk.zig) owns the table: it
// installs it, and takes it down — after taking every socket out of repair
// mode — when told to or when ckpt dies, unless ckpt died after killing the
// tree at the end of a complete dump (the lock must then wait for restore).
// A dump that ends with the tree killed leaves the table in place; restore
// installs it again if missing (another machine) and deletes it once the
// new sockets are ready.
import { DumpError, RestoreError } from "../errors.ts";
import { fd as fdops, O, wait } from "../native/mod.ts";
import { forkWatchdog } from "../native/inetsk.ts";
import { log } from "../util/log.ts";
import { AF_INET, ipText, parseSockaddr, v4Of } from "./addr.ts";

/** SO_MARK of packets the lock lets through ("ckpt"). */
export const LOCK_MARK = 0x636b7074;

/** Both ends of a connection, raw sockaddrs. */
export interface Conn {
  local: Uint8Array;
  peer: Uint8Array;
}

const NFT_PLACES = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/usr/local/sbin/nft"];

/** The nft binary, or undefined when nftables is not installed. */
export function nftPath(): string | undefined {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter(Boolean).map((d) => `${d}/nft`);
  for (const p of [...NFT_PLACES, ...dirs]) {
    try {
      const st = Deno.statSync(p);
      if (st.isFile && ((st.mode ?? 0) & 0o111)) return p;
    } catch { /* not there */ }
  }
  return undefined;
}

function needNft(why: string, Err: typeof DumpError | typeof RestoreError): string {
  const nft = nftPath();
  if (!nft) {
    throw new Err(
      `${why} needs nftables' nft command to lock the connections (install it: ` +
        `apt-get install nftables)`,
    );
  }
  return nft;
}

/** A fresh table name for one dump's lock. */
export function newTableName(rootPid: number): string {
  const r = new Uint8Array(4);
  crypto.getRandomValues(r);
  return `ckpt-${rootPid}-${[...r].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

export function checkTableName(name: string): boolean {
  return /^ckpt-\d+-[0-9a-f]{8}$/.test(name);
}

function element(from: Uint8Array, to: Uint8Array): { v4: boolean; text: string } | null {
  const a = parseSockaddr(from), b = parseSockaddr(to);
  if (!a || !b) return null;
  const a4 = v4Of(a), b4 = v4Of(b);
  if (a4 && b4) return { v4: true, text: `${ipText(a4)} . ${a.port} . ${ipText(b4)} . ${b.port}` };
  if (a.family === AF_INET || b.family === AF_INET) return null;
  return { v4: false, text: `${ipText(a.addr)} . ${a.port} . ${ipText(b.addr)} . ${b.port}` };
}

/** The table, replacing any of that name in one transaction. */
export function ruleset(table: string, conns: Conn[]): string {
  const v4: string[] = [], v6: string[] = [];
  for (const c of conns) {
    for (const e of [element(c.local, c.peer), element(c.peer, c.local)]) {
      if (e) (e.v4 ? v4 : v6).push(e.text);
    }
  }
  const set = (name: string, type: string, els: string[]) =>
    `  set ${name} { type ${type} . inet_service . ${type} . inet_service;` +
    (els.length ? ` elements = { ${[...new Set(els)].join(", ")} }` : "") + ` }\n`;
  const chain = (name: string, hook: string) =>
    `  chain ${name} { type filter hook ${hook} priority -300; policy accept;\n` +
    `    meta mark ${LOCK_MARK} accept\n` +
    `    ip saddr . tcp sport . ip daddr . tcp dport @c4 drop\n` +
    `    ip6 saddr . tcp sport . ip6 daddr . tcp dport @c6 drop\n  }\n`;
  return `table inet ${table} {}\ndelete table inet ${table}\ntable inet ${table} {\n` +
    set("c4", "ipv4_addr", v4) + set("c6", "ipv6_addr", v6) +
    chain("input", "input") + chain("output", "output") + `}\n`;
}

function writeRuleset(text: string): string {
  const path = Deno.makeTempFileSync({ prefix: "ckpt-lock-", suffix: ".nft" });
  Deno.chmodSync(path, 0o600);
  Deno.writeTextFileSync(path, text);
  return path;
}

/** A dump's lock, owned by its watchdog. */
export class DumpLock {
  private done = false;

  private constructor(
    readonly table: string,
    private readonly pid: number,
    private readonly cmd: number,
    private readonly status: number,
  ) {}

  /** Installs the lock for conns: a watchdog holding the sockets' copies
   * (sockFds, with their SO_REUSEADDR values) and pidfds of the tree. */
  static start(
    table: string,
    conns: Conn[],
    socks: { fd: number; reuse: number }[],
    pidfds: number[],
  ): DumpLock {
    const nft = needNft("--tcp-established", DumpError);
    const file = writeRuleset(ruleset(table, conns));
    const [cmdR, cmdW] = fdops.pipe(O.CLOEXEC);
    const [stR, stW] = fdops.pipe(O.CLOEXEC);
    let pid: number;
    const tFork = performance.now();
    try {
      pid = forkWatchdog({
        cmdFd: cmdR,
        statusFd: stW,
        lockArgv: [nft, "-f", file],
        unlockArgv: [nft, "delete", "table", "inet", table],
        env: "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        sockFds: socks.map((s) => s.fd),
        reuse: socks.map((s) => s.reuse),
        pidfds,
      });
    } catch (err) {
      fdops.close(cmdW);
      fdops.close(stR);
      Deno.removeSync(file);
      throw err;
    } finally {
      fdops.close(cmdR);
      fdops.close(stW);
    }
    const lock = new DumpLock(table, pid, cmdW, stR);
    const t0 = performance.now();
    log.debug(`connection lock watchdog forked in ${(t0 - tFork).toFixed(1)} ms`);
    const rc = lock.ask("L");
    try {
      Deno.removeSync(file);
    } catch { /* gone */ }
    if (rc !== 0) {
      lock.end("U");
      throw new DumpError(
        `locking ${conns.length} TCP socket(s) with nftables failed (nft exit status ${rc}); ` +
          `is nf_tables available in this kernel?`,
      );
    }
    log.debug(
      `locked ${conns.length} TCP socket(s) in nftables table inet ${table} (nft) in ${
        (performance.now() - t0).toFixed(1)
      } ms`,
    );
    return lock;
  }

  private ask(c: string): number {
    fdops.write(this.cmd, new TextEncoder().encode(c));
    const b = new Uint8Array(1);
    const n = fdops.read(this.status, b);
    return n === 1 ? b[0] : 255;
  }

  private end(c: "U" | "K"): number {
    if (this.done) return 0;
    this.done = true;
    let rc = 255;
    try {
      rc = this.ask(c);
    } finally {
      fdops.close(this.cmd);
      fdops.close(this.status);
      try {
        wait(this.pid, 0);
      } catch { /* reaped */ }
    }
    return rc;
  }

  /** Sockets out of repair mode, then the table removed. */
  unlock(): void {
    const rc = this.end("U");
    if (rc !== 0) {
      log.warn(
        `removing the connection lock failed (nft exit status ${rc}): ` +
          `run 'nft delete table inet ${this.table}'`,
      );
    }
  }

  /** The table stays for restore to remove; the watchdog goes. */
  keep(): void {
    this.end("K");
  }
}

function nftRun(nft: string, args: string[]): { ok: boolean; err: string } {
  const out = new Deno.Command(nft, { args, stdin: "null", stdout: "null", stderr: "piped" })
    .outputSync();
  return { ok: out.success, err: new TextDecoder().decode(out.stderr).trim().split("\n")[0] ?? "" };
}

/** Restore: the dump's lock in place (put back if missing, e.g. on another
 * machine), before any socket of it is rebuilt. */
export function lockForRestore(table: string, conns: Conn[]): void {
  const nft = needNft("restoring TCP connections", RestoreError);
  const file = writeRuleset(ruleset(table, conns));
  try {
    const r = nftRun(nft, ["-f", file]);
    if (!r.ok) throw new RestoreError(`locking the TCP connections failed: nft: ${r.err}`);
  } finally {
    Deno.removeSync(file);
  }
}

/** Restore: the lock goes once the new sockets are in place. */
export function unlockTable(table: string): void {
  const nft = nftPath();
  if (!nft) return;
  const r = nftRun(nft, ["delete", "table", "inet", table]);
  if (!r.ok && !/No such file/.test(r.err)) {
    log.warn(`removing the connection lock failed: ${r.err}: run 'nft delete table inet ${table}'`);
  }
}
