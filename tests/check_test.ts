// `ckpt check` on this machine (root, kernel 6.18): every probe runs for real.
import {
  assert,
  assertEquals,
  assertMatch,
  assertStringIncludes,
  assertThrows,
} from "../src/deps/std_assert.ts";
import { check, type CheckReport } from "../mod.ts";
import { unusedPid } from "../src/check/clone.ts";
import { formatReport, missingMessage } from "../src/commands/check.ts";
import { ERRNO, NativeError } from "../src/native/mod.ts";
import { probeClone3SetTid } from "../src/native/probe.ts";
import { runCkpt } from "./helpers/ckpt.ts";

const REQUIRED = [
  "ptrace seize",
  "pidfd_getfd",
  "process_vm_readv",
  "clone3 set_tid",
  "sock_diag UNIX",
  "map_files",
  "vvar/vdso layout",
  "PAGEMAP_SCAN",
  "CAP_SYS_PTRACE",
  "CAP_CHECKPOINT_RESTORE",
  "CAP_SETUID",
  "CAP_SETGID",
];
const OPTIONAL = [
  "sock_diag inet/netlink",
  "TCP repair",
  "nftables",
  "userfaultfd",
  "soft-dirty",
  "time namespace",
  "PID namespace set_tid",
  "IPC and UTS namespaces",
  "CAP_SYS_ADMIN",
  "CAP_DAC_OVERRIDE",
  "CAP_SYS_RESOURCE",
];

function assertReport(report: CheckReport): void {
  assertEquals(typeof report.ok, "boolean");
  assert(Array.isArray(report.probes));
  for (const p of report.probes) {
    assertEquals(typeof p.name, "string");
    assertEquals(typeof p.required, "boolean");
    assertEquals(typeof p.ok, "boolean");
    assertEquals(typeof p.detail, "string");
    assert(p.detail.length > 0, `${p.name} has no detail`);
  }
  const byName = new Map(report.probes.map((p) => [p.name, p]));
  assertEquals(byName.size, report.probes.length, "probe names are unique");
  for (const name of REQUIRED) {
    const p = byName.get(name);
    assert(p, `probe ${name} missing`);
    assert(p.required, `${name} should be required`);
    assert(p.ok, `${name} failed: ${p.detail}`);
  }
  for (const name of OPTIONAL) {
    const p = byName.get(name);
    assert(p, `probe ${name} missing`);
    assertEquals(p.required, false, `${name} should be optional`);
  }
  assertEquals(report.probes.length, REQUIRED.length + OPTIONAL.length);
  assert(report.ok);
  // What this kernel is known to have and lack.
  assert(byName.get("userfaultfd")!.ok);
  assertMatch(byName.get("userfaultfd")!.detail, /write-protect yes/);
  assert(byName.get("PAGEMAP_SCAN")!.ok);
  assert(byName.get("time namespace")!.ok);
  assert(byName.get("PID namespace set_tid")!.ok, byName.get("PID namespace set_tid")!.detail);
  assert(byName.get("IPC and UTS namespaces")!.ok, byName.get("IPC and UTS namespaces")!.detail);
  assertEquals(byName.get("soft-dirty")!.ok, false);
  assertEquals(byName.get("CAP_SYS_RESOURCE")!.ok, false);
  assertMatch(byName.get("CAP_SYS_RESOURCE")!.detail, /avoids needing it/);
}

Deno.test("ckpt check: every probe, yes/no with a reason, exit 0 on this machine", async () => {
  const r = await runCkpt(["check"]);
  assertEquals(r.code, 0, r.stderr);
  assertEquals(r.stderr, "");
  const lines = r.stdout.split("\n");
  for (const name of [...REQUIRED, ...OPTIONAL]) {
    const row = lines.find((l) => l.startsWith(`${name} `));
    assert(row, `no row for ${name} in:\n${r.stdout}`);
    assertMatch(row, /\s(required|optional)\s+(yes|no)\s+\S/, row);
    if (REQUIRED.includes(name)) assertMatch(row, /\srequired\s+yes\s/, row);
  }
  assertMatch(lines.find((l) => l.startsWith("soft-dirty "))!, /\sno\s+.*soft-dirty/);
  assertStringIncludes(r.stdout, "All required features work.");
  assert(!/\bat .*\.ts:\d+/.test(r.stdout), "no stack traces");
});

Deno.test("ckpt check --json: machine-readable report", async () => {
  const r = await runCkpt(["check", "--json"]);
  assertEquals(r.code, 0, r.stderr);
  assertReport(JSON.parse(r.stdout));
});

Deno.test("ckpt check rejects arguments and unknown options", async () => {
  for (const args of [["check", "extra"], ["check", "--frobnicate"]]) {
    const r = await runCkpt(args);
    assertEquals(r.code, 2, r.stderr);
    assertMatch(r.stderr, /^ckpt: /);
  }
});

Deno.test("check() API gives the same report in-process", async () => {
  assertReport(await check());
});

Deno.test("clone3 set_tid probe returns exactly the PID asked for", () => {
  for (let i = 0; i < 3; i++) {
    const pid = unusedPid();
    assertEquals(probeClone3SetTid(pid), pid);
    // Reaped already: the PID is free again.
    assertThrows(() => Deno.statSync(`/proc/${pid}`));
  }
});

Deno.test("clone3 set_tid probe refuses a PID in use with EEXIST", () => {
  const err = assertThrows(() => probeClone3SetTid(Deno.pid), NativeError);
  assertEquals(err.errno, ERRNO.EEXIST);
});

Deno.test("a missing required feature is named with the reason ckpt needs it", () => {
  const report: CheckReport = {
    ok: false,
    kernel: "test",
    probes: [
      { name: "clone3 set_tid", required: true, ok: false, detail: "EPERM", why: "to keep PIDs" },
      { name: "soft-dirty", required: false, ok: false, detail: "off", why: "unused" },
    ],
  };
  assertEquals(
    missingMessage(report),
    "missing required feature: clone3 set_tid (needed to keep PIDs)",
  );
  const text = formatReport(report);
  assertMatch(text, /^clone3 set_tid\s+required\s+no\s+EPERM$/m);
  assert(!text.includes("All required features work"));
});
