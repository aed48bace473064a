// The single-file build: `deno task compile` refuses clearly without a
// denort runtime, and the library-from-bytes path a compiled ckpt relies on
// (dlopen cannot see files embedded in the executable) really works.
import { assert, assertEquals, assertMatch, assertThrows } from "../src/deps/std_assert.ts";
import { openFromBytes, openLibrary } from "../src/native/load.ts";
import { ABI_VERSION } from "../src/native/symbols/mod.ts";
import { ROOT } from "./helpers/ckpt.ts";

const LIB = `${ROOT}/zig-out/lib/libckpt.so`;

async function libBytes(): Promise<Uint8Array> {
  try {
    return await Deno.readFile(LIB);
  } catch {
    const b = await new Deno.Command("bash", { args: [`${ROOT}/tools/build-native.sh`] }).output();
    assertEquals(b.code, 0, new TextDecoder().decode(b.stderr));
    return await Deno.readFile(LIB);
  }
}

async function compileWith(env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/tools/compile.ts`],
    cwd: ROOT,
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "",
      HOME: Deno.env.get("HOME") ?? "",
      NO_COLOR: "1",
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("compile without DENORT_BIN fails fast with one line naming DENORT_BIN", async () => {
  const envs: Record<string, string>[] = [{}, { DENORT_BIN: "/nonexistent/denort" }];
  for (const env of envs) {
    const r = await compileWith(env);
    assertEquals(r.code, 1);
    assertEquals(r.stdout, "");
    const lines = r.stderr.trimEnd().split("\n");
    assertEquals(lines.length, 1, r.stderr);
    assertMatch(lines[0], /denort runtime, which cannot be downloaded here; set DENORT_BIN=/);
  }
});

Deno.test("openFromBytes loads libckpt.so from memory and leaves no file behind", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "ckpt-load-test-" });
  const oldTmp = Deno.env.get("TMPDIR");
  Deno.env.set("TMPDIR", tmp);
  try {
    const lib = openFromBytes(await libBytes());
    try {
      assertEquals(lib.symbols.ck_abi_version(), ABI_VERSION);
    } finally {
      lib.close();
    }
    assertEquals([...Deno.readDirSync(tmp)], [], "the extracted copy was not removed");
  } finally {
    if (oldTmp === undefined) Deno.env.delete("TMPDIR");
    else Deno.env.set("TMPDIR", oldTmp);
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("openLibrary falls back to the bytes when dlopen cannot open a readable path", async () => {
  // A bare file name: dlopen searches the library path, not the working
  // directory, while Deno.readFileSync reads it from there — the same split
  // as a file embedded in a compiled executable.
  const cwd = await Deno.makeTempDir({ prefix: "ckpt-load-test-" });
  const tmp = await Deno.makeTempDir({ prefix: "ckpt-load-test-tmp-" });
  try {
    await Deno.writeFile(`${cwd}/libckpt.so`, await libBytes());
    const load = new URL("../src/native/load.ts", import.meta.url).href;
    const code = `import { openLibrary } from "${load}";
      try { Deno.dlopen("libckpt.so", {}); console.log("dlopen-opened"); } catch { /* expected */ }
      console.log(openLibrary("libckpt.so").symbols.ck_abi_version());`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", code],
      cwd,
      env: { TMPDIR: tmp, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    assertEquals(out.code, 0, dec.decode(out.stderr));
    assertEquals(dec.decode(out.stdout).trim(), String(ABI_VERSION));
    assertEquals([...Deno.readDirSync(tmp)], [], "the extracted copy was not removed");
  } finally {
    await Deno.remove(cwd, { recursive: true });
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("openLibrary on a missing path says what to do", () => {
  const err = assertThrows(() => openLibrary("/nonexistent/libckpt.so"), Error);
  assertMatch(err.message, /^cannot load the native library \/nonexistent\/libckpt\.so: /);
  assert(err.message.includes("deno task build"), err.message);
  assert(!err.message.includes("\n"), "must stay one line");
});
