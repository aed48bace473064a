// `deno task compile`: one executable, dist/ckpt, carrying libckpt.so.
// src/native/load.ts finds the embedded library at the same path relative
// to its own module as in the source tree, and extracts a private copy when
// dlopen cannot open a file that only exists inside the executable.
//
// `deno compile` needs Deno's `denort` runtime, normally downloaded on first
// use. It cannot be downloaded here, so it must be given: DENORT_BIN.
const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
const LIB = "zig-out/lib/libckpt.so";
const OUT = "dist/ckpt";

function fail(msg: string): never {
  console.error(`ckpt compile: ${msg}`);
  Deno.exit(1);
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

const denort = Deno.env.get("DENORT_BIN");
if (!denort || !isFile(denort)) {
  fail(
    `deno compile needs Deno's denort runtime, which cannot be downloaded here; ` +
      `set DENORT_BIN=/path/to/denort-${Deno.version.deno} and run again` +
      (denort ? ` (DENORT_BIN=${denort} is not a file)` : ""),
  );
}
// Only now build the library: without denort there is nothing to build for.
const build = await new Deno.Command("bash", {
  args: [`${ROOT}/tools/build-native.sh`],
  stdin: "null",
  stdout: "inherit",
  stderr: "inherit",
}).output();
if (build.code !== 0) fail("building the native library failed");
if (!isFile(`${ROOT}/${LIB}`)) fail(`${LIB} is missing after the build`);

const args = [
  "compile",
  "--quiet",
  "--no-prompt",
  // The same permissions the ./ckpt launcher grants.
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-env",
  "--allow-sys",
  // The same V8 flags as the launcher's (see ./ckpt).
  "--v8-flags=--min-semi-space-size=128,--max-semi-space-size=128,--max-opt=2,--always-sparkplug",
  // Build tools (buf, protoc-gen-es) are npm dependencies too; keep them out.
  "--exclude-unused-npm",
  "--include",
  LIB,
  "--output",
  OUT,
  "main.ts",
];
const { code } = await new Deno.Command(Deno.execPath(), {
  args,
  cwd: ROOT,
  env: { DENORT_BIN: denort },
  stdin: "null",
  stdout: "inherit",
  stderr: "inherit",
}).output();
if (code !== 0) fail(`deno compile failed (exit ${code})`);
const size = Deno.statSync(`${ROOT}/${OUT}`).size;
console.log(
  `ckpt compile: wrote ${OUT} (${(size / (1 << 20)).toFixed(1)} MiB) with ${LIB} embedded`,
);
