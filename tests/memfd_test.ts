// memfds, files deleted while open or mapped, and POSIX shared memory: one
// object for every fd and mapping of it, in every task, after restore —
// content (holes kept), seals, names and sharing checked by what the
// restored processes do; python's multiprocessing.Pool (semaphores in
// unlinked /dev/shm files) still computing; what cannot be saved refused at
// dump with the tree running on.
import { create } from "@bufbuild/protobuf";
import {
  assert,
  assertEquals,
  assertMatch,
  assertStringIncludes,
  assertThrows,
} from "../src/deps/std_assert.ts";
import {
  DataRangeSchema,
  FileEntrySchema,
  FileKind,
  FilesImageSchema,
  UnlinkedInodeSchema,
  UnlinkedOpenSchema,
} from "../src/gen/ckpt/images_pb.ts";
import { ImageError } from "../src/errors.ts";
import { validateFiles } from "../src/images/validate.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import {
  alive,
  gone,
  killAndForget,
  readText,
  startSession,
  tempDir,
  until,
  WORKLOADS,
} from "./helpers/proc.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Every pid of the tree below pid (pid first), read from /proc. */
function treeOf(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    let tids: string[] = [];
    try {
      tids = [...Deno.readDirSync(`/proc/${out[i]}/task`)].map((e) => e.name);
    } catch { /* gone */ }
    for (const t of tids) {
      const kids = readText(`/proc/${out[i]}/task/${t}/children`).trim();
      if (kids) out.push(...kids.split(/\s+/).map(Number));
    }
  }
  return out;
}

/** Kills the tree at once (a child killed first would wait as a zombie of
 * its living parent), then waits for every pid to be free. */
async function killTree(pid: number): Promise<void> {
  const tree = treeOf(pid);
  for (const p of tree) {
    try {
      Deno.kill(p, "SIGKILL");
    } catch { /* gone */ }
  }
  for (const p of tree) await killAndForget(p);
}

async function dumpAndRestore(pid: number, images: string, status?: Promise<unknown>) {
  const tree = treeOf(pid);
  const d = await runCkpt(["dump", "-t", String(pid), "-D", images]);
  assertEquals(d.code, 0, `dump failed: ${d.stderr}`);
  await status;
  for (const p of tree) await until(`pid ${p} free`, () => gone(p));
  const r = await runCkpt(["restore", "-D", images, "-d"]);
  assertEquals(r.code, 0, `restore failed: ${r.stderr}`);
  return tree;
}

/** "key=value" pairs of a round line of the memfd workload. */
function fields(line: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const [, k, v] of line.matchAll(/ (\w+)=(.*?)(?= \w+=|$)/g)) m.set(k, v);
  return m;
}

Deno.test("memfds and unlinked shm objects: fds and mappings of parent and child share one object after restore; content, holes, seals, names kept", async () => {
  const dir = await tempDir("memfd");
  const log = `${dir}/log`;
  const p = startSession([`${WORKLOADS}/memfd`, dir]);
  try {
    await until("workload start", () => readText(log).includes("start"));
    await until("child forked", () => treeOf(p.pid).length === 2);
    Deno.kill(p.pid, "SIGUSR1");
    // A round is logged in pieces: wait for its whole line.
    const round = (n: number) => readText(log).match(new RegExp(`round ${n} .* size=\\d+\n`))?.[0];
    await until("round 1", () => !!round(1));
    const before = fields(round(1)!.trim());
    assert(![...before.values()].includes("BAD"), `before the dump: ${[...before]}`);
    const tree = await dumpAndRestore(p.pid, `${dir}/images`, p.status);
    assertEquals(
      [...Deno.readDirSync("/dev/shm")].filter((e) => e.name.includes(`ckpt-memfd-${p.pid}`)),
      [],
      "recreated shm files are unlinked again",
    );
    assert(tree.every(alive), "parent and child restored");
    Deno.kill(p.pid, "SIGUSR1");
    await until("round 2", () => !!round(2));
    const after = fields(round(2)!.trim());
    // Writes through A's fd seen through both mappings and the child's; the
    // child's writes (its own open of A, the shm mappings) seen here; the
    // O_RDONLY reopen still read-only at its offset; the private mapping
    // keeps its copied page; every seal refuses what it refused.
    assertEquals([...after], [...before]);
    assertEquals(after.get("name"), "/memfd:ckpt-a (deleted)");
    assertEquals(after.get("statfs"), "0x1021994", "a real memfd (tmpfs)");
    assertEquals(after.get("layout"), "0-4096,8192-12288,524288-528384", "holes stay holes");
    assertEquals(after.get("b_seals"), "0xf");
    assertEquals(after.get("c_seals"), "0x10");
    assertEquals(after.get("ro_pos"), "100");
    assertEquals(after.get("c_old_mapping"), "ok", "mapped before F_SEAL_FUTURE_WRITE again");
    // The objects are the very same in both tasks.
    const [parent, child] = tree;
    const objects = (pid: number) =>
      readText(`/proc/${pid}/maps`).split("\n").filter((l) => /memfd:|\/dev\/shm\//.test(l))
        .map((l) => l.split(/\s+/).slice(4).join(" "));
    assertEquals(objects(child), objects(parent));
  } finally {
    await killTree(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a file deleted while open twice and mapped shared and privately is one object again", async () => {
  const dir = await tempDir("deleted");
  Deno.mkdirSync(`${dir}/sub`);
  const log = `${dir}/log`;
  const prog = [
    "import mmap, os, sys, time",
    `d = "${dir}/sub"`,
    'fd1 = os.open(f"{d}/data", os.O_RDWR | os.O_CREAT, 0o640)',
    "os.ftruncate(fd1, 3 * 4096)",
    "os.fchown(fd1, 4321, 4322)",
    'fd2 = os.open(f"{d}/data", os.O_RDONLY)',
    "os.lseek(fd2, 3, 0)",
    "m = mmap.mmap(fd1, 3 * 4096, mmap.MAP_SHARED)",
    'lib = os.open(f"{d}/lib", os.O_RDWR | os.O_CREAT, 0o755)',
    'os.write(lib, b"library bytes".ljust(8192, b"."))',
    "priv = mmap.mmap(lib, 8192, mmap.MAP_PRIVATE)",
    "os.close(lib)",
    'priv[0:7] = b"patched"',
    'os.unlink(f"{d}/data"); os.unlink(f"{d}/lib")',
    `out = open("${log}", "a")`,
    "i = 0",
    "while True:",
    '    tok = f"tok-{i:06d}".encode()',
    "    os.pwrite(fd1, tok, 4096 + 100)",
    "    st = os.fstat(fd1)",
    "    ok = m[4196:4206] == tok and os.pread(fd2, 10, 4196) == tok",
    "    print(i, 'shared=' + str(ok), 'pos=' + str(os.lseek(fd2, 0, 1)),",
    "          'priv=' + priv[0:13].decode(), 'page2=' + priv[4096:4100].decode(),",
    "          'mode=' + oct(st.st_mode & 0o777), 'owner=%d:%d' % (st.st_uid, st.st_gid),",
    "          'blocks=' + str(st.st_blocks), file=out, flush=True)",
    "    i += 1",
    "    time.sleep(0.02)",
  ].join("\n");
  const p = startSession(["python3", "-c", prog]);
  try {
    await until("python runs", () => readText(log).includes("shared="));
    const line = (s: string) => s.trim().split("\n").at(-1)!.replace(/^\d+ /, "");
    const before = line(readText(log));
    assertEquals(
      before,
      "shared=True pos=3 priv=patched bytes page2=.... mode=0o640 owner=4321:4322 blocks=8",
    );
    await dumpAndRestore(p.pid, `${dir}/images`, p.status);
    const n = readText(log).length;
    await until("restored copy runs", () => readText(log).slice(n).split("\n").length > 3);
    assertEquals(line(readText(log)), before, "one object: fds, mappings, owner, holes");
    assertEquals([...Deno.readDirSync(`${dir}/sub`)], [], "recreated files are unlinked again");
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("python multiprocessing.Pool(2) with a shared Value keeps computing after restore", async () => {
  const dir = await tempDir("pool");
  const p = startSession(["python3", `${ROOT}/tests/workloads/pool.py`, dir]);
  const read = () => {
    const [batches, count, total, shared] = readText(`${dir}/sum`).trim().split(" ").map(BigInt);
    return { batches: batches ?? 0n, count: count ?? 0n, total: total ?? 0n, shared };
  };
  // The workers' sum is right, and what they added to the shared Value
  // (under its lock) reached the parent.
  const right = ({ count, total, shared }: { count: bigint; total: bigint; shared?: bigint }) =>
    total === (count - 1n) * count * (2n * count - 1n) / 6n && shared === total;
  try {
    await until("pool computing", () => read().batches >= 5n, 20_000);
    const tree = await dumpAndRestore(p.pid, `${dir}/images`, p.status);
    assertEquals(tree.length, 3, "the pool's two workers are in the tree");
    const atDump = read();
    assert(right(atDump), `at dump: ${JSON.stringify(atDump, (_, v) => String(v))}`);
    await until("pool computing after restore", () => read().batches >= atDump.batches + 20n);
    const later = read();
    assert(right(later), `after restore: ${JSON.stringify(later, (_, v) => String(v))}`);
    assert(tree.every(alive), "the workers are still there");
  } finally {
    await killTree(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a hugetlb memfd and a memfd over the size limit are refused at dump, by name, the tree running on", async () => {
  const dir = await tempDir("memfd-refused");
  const log = `${dir}/log`;
  const prog = [
    "import os, time",
    'h = os.memfd_create("huge", os.MFD_HUGETLB)',
    'big = os.memfd_create("big")',
    "os.write(big, b'x' * (65 << 20))",
    `out = open("${log}", "a")`,
    "i = 0",
    "while True:",
    "    print(i, file=out, flush=True); i += 1; time.sleep(0.02)",
  ].join("\n");
  const p = startSession(["python3", "-c", prog]);
  try {
    await until("python runs", () => readText(log).includes("0\n"));
    const r = await runCkpt(["dump", "-t", String(p.pid), "-D", `${dir}/images`]);
    assertEquals(r.code, 1);
    assertMatch(r.stderr, /fd 3 of pid \d+ \(\/memfd:huge \(deleted\)\): a hugetlb memfd/);
    assertStringIncludes(r.stderr, "(/memfd:big (deleted)) holds more than 64.0 MiB of data");
    const n = readText(log).length;
    await until("still running", () => readText(log).length > n);
    assert(alive(p.pid));
  } finally {
    await killAndForget(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a memfd shared with a process outside the tree is refused at dump, naming that process", async () => {
  const dir = await tempDir("memfd-outside");
  const log = `${dir}/log`;
  const prog = [
    "import os, time",
    'fd = os.memfd_create("together")',
    "os.write(fd, b'shared with the parent')",
    "kid = os.fork()",
    "if kid == 0:",
    "    os.setsid()",
    `    out = open("${log}", "a")`,
    "    i = 0",
    "    while True:",
    "        print(os.getpid(), i, file=out, flush=True); i += 1; time.sleep(0.02)",
    "time.sleep(1000)",
  ].join("\n");
  const p = startSession(["python3", "-c", prog]);
  try {
    await until("child runs", () => readText(log).includes(" 1\n"));
    const kid = Number(readText(log).split(" ")[0]);
    const r = await runCkpt(["dump", "-t", String(kid), "-D", `${dir}/images`]);
    assertEquals(r.code, 1);
    assertMatch(
      r.stderr,
      new RegExp(
        `fd 3 of pid ${kid} \\(/memfd:together \\(deleted\\)\\): memfd together is shared with ` +
          `pid ${p.pid} \\(python3\\), outside the tree`,
      ),
    );
    const n = readText(log).length;
    await until("still running", () => readText(log).length > n);
    assert(alive(kid));
  } finally {
    await killTree(p.pid);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("damaged memfd and deleted-file entries are refused before anything is made", () => {
  const inode = (over: Record<string, unknown>) =>
    create(FileEntrySchema, {
      id: 1,
      kind: FileKind.FILE_UNLINKED,
      unlinked: create(UnlinkedInodeSchema, {
        memfd: true,
        name: "x",
        size: 8192n,
        data: [create(DataRangeSchema, { offset: 4096n, data: new Uint8Array(4096) })],
        ...over,
      }),
    });
  const check = (...files: ReturnType<typeof inode>[]) =>
    validateFiles("/img", create(FilesImageSchema, { files }));
  assertEquals(check(inode({})).size, 1, "a well-formed one passes");
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ size: 4096n }, /data beyond the object's size/],
    [{
      data: [
        create(DataRangeSchema, { offset: 4096n, data: new Uint8Array(10) }),
        create(DataRangeSchema, { offset: 0n, data: new Uint8Array(10) }),
      ],
    }, /unsorted or overlapping/],
    [{ seals: 0x40 }, /unknown seals 0x40/],
    [{ name: "n".repeat(250) }, /memfd name is invalid/],
    [{ memfd: false, name: "relative/path" }, /deleted file path "relative\/path" is invalid/],
  ];
  for (const [over, why] of bad) {
    const err = assertThrows(() => check(inode(over)), ImageError);
    assertMatch(err.message, why);
    assertStringIncludes(err.message, "/img/files.img: file #1");
  }
  const open = create(FileEntrySchema, {
    id: 2,
    kind: FileKind.FILE_UNLINKED_OPEN,
    unlinkedOpen: create(UnlinkedOpenSchema, { inodeId: 0 }),
  });
  assertMatch(assertThrows(() => check(open), ImageError).message, /refers to no inode/);
});
