// POSIX message queues of an IPC namespace: every queue with its attributes,
// owner, mode and messages. The queues are listed through a private mount of
// the namespace's mqueue filesystem (attached nowhere); their messages can
// only be read by receiving them, so each queue is emptied and filled again
// in the same order with the same priorities while the tree is frozen.
import { create } from "@bufbuild/protobuf";
import { MqMessageSchema, type PosixMqueue, PosixMqueueSchema } from "../gen/ckpt/images_pb.ts";
import { DumpError, RestoreError } from "../errors.ts";
import { fd as fdops, NativeError, O } from "../native/mod.ts";
import { mqCreate, mqGetattr, mqOpen, mqReceive, mqSend, mqueueMount } from "../native/ns.ts";

/** The mqueue filesystem's root of the calling thread's IPC namespace, as
 * a path ckpt can read (a detached mount, held by `fd`). */
export function mqueueRoot(): { fd: number; path: string } {
  const fd = mqueueMount();
  return { fd, path: `/proc/self/fd/${fd}` };
}

/** "QSIZE:5 NOTIFY:0 SIGNO:0 NOTIFY_PID:0" */
export function readQueueInfo(path: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of Deno.readTextFileSync(path).matchAll(/(\w+):\s*(-?\d+)/g)) {
    out.set(m[1], Number(m[2]));
  }
  return out;
}

/** Every queue of the calling thread's IPC namespace. */
export function dumpMqueues(): PosixMqueue[] {
  const root = mqueueRoot();
  try {
    const names = [...Deno.readDirSync(root.path)].map((e) => e.name).sort();
    return names.map((name) => {
      const path = `${root.path}/${name}`;
      const info = readQueueInfo(path);
      if ((info.get("NOTIFY_PID") ?? 0) !== 0) {
        throw new DumpError(
          `POSIX message queue /${name} has a notification registered (mq_notify) by pid ` +
            `${info.get("NOTIFY_PID")}, which cannot be dumped yet`,
        );
      }
      const st = Deno.statSync(path);
      return create(PosixMqueueSchema, {
        name,
        mode: (st.mode ?? 0) & 0o7777,
        uid: st.uid ?? 0,
        gid: st.gid ?? 0,
        ...readMessages(name),
      });
    });
  } finally {
    fdops.close(root.fd);
  }
}

/** The queue's size limits and messages, in the order they are received;
 * the queue is left holding the same messages in the same order. */
function readMessages(name: string) {
  const q = mqOpen(name, O.RDWR | O.NONBLOCK | O.CLOEXEC, 0);
  try {
    const a = mqGetattr(q);
    const buf = new Uint8Array(Number(a.msgsize));
    const messages = [];
    for (;;) {
      const m = mqReceive(q, buf);
      if (!m) break;
      messages.push(create(MqMessageSchema, { priority: m.prio, data: m.data }));
    }
    try {
      for (const m of messages) mqSend(q, new Uint8Array(m.data), m.priority);
    } catch (err) {
      throw new DumpError(
        `POSIX message queue /${name}: putting its messages back failed (${
          (err as Error).message
        }); messages may be lost`,
      );
    }
    return { maxmsg: a.maxmsg, msgsize: a.msgsize, messages };
  } finally {
    fdops.close(q);
  }
}

/** Makes the queues in the calling thread's IPC namespace. */
export function restoreMqueues(queues: PosixMqueue[]): void {
  for (const m of queues) {
    let q: number;
    try {
      q = mqCreate(
        m.name,
        O.EXCL | O.RDWR | O.NONBLOCK | O.CLOEXEC,
        m.mode & 0o777,
        { maxmsg: m.maxmsg, msgsize: m.msgsize },
        m.uid,
        m.gid,
      );
    } catch (err) {
      if (err instanceof NativeError && err.errno === 22) {
        throw new RestoreError(
          `POSIX message queue /${m.name} (${m.maxmsg} messages of up to ${m.msgsize} bytes) ` +
            `is beyond the namespace's fs.mqueue limits`,
        );
      }
      throw err;
    }
    try {
      for (const msg of m.messages) mqSend(q, new Uint8Array(msg.data), msg.priority);
      // Its mode without ckpt's umask.
      fdops.fchmod(q, m.mode);
    } finally {
      fdops.close(q);
    }
  }
}

export function validateMqueues(queues: PosixMqueue[], fail: (why: string) => never): void {
  for (const m of queues) {
    if (!m.name || m.name.includes("/") || m.name.includes("\0") || m.name.length > 255) {
      fail(`POSIX message queue name ${JSON.stringify(m.name.slice(0, 80))} is malformed`);
    }
    if (m.maxmsg <= 0n || m.msgsize <= 0n || BigInt(m.messages.length) > m.maxmsg) {
      fail(`POSIX message queue /${m.name} has malformed limits`);
    }
    if (m.messages.some((x) => BigInt(x.data.length) > m.msgsize || x.priority >= 32768)) {
      fail(`POSIX message queue /${m.name} holds a malformed message`);
    }
  }
}
