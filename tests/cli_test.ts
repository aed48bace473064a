import { assertEquals, assertMatch, assertStringIncludes } from "../src/deps/std_assert.ts";
import { runCkpt } from "./helpers/ckpt.ts";

Deno.test("ckpt --version prints the version", async () => {
  const r = await runCkpt(["--version"]);
  assertEquals(r.code, 0);
  assertMatch(r.stdout, /^ckpt \d+\.\d+\.\d+/);
});

Deno.test("every command has --help", async () => {
  for (const cmd of ["dump", "restore", "check", "show", "sockets"]) {
    const r = await runCkpt([cmd, "--help"]);
    assertEquals(r.code, 0, `${cmd} --help: ${r.stderr}`);
    assertStringIncludes(r.stdout, `ckpt ${cmd}`);
  }
});

Deno.test("unknown options and commands are one-line usage errors with exit 2", async () => {
  for (const args of [["dump", "--no-such-option"], ["frobnicate"]]) {
    const r = await runCkpt(args);
    assertEquals(r.code, 2);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
    assertMatch(r.stderr, /^ckpt: /);
  }
});
