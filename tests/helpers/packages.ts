// Real programs a test needs, installed from Debian when missing: CI starts
// on an empty machine. A program that cannot be installed fails the test
// (never a silent skip).

/** Path of `binary`, installing Debian package `pkg` first if needed. */
export async function ensureProgram(binary: string, pkg: string): Promise<string> {
  const found = await which(binary);
  if (found) return found;
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  const apt = (args: string[]) =>
    new Deno.Command("apt-get", {
      args: ["-o", "DPkg::Lock::Timeout=300", ...args],
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  let out = await apt(["install", "-y", "--no-install-recommends", pkg]);
  if (!out.success) {
    await apt(["update"]);
    out = await apt(["install", "-y", "--no-install-recommends", pkg]);
  }
  const path = await which(binary);
  if (!path) {
    throw new Error(
      `the test needs ${binary} (Debian package ${pkg}) and could not install it: ` +
        new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" "),
    );
  }
  return path;
}

async function which(binary: string): Promise<string | undefined> {
  const out = await new Deno.Command("sh", {
    args: ["-c", `command -v ${binary}`],
    stdout: "piped",
    stderr: "null",
  }).output();
  const path = new TextDecoder().decode(out.stdout).trim();
  return out.success && path ? path : undefined;
}
