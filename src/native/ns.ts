// Typed wrappers over ffi/ns.zig: entering namespaces on the calling thread,
// System V and POSIX IPC objects, host names, clocks. Each acts in the
// namespaces of the JS thread, which src/ns/enter.ts switches for a stretch.
import { check, cstr } from "./mod.ts";
import { native } from "./load.ts";

export const CLONE_NEWTIME = 0x80;
export const CLONE_NEWNS = 0x20000;
export const CLONE_NEWCGROUP = 0x02000000;
export const CLONE_NEWUTS = 0x04000000;
export const CLONE_NEWIPC = 0x08000000;
export const CLONE_NEWUSER = 0x10000000;
export const CLONE_NEWPID = 0x20000000;
export const CLONE_NEWNET = 0x40000000;

export const IPC_CREAT = 0o1000, IPC_EXCL = 0o2000, IPC_NOWAIT = 0o4000;
export const IPC_RMID = 0, IPC_SET = 1, IPC_STAT = 2;
export const GETALL = 13, SETALL = 17;
export const SHM_LOCK = 11;
export const MSG_COPY = 0o40000;
const KIND = { shm: 0, sem: 1, msg: 2 } as const;

export function setns(fd: number, nstype: number, what: string): void {
  check(native().ck_setns(fd, nstype), "setns", what);
}

export function uname(): { hostname: string; domainname: string } {
  const b = new Uint8Array(390);
  check(native().ck_uname(b), "uname");
  const field = (i: number) => {
    const f = b.subarray(i * 65, (i + 1) * 65);
    const end = f.indexOf(0);
    return new TextDecoder().decode(f.subarray(0, end < 0 ? 65 : end));
  };
  return { hostname: field(1), domainname: field(5) };
}

export function sethostname(name: string): void {
  const b = new TextEncoder().encode(name);
  check(native().ck_sethostname(b, BigInt(b.length)), "sethostname", JSON.stringify(name));
}

export function setdomainname(name: string): void {
  const b = new TextEncoder().encode(name);
  check(native().ck_setdomainname(b, BigInt(b.length)), "setdomainname", JSON.stringify(name));
}

export const CLOCK_MONOTONIC = 1, CLOCK_BOOTTIME = 7;

/** clock_gettime in nanoseconds, as the calling thread's time namespace sees it. */
export function clockNs(clock: number): bigint {
  const t = new BigInt64Array(2);
  check(native().ck_clock_gettime(clock, new Uint8Array(t.buffer)), "clock_gettime");
  return t[0] * 1_000_000_000n + t[1];
}

/** Makes a System V object as the given creator (cuid/cgid). */
export function ipcCreate(
  kind: keyof typeof KIND,
  key: number,
  arg: bigint,
  flags: number,
  cuid: number,
  cgid: number,
  what: string,
): number {
  return check(
    native().ck_ipc_create(KIND[kind], key, arg, flags, cuid, cgid),
    `${kind}get`,
    what,
  );
}

export function shmctl(id: number, cmd: number, buf: Uint8Array<ArrayBuffer> | null): number {
  return check(native().ck_shmctl(id, cmd, buf), "shmctl", `segment ${id}`);
}

/** Reads (toSegment false) or writes len bytes of segment id at off. */
export function shmCopy(
  id: number,
  off: bigint,
  buf: Uint8Array<ArrayBuffer>,
  toSegment: boolean,
): void {
  check(
    native().ck_shm_copy(id, off, buf, BigInt(buf.length), toSegment ? 1 : 0),
    "shmat",
    `segment ${id}`,
  );
}

export function shmAttach(id: number): bigint {
  const rc = native().ck_shm_attach(id);
  check(rc, "shmat", `segment ${id}`);
  return BigInt.asUintN(64, rc);
}

export function shmDetach(addr: bigint): void {
  native().ck_shm_detach(addr);
}

export function semctl(id: number, num: number, cmd: number, arg: bigint | Uint8Array): number {
  const a = typeof arg === "bigint" ? arg : BigInt(Deno.UnsafePointer.value(
    Deno.UnsafePointer.of(arg as Uint8Array<ArrayBuffer>),
  ));
  return check(native().ck_semctl(id, num, cmd, a), "semctl", `semaphore set ${id}`);
}

export function msgctl(id: number, cmd: number, buf: Uint8Array<ArrayBuffer> | null): number {
  return check(native().ck_msgctl(id, cmd, buf), "msgctl", `message queue ${id}`);
}

/** buf: mtype (8 bytes) then the text. */
export function msgsnd(id: number, buf: Uint8Array<ArrayBuffer>, flags: number): void {
  check(
    native().ck_msgsnd(id, buf, BigInt(buf.length - 8), flags),
    "msgsnd",
    `message queue ${id}`,
  );
}

/** Raw msgrcv: the text length, or -errno. */
export function msgrcv(
  id: number,
  buf: Uint8Array<ArrayBuffer>,
  typ: bigint,
  flags: number,
): bigint {
  return native().ck_msgrcv(id, buf, BigInt(buf.length - 8), typ, flags);
}

export interface MqAttr {
  flags: bigint;
  maxmsg: bigint;
  msgsize: bigint;
  curmsgs: bigint;
}

export function mqOpen(
  name: string,
  oflag: number,
  mode: number,
  attr?: { maxmsg: bigint; msgsize: bigint },
): number {
  let a: Uint8Array<ArrayBuffer> | null = null;
  if (attr) {
    const v = new BigInt64Array(8);
    v[1] = attr.maxmsg;
    v[2] = attr.msgsize;
    a = new Uint8Array(v.buffer);
  }
  return check(native().ck_mq_open(cstr(name), oflag, mode, a), "mq_open", `/${name}`);
}

/** mq_open(O_CREAT | oflag) with uid/gid as the creator (its owner). */
export function mqCreate(
  name: string,
  oflag: number,
  mode: number,
  attr: { maxmsg: bigint; msgsize: bigint },
  uid: number,
  gid: number,
): number {
  const v = new BigInt64Array(8);
  v[1] = attr.maxmsg;
  v[2] = attr.msgsize;
  return check(
    native().ck_mq_create(cstr(name), oflag | 0o100, mode, new Uint8Array(v.buffer), uid, gid),
    "mq_open",
    `/${name}`,
  );
}

export function mqSend(fd: number, data: Uint8Array<ArrayBuffer>, prio: number): void {
  check(native().ck_mq_send(fd, data, BigInt(data.length), prio), "mq_timedsend", `fd ${fd}`);
}

/** One message, or null when the queue is empty (EAGAIN). */
export function mqReceive(
  fd: number,
  buf: Uint8Array<ArrayBuffer>,
): { data: Uint8Array<ArrayBuffer>; prio: number } | null {
  const prio = new Uint32Array(1);
  const rc = native().ck_mq_receive(fd, buf, BigInt(buf.length), new Uint8Array(prio.buffer));
  if (rc === -11n) return null;
  const n = check(rc, "mq_timedreceive", `fd ${fd}`);
  return { data: buf.slice(0, n), prio: prio[0] };
}

export function mqGetattr(fd: number): MqAttr {
  const v = new BigInt64Array(8);
  check(native().ck_mq_getattr(fd, new Uint8Array(v.buffer)), "mq_getsetattr", `fd ${fd}`);
  return { flags: v[0], maxmsg: v[1], msgsize: v[2], curmsgs: v[3] };
}

/** A detached mount of the calling thread's IPC namespace's mqueue
 * filesystem: a directory fd. */
export function mqueueMount(): number {
  return check(native().ck_mqueue_mount(), "mounting the mqueue filesystem");
}

/** Sends fds over a UNIX socket (SCM_RIGHTS), 64 per message. */
export function sendFds(sock: number, fds: number[]): void {
  const a = new Int32Array(fds);
  check(native().ck_send_fds(sock, new Uint8Array(a.buffer), BigInt(fds.length)), "sendmsg");
}

/** A namespace probe run in a forked child (ffi/ns.zig ck_probe_ns): 0,
 * or the step that failed and its errno (31 meaning 31 or more). */
export function probeNs(which: "time" | "ipc" | "pid", pid = 0): { step: number; errno: number } {
  const rc = Number(native().ck_probe_ns({ time: 0, ipc: 1, pid: 2 }[which], pid));
  if (rc >= 0) return { step: 0, errno: 0 };
  return { step: (-rc) >> 16, errno: (-rc) & 0xffff };
}
