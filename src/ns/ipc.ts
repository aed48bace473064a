// IPC namespaces: System V objects (sysv.ts), POSIX message queues
// (mqueue.ts) and the namespace's own limits under /proc/sys, read and made
// again from inside it.
import { create } from "@bufbuild/protobuf";
import { type IpcNamespace, IpcNamespaceSchema, SysctlSchema } from "../gen/ckpt/images_pb.ts";
import { inNamespacesOf, readHere, writeHere } from "./enter.ts";
import {
  dumpMsg,
  dumpSem,
  dumpShm,
  restoreMsg,
  restoreSem,
  restoreShm,
  type ShmHolds,
  validateSysv,
} from "./sysv.ts";
import { dumpMqueues, restoreMqueues, validateMqueues } from "./mqueue.ts";

/** The values each IPC namespace has its own copy of. */
export const IPC_SYSCTLS = [
  "kernel/shmmax",
  "kernel/shmall",
  "kernel/shmmni",
  "kernel/shm_rmid_forced",
  "kernel/msgmax",
  "kernel/msgmnb",
  "kernel/msgmni",
  "kernel/sem",
  "fs/mqueue/queues_max",
  "fs/mqueue/msg_max",
  "fs/mqueue/msgsize_max",
  "fs/mqueue/msg_default",
  "fs/mqueue/msgsize_default",
];

function readSysctl(name: string): string | undefined {
  try {
    return readHere(`/proc/sys/${name}`).trim().replace(/\s+/g, " ");
  } catch {
    return undefined; // not in this kernel
  }
}

export function dumpIpc(pid: number): IpcNamespace {
  return inNamespacesOf(pid, ["ipc"], () => {
    const sysctls = IPC_SYSCTLS.flatMap((name) => {
      const value = readSysctl(name);
      return value === undefined ? [] : [create(SysctlSchema, { name, value })];
    });
    const msgmax = Number(sysctls.find((s) => s.name === "kernel/msgmax")?.value ?? 8192);
    return create(IpcNamespaceSchema, {
      sysctls,
      shm: dumpShm(),
      sem: dumpSem(),
      msg: dumpMsg(msgmax),
      mqueues: dumpMqueues(),
    });
  });
}

/** Fills the (new, empty) IPC namespace of pid. Limits first: the objects
 * were made under them. */
export function restoreIpc(pid: number, ipc: IpcNamespace, holds: ShmHolds): void {
  inNamespacesOf(pid, ["ipc"], () => {
    for (const s of ipc.sysctls) {
      if (!IPC_SYSCTLS.includes(s.name) || readSysctl(s.name) === s.value) continue;
      writeHere(`/proc/sys/${s.name}`, s.value);
    }
    restoreShm(ipc.shm, holds);
    restoreSem(ipc.sem);
    restoreMsg(ipc.msg);
    restoreMqueues(ipc.mqueues);
  });
}

export function validateIpc(ipc: IpcNamespace, fail: (why: string) => never): void {
  for (const s of ipc.sysctls) {
    if (!IPC_SYSCTLS.includes(s.name) || !/^[0-9 ]{1,64}$/.test(s.value)) {
      fail(`IPC setting ${JSON.stringify(s.name.slice(0, 40))} is malformed`);
    }
  }
  validateSysv(ipc.shm, ipc.sem, ipc.msg, fail);
  validateMqueues(ipc.mqueues, fail);
}
