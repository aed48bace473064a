// System V IPC objects of an IPC namespace: shared memory segments (id, key,
// owner, creator, mode, size and content), semaphore sets (values) and
// message queues (every message, read with MSG_COPY so none is taken). Read
// and made again from inside the namespace (src/ns/enter.ts), each with its
// dumped id: the namespace's shm_next_id, sem_next_id and msg_next_id say
// which id the next object gets.
import { create } from "@bufbuild/protobuf";
import {
  DataRangeSchema,
  type IpcPerm,
  IpcPermSchema,
  type SysvMsgQueue,
  SysvMsgQueueSchema,
  SysvMsgSchema,
  type SysvSem,
  SysvSemSchema,
  type SysvShm,
  SysvShmSchema,
} from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import {
  GETALL,
  IPC_CREAT,
  IPC_EXCL,
  IPC_NOWAIT,
  IPC_RMID,
  IPC_SET,
  IPC_STAT,
  ipcCreate,
  MSG_COPY,
  msgctl,
  msgrcv,
  msgsnd,
  semctl,
  SETALL,
  SHM_LOCK,
  shmAttach,
  shmCopy,
  shmctl,
  shmDetach,
} from "../native/ns.ts";
import { errnoText, NativeError } from "../native/mod.ts";
import { formatBytes } from "../util/units.ts";
import { readHere, writeHere } from "./enter.ts";

const PAGE = 4096;
export const SHM_DEST = 0o1000, SHM_LOCKED = 0o2000;
/** Content of every segment of a namespace together: it is kept in
 * namespaces.img, which is read whole and bounded like every image. */
export const MAX_SHM_BYTES = 192 << 20;

/** Ids listed in /proc/sysvipc/{shm,sem,msg} (the reader's namespace). */
function listIds(what: "shm" | "sem" | "msg"): number[] {
  const rows = readHere(`/proc/sysvipc/${what}`).split("\n").slice(1);
  return rows.map((r) => r.trim().split(/\s+/)).filter((f) => f.length > 2).map((f) => Number(f[1]))
    .sort((a, b) => a - b);
}

/** struct ipc64_perm, the first 48 bytes of every *id64_ds. */
function readPerm(dv: DataView): IpcPerm {
  return create(IpcPermSchema, {
    key: dv.getInt32(0, true),
    uid: dv.getUint32(4, true),
    gid: dv.getUint32(8, true),
    cuid: dv.getUint32(12, true),
    cgid: dv.getUint32(16, true),
    mode: dv.getUint32(20, true),
  });
}

function writePerm(dv: DataView, p: IpcPerm): void {
  dv.setUint32(4, p.uid, true);
  dv.setUint32(8, p.gid, true);
  dv.setUint32(20, p.mode & 0o777, true);
}

export function dumpShm(): SysvShm[] {
  let total = 0;
  return listIds("shm").map((id) => {
    const ds = new Uint8Array(112);
    shmctl(id, IPC_STAT, ds);
    const dv = new DataView(ds.buffer);
    const size = dv.getBigUint64(48, true);
    total += Number(size);
    if (total > MAX_SHM_BYTES) {
      throw new DumpError(
        `System V shared memory of the tree's IPC namespace holds more than ` +
          `${formatBytes(MAX_SHM_BYTES)} (segment ${id}: ${formatBytes(Number(size))}); ` +
          `ckpt saves up to that much`,
      );
    }
    const content = new Uint8Array(Number(size));
    shmCopy(id, 0n, content, false);
    return create(SysvShmSchema, {
      id,
      perm: readPerm(dv),
      size,
      data: dataRanges(content).map(([off, end]) =>
        create(DataRangeSchema, { offset: BigInt(off), data: content.slice(off, end) })
      ),
    });
  });
}

/** Runs of pages that are not all zero, as [start, end) byte offsets. */
function dataRanges(b: Uint8Array): [number, number][] {
  const out: [number, number][] = [];
  const words = new BigUint64Array(b.buffer, 0, Math.floor(b.length / 8));
  for (let off = 0; off < b.length; off += PAGE) {
    const end = Math.min(b.length, off + PAGE);
    let zero = true;
    for (let w = off / 8; w < Math.floor(end / 8) && zero; w++) zero = words[w] === 0n;
    for (let i = Math.floor(end / 8) * 8; i < end && zero; i++) zero = b[i] === 0;
    if (zero) continue;
    const last = out.at(-1);
    if (last && last[1] === off) last[1] = end;
    else out.push([off, end]);
  }
  return out;
}

export function dumpSem(): SysvSem[] {
  return listIds("sem").map((id) => {
    const ds = new Uint8Array(104);
    semctl(id, 0, IPC_STAT, ds);
    const dv = new DataView(ds.buffer);
    const n = Number(dv.getBigUint64(80, true));
    const vals = new Uint16Array(Math.max(1, n));
    semctl(id, 0, GETALL, new Uint8Array(vals.buffer));
    return create(SysvSemSchema, { id, perm: readPerm(dv), values: [...vals.subarray(0, n)] });
  });
}

export function dumpMsg(msgmax: number): SysvMsgQueue[] {
  return listIds("msg").map((id) => {
    const ds = new Uint8Array(120);
    msgctl(id, IPC_STAT, ds);
    const dv = new DataView(ds.buffer);
    const qnum = Number(dv.getBigUint64(80, true));
    const buf = new Uint8Array(8 + msgmax);
    const messages = [];
    for (let i = 0; i < qnum; i++) {
      const rc = msgrcv(id, buf, BigInt(i), IPC_NOWAIT | MSG_COPY);
      if (rc < 0n) {
        throw new DumpError(
          `reading message ${i} of System V message queue ${id} failed: ${errnoText(Number(-rc))}`,
        );
      }
      messages.push(create(SysvMsgSchema, {
        mtype: new DataView(buf.buffer).getBigInt64(0, true),
        text: buf.slice(8, 8 + Number(rc)),
      }));
    }
    return create(SysvMsgQueueSchema, {
      id,
      perm: readPerm(dv),
      qbytes: dv.getBigUint64(88, true),
      messages,
    });
  });
}

/** Sets the id the next object of a kind gets in the current namespace. */
function nextId(what: "shm" | "sem" | "msg", id: number): void {
  writeHere(`/proc/sys/kernel/${what}_next_id`, String(id));
}

function made(what: string, id: number, got: number): void {
  if (got !== id) {
    throw new RestoreError(`System V ${what} ${id} was created as ${got}; its id is taken`);
  }
}

const createFlags = (p: IpcPerm) => IPC_CREAT | IPC_EXCL | (p.mode & 0o777);

/** What a restore keeps of the segments until the tree runs: ckpt's own
 * attaches of segments that were marked removed (SHM_DEST) while still
 * attached. Such a segment is removed again at once, as it was, and ckpt's
 * attach keeps it alive until every task has attached it by its id. */
export class ShmHolds {
  private readonly addrs: bigint[] = [];

  add(addr: bigint): void {
    this.addrs.push(addr);
  }

  release(): void {
    for (const a of this.addrs.splice(0)) shmDetach(a);
  }
}

export function restoreShm(shm: SysvShm[], holds: ShmHolds): void {
  for (const s of shm) {
    const p = s.perm!;
    const what = `shared memory segment ${s.id}`;
    nextId("shm", s.id);
    made(
      "shared memory segment",
      s.id,
      ipcCreate("shm", p.key, s.size, createFlags(p), p.cuid, p.cgid, what),
    );
    for (const r of s.data) shmCopy(s.id, r.offset, new Uint8Array(r.data), true);
    const ds = new Uint8Array(112);
    shmctl(s.id, IPC_STAT, ds);
    writePerm(new DataView(ds.buffer), p);
    shmctl(s.id, IPC_SET, ds);
    if (p.mode & SHM_LOCKED) shmctl(s.id, SHM_LOCK, null);
    if (p.mode & SHM_DEST) {
      holds.add(shmAttach(s.id));
      shmctl(s.id, IPC_RMID, null);
    }
  }
}

export function restoreSem(sem: SysvSem[]): void {
  for (const s of sem) {
    const p = s.perm!;
    nextId("sem", s.id);
    made(
      "semaphore set",
      s.id,
      ipcCreate(
        "sem",
        p.key,
        BigInt(s.values.length),
        createFlags(p),
        p.cuid,
        p.cgid,
        `semaphore set ${s.id}`,
      ),
    );
    const vals = new Uint16Array(s.values);
    semctl(s.id, 0, SETALL, new Uint8Array(vals.buffer));
    const ds = new Uint8Array(104);
    semctl(s.id, 0, IPC_STAT, ds);
    writePerm(new DataView(ds.buffer), p);
    semctl(s.id, 0, IPC_SET, ds);
  }
}

export function restoreMsg(msg: SysvMsgQueue[]): void {
  for (const q of msg) {
    const p = q.perm!;
    nextId("msg", q.id);
    made(
      "message queue",
      q.id,
      ipcCreate("msg", p.key, 0n, createFlags(p), p.cuid, p.cgid, `message queue ${q.id}`),
    );
    // The queue's size first: its messages may need more than the default.
    const ds = new Uint8Array(120);
    msgctl(q.id, IPC_STAT, ds);
    const dv = new DataView(ds.buffer);
    writePerm(dv, p);
    dv.setBigUint64(88, q.qbytes, true);
    try {
      msgctl(q.id, IPC_SET, ds);
    } catch (err) {
      if (err instanceof NativeError && err.errno === 1) {
        throw new RestoreError(
          `System V message queue ${q.id} had room for ${q.qbytes} bytes, more than ` +
            `kernel.msgmnb: raising it needs CAP_SYS_RESOURCE`,
        );
      }
      throw err;
    }
    for (const m of q.messages) {
      const buf = new Uint8Array(8 + m.text.length);
      new DataView(buf.buffer).setBigInt64(0, m.mtype, true);
      buf.set(m.text, 8);
      msgsnd(q.id, buf, IPC_NOWAIT);
    }
  }
}

const MAX_ID = 0x7fffffff;

export function validateSysv(
  shm: SysvShm[],
  sem: SysvSem[],
  msg: SysvMsgQueue[],
  fail: (why: string) => never,
): void {
  let total = 0n;
  for (const s of shm) {
    if (!s.perm || s.id < 0 || s.id > MAX_ID) fail(`shared memory segment ${s.id} is malformed`);
    for (const r of s.data) {
      if (r.offset + BigInt(r.data.length) > s.size) {
        fail(`shared memory segment ${s.id}: content beyond its size`);
      }
      total += BigInt(r.data.length);
    }
  }
  if (total > BigInt(MAX_SHM_BYTES)) fail("shared memory content is out of bounds");
  for (const s of sem) {
    if (!s.perm || s.id < 0 || s.values.length === 0 || s.values.some((v) => v > 32767)) {
      fail(`semaphore set ${s.id} is malformed`);
    }
  }
  for (const q of msg) {
    if (!q.perm || q.id < 0 || q.messages.some((m) => m.mtype <= 0n)) {
      fail(`message queue ${q.id} is malformed`);
    }
  }
}
