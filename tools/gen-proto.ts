// Regenerates src/gen/ from proto/ with buf and protoc-gen-es (both from npm).
const deno = Deno.execPath();
const cmd = new Deno.Command(deno, {
  args: ["run", "--allow-all", "npm:@bufbuild/buf@1.75.0", "generate"],
  env: { PATH: `${deno.replace(/\/[^/]+$/, "")}:${Deno.env.get("PATH") ?? ""}` },
  stdout: "inherit",
  stderr: "inherit",
});
const { code } = await cmd.output();
if (code !== 0) Deno.exit(code);
await new Deno.Command(deno, { args: ["fmt", "src/gen"], stdout: "null" }).output();
