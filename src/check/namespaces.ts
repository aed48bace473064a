// Namespaces restore makes for a tree, each probed the way restore uses it,
// in a short-lived child.
import { errnoText } from "../native/errno.ts";
import { probeNs } from "../native/ns.ts";
import { unusedPid } from "./clone.ts";
import { no, probe, type ProbeResult, type ProbeSpec, yes } from "./types.ts";

const TIME_NS: ProbeSpec = {
  name: "time namespace",
  required: false,
  why: "to keep CLOCK_MONOTONIC and CLOCK_BOOTTIME running on from where the tree saw them",
};
const PID_NS: ProbeSpec = {
  name: "PID namespace set_tid",
  required: false,
  why: "to restore a PID namespace's init with its pid at every level",
};
const IPC_NS: ProbeSpec = {
  name: "IPC and UTS namespaces",
  required: false,
  why: "to read and remake System V objects (MSG_COPY), POSIX message queues and host names",
};

const TIME_STEPS = [
  "",
  "unshare(CLONE_NEWTIME)",
  "opening timens_offsets",
  "writing timens_offsets",
  "opening time_for_children",
  "setns into it",
];
const IPC_STEPS = [
  "",
  "unshare(CLONE_NEWIPC|CLONE_NEWUTS)",
  "msgget",
  "msgsnd",
  "msgrcv with MSG_COPY",
  "mounting the mqueue filesystem (fsopen, fsmount)",
  "sethostname",
];
const PID_STEPS = ["", "clone3(CLONE_NEWPID) with set_tid", "pid 1 inside", "wait4", "outer pid"];

function outcome(r: { step: number; errno: number }, steps: string[], done: string) {
  if (r.step === 0) return yes(done);
  const what = steps[r.step] ?? `step ${r.step}`;
  return no(`${what} failed${r.errno ? `: ${errnoText(r.errno)}` : ""}`);
}

export function namespaceProbes(): Promise<ProbeResult[]> {
  return Promise.all([
    probe(
      TIME_NS,
      () =>
        outcome(
          probeNs("time"),
          TIME_STEPS,
          "made a time namespace, set its offsets and entered it",
        ),
    ),
    probe(PID_NS, () => {
      const pid = unusedPid();
      return outcome(
        probeNs("pid", pid),
        PID_STEPS,
        `forked the init of a new PID namespace as pid 1 there and ${pid} here`,
      );
    }),
    probe(
      IPC_NS,
      () =>
        outcome(
          probeNs("ipc"),
          IPC_STEPS,
          "read a message with MSG_COPY, mounted mqueue and set a host name in new namespaces",
        ),
    ),
  ]);
}
