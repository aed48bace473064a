// `ckpt check`: which kernel features this machine has for ckpt, in plain words.
import { check, type CheckReport } from "../api/check.ts";
import type { CommandSpec } from "../cli/spec.ts";
import { CkptError, UsageError } from "../errors.ts";

export function formatReport(report: CheckReport): string {
  const rows = report.probes.map((p) => [
    p.name,
    p.required ? "required" : "optional",
    p.ok ? "yes" : "no",
    p.detail,
  ]);
  const head = ["FEATURE", "NEEDED", "OK", "DETAIL"];
  const widths = [0, 1, 2].map((i) => Math.max(head[i].length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => i < 3 ? c.padEnd(widths[i]) : c).join("  ");
  const lines = [`Kernel ${report.kernel}`, "", line(head), ...rows.map(line), ""];
  const optionalMissing = report.probes.filter((p) => !p.required && !p.ok).map((p) => p.name);
  if (report.ok) {
    lines.push(
      "All required features work." +
        (optionalMissing.length ? ` Optional, not available: ${optionalMissing.join(", ")}.` : ""),
    );
  }
  return lines.join("\n");
}

export function missingMessage(report: CheckReport): string {
  const missing = report.probes.filter((p) => p.required && !p.ok);
  return `missing required feature${missing.length > 1 ? "s" : ""}: ` +
    missing.map((p) => `${p.name} (needed ${p.why})`).join("; ");
}

export const checkCommand: CommandSpec = {
  name: "check",
  summary: "report which kernel features this machine has for ckpt",
  usage: "ckpt check [OPTIONS]",
  description: `
Tries each kernel interface ckpt relies on (ptrace, pidfd, process_vm_readv,
clone3 with set_tid, UNIX sock_diag, map_files, the vDSO layout, userfaultfd,
PAGEMAP_SCAN, soft-dirty, time namespaces, capabilities) and says yes or no with
a short reason. Exits 0 when every required feature works.`,
  options: [
    { name: "json", kind: "boolean", help: "print the report as JSON" },
  ],
  async run(opts, positionals) {
    if (positionals.length) {
      throw new UsageError(`check: unexpected argument '${positionals[0]}'`);
    }
    const report = await check();
    console.log(opts.bool("json") ? JSON.stringify(report, null, 2) : formatReport(report));
    if (!report.ok) throw new CkptError(missingMessage(report));
    return 0;
  },
};
