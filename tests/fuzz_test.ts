// Damaged images never become wrong processes. A real images directory (a
// dumped 1 MiB counter) is mutated thousands of ways — bit flips,
// truncations, extensions, random bytes, swapped files, header fields, and
// payloads re-sealed with valid checksums so the damage reaches the protobuf
// decoder, the bounds validator and the plan builder — and every input must
// end in a clean CkptError or valid data: no other exception, no hang. Then
// `ckpt restore` itself on single flipped bytes of a real dump.
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { assert, assertEquals, assertMatch } from "../src/deps/std_assert.ts";
import { CkptError, ImageError } from "../src/errors.ts";
import {
  FdTableSchema,
  FileLockSchema,
  FilesImageSchema,
  InventorySchema,
  MmImageSchema,
  PagemapImageSchema,
  PageRunSchema,
  PosixTimerSchema,
  TaskCoreSchema,
  ThreadCoreSchema,
} from "../src/gen/ckpt/images_pb.ts";
import { crc32c } from "../src/images/crc32c.ts";
import {
  coreName,
  fdName,
  FILES,
  INVENTORY,
  mmName,
  pagemapName,
  pagesName,
} from "../src/images/dir.ts";
import {
  decodeImage,
  encodeImage,
  HEADER_SIZE,
  ImageKind,
  PAGE_SIZE,
} from "../src/images/format.ts";
import { type ImageSet, type ImageSource, parseImageSet } from "../src/images/verify.ts";
import { encodePlan } from "../src/restore/plan_buffer.ts";
import { basePlan } from "../src/restore/restore.ts";
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

const ITERATIONS = Number(Deno.env.get("CKPT_FUZZ_ITERATIONS") ?? 12_000);

/** xorshift32: reproducible from the seed printed on failure. */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>>= 0);
  };
  return {
    int: (n: number) => next() % Math.max(1, n),
    pick: <T>(xs: T[]): T => xs[next() % xs.length],
    bytes: (n: number) => Uint8Array.from({ length: n }, () => next() & 0xff),
  };
}
type Rng = ReturnType<typeof rng>;

interface Real {
  dir: string;
  pid: number;
  files: Map<string, Uint8Array>;
  pagesSize: bigint;
}

async function dumpCounter(leave: boolean): Promise<Real & { log: string; root: string }> {
  const root = await tempDir("fuzz");
  const dir = `${root}/images`;
  const p = startSession([`${WORKLOADS}/counter`, root, "1"]);
  await until("counter start", () => readText(`${root}/log`).includes("start"));
  const args = ["dump", "-t", String(p.pid), "-D", dir];
  const r = await runCkpt(leave ? [...args, "--leave-running"] : args);
  assertEquals(r.code, 0, r.stderr);
  if (!leave) {
    await p.status;
    await until("pid free", () => gone(p.pid));
  } else await killAndForget(p.pid);
  const files = new Map<string, Uint8Array>();
  for (const e of Deno.readDirSync(dir)) {
    if (!e.name.startsWith("pages-")) files.set(e.name, Deno.readFileSync(`${dir}/${e.name}`));
  }
  const pagesSize = BigInt(Deno.statSync(`${dir}/${pagesName(p.pid)}`).size);
  return { dir, pid: p.pid, files, pagesSize, log: `${root}/log`, root };
}

function memorySource(files: Map<string, Uint8Array>, pagesSize: bigint): ImageSource {
  return {
    read(name) {
      const b = files.get(name);
      if (!b) throw new ImageError(name, "missing");
      return b;
    },
    size: (name) => name.startsWith("pages-") ? pagesSize : BigInt(files.get(name)?.length ?? 0),
  };
}

/** The plan restore would hand to native code, built from the images alone
 * (fds are placeholders: the fuzz test opens nothing). */
function buildPlan(set: ImageSet): Uint8Array {
  const pid = set.inv.rootPid;
  const t = set.tasks.get(pid)!;
  if (!t.mm || !t.pagemap || !t.fdTable) throw new Error("fuzz set has no live root");
  const plan = basePlan(t.core, { root: true, shellJob: true, children: [] });
  plan.vmas = t.mm.vmas.map((v) => ({
    start: v.start,
    end: v.end,
    prot: v.prot,
    mapFlags: 0x22,
    fd: -1,
    fill: true,
    pgoff: v.pgoff,
  }));
  plan.fills = t.pagemap.runs.map((r) => ({
    addr: r.vaddr,
    len: r.nrPages * BigInt(PAGE_SIZE),
    fileOff: r.fileOffset,
  }));
  plan.fds = t.fdTable.fds.map((e) => ({ src: 3, dst: e.fd, cloexec: e.cloexec }));
  return encodePlan(plan);
}

/** Re-frames a payload and updates the inventory's size and CRC for it, so
 * the damage gets past the checksums to the decoder and the validator. */
function reseal(
  files: Map<string, Uint8Array>,
  name: string,
  kind: ImageKind,
  payload: Uint8Array,
) {
  const framed = encodeImage(kind, payload);
  files.set(name, framed);
  if (name === INVENTORY) return;
  const inv = fromBinary(InventorySchema, decodeImage(INVENTORY, files.get(INVENTORY)!).payload);
  const e = inv.files.find((f) => f.name === name);
  if (e) {
    e.size = BigInt(framed.length);
    e.crc32c = crc32c(framed);
  }
  files.set(INVENTORY, encodeImage(ImageKind.Inventory, toBinary(InventorySchema, inv)));
}

const KINDS: Record<string, [ImageKind, DescMessage]> = {
  inventory: [ImageKind.Inventory, InventorySchema],
  core: [ImageKind.Core, TaskCoreSchema],
  mm: [ImageKind.Mm, MmImageSchema],
  pagemap: [ImageKind.Pagemap, PagemapImageSchema],
  fdinfo: [ImageKind.FdTable, FdTableSchema],
  files: [ImageKind.Files, FilesImageSchema],
};
const kindOf = (name: string) => KINDS[name.replace(/(-\d+)?\.img$/, "")];

const BIG = [
  0n,
  1n,
  4095n,
  4097n,
  0x7fffffffn,
  0xffffffffn,
  1n << 47n,
  (1n << 63n) - 1n,
  (1n << 64n) - 1n,
];

/** Structured damage: plausible-looking messages with one field wrong. */
function structured(r: Rng, files: Map<string, Uint8Array>, pid: number): string {
  const edit = <D extends DescMessage>(
    name: string,
    schema: D,
    fn: (m: MessageShape<D>) => void,
  ) => {
    const [kind] = kindOf(name);
    const m = fromBinary(schema, decodeImage(name, files.get(name)!).payload);
    fn(m);
    reseal(files, name, kind, toBinary(schema, m));
  };
  const big = () => r.pick(BIG);
  // Counts past the bounds are slow to encode, so only now and then; the
  // rest are past the tighter bounds (runs vs pages file size, ...).
  const huge = (n = 200_000) => r.int(20) === 0 ? n : 2_000;
  const n32 = () => Number(BigInt.asIntN(32, r.pick(BIG)));
  const cases: [string, () => void][] = [
    ["runs: huge nrPages", () =>
      edit(pagemapName(pid), PagemapImageSchema, (m) => {
        if (m.runs.length) r.pick(m.runs).nrPages = big();
      })],
    ["runs: file offset", () =>
      edit(pagemapName(pid), PagemapImageSchema, (m) => {
        if (m.runs.length) r.pick(m.runs).fileOffset = big();
      })],
    ["runs: vaddr", () =>
      edit(pagemapName(pid), PagemapImageSchema, (m) => {
        if (m.runs.length) r.pick(m.runs).vaddr = big();
      })],
    ["runs: reversed", () => edit(pagemapName(pid), PagemapImageSchema, (m) => m.runs.reverse())],
    ["runs: many copies", () =>
      edit(pagemapName(pid), PagemapImageSchema, (m) => {
        const one = m.runs[0] ?? create(PageRunSchema);
        m.runs = Array.from({ length: huge() }, () => one);
      })],
    ["pages file name", () =>
      edit(pagemapName(pid), PagemapImageSchema, (m) => {
        m.pagesFile = r.pick(["../../etc/passwd", "/etc/shadow", "", `pages-${pid + 1}.img`]);
      })],
    ["pagemap pid", () => edit(pagemapName(pid), PagemapImageSchema, (m) => m.pid = n32())],
    ["vmas: bounds", () =>
      edit(mmName(pid), MmImageSchema, (m) => {
        const v = r.pick(m.vmas);
        if (r.int(2)) v.start = big();
        else v.end = big();
      })],
    ["vmas: kind/prot/file", () =>
      edit(mmName(pid), MmImageSchema, (m) => {
        const v = r.pick(m.vmas);
        v.kind = r.int(20);
        v.prot = r.int(64);
        v.fileId = r.int(100);
      })],
    ["vmas: swapped", () =>
      edit(mmName(pid), MmImageSchema, (m) => {
        const i = r.int(m.vmas.length), j = r.int(m.vmas.length);
        [m.vmas[i], m.vmas[j]] = [m.vmas[j], m.vmas[i]];
      })],
    ["vmas: none", () => edit(mmName(pid), MmImageSchema, (m) => m.vmas = [])],
    ["regs size", () =>
      edit(coreName(pid), TaskCoreSchema, (m) => {
        m.threads[0].regs = r.bytes(r.pick([0, 215, 217, 4096]));
      })],
    ["xsave size", () =>
      edit(coreName(pid), TaskCoreSchema, (m) => {
        m.threads[0].xsave = new Uint8Array(r.pick([0, 100, 575, 65537, 1 << 20]));
      })],
    ["auxv size", () =>
      edit(coreName(pid), TaskCoreSchema, (m) => {
        m.mm!.auxv = new Uint8Array(r.pick([8, 1040, 4096, 1 << 16]));
      })],
    ["threads", () =>
      edit(coreName(pid), TaskCoreSchema, (m) => {
        // Many small threads: past the bound without a 100 MB payload.
        m.threads = r.int(2) ? [] : Array.from(
          { length: huge(33_000) },
          (_, i) => create(ThreadCoreSchema, { tid: i + 1 }),
        );
      })],
    ["signals", () =>
      edit(coreName(pid), TaskCoreSchema, (m) => {
        m.sigactions.push({ ...m.sigactions[0] ?? {}, signo: r.pick([0, 65, 1000, 1]) } as never);
        m.threads[0].pending = Array.from({ length: r.int(2) ? 1 : huge(70_000) }, () => ({
          $typeName: "ckpt.QueuedSignal",
          shared: false,
          signo: r.int(100),
          siginfo: new Uint8Array(r.pick([0, 1, 128, 129])),
        }));
      })],
    ["groups/creds", () =>
      edit(coreName(pid), TaskCoreSchema, (m) => {
        if (r.int(2)) m.creds!.groups = Array.from({ length: huge(70_000) }, () => 1);
        else m.creds!.uids = [];
      })],
    ["rlimits/itimers", () =>
      edit(coreName(pid), TaskCoreSchema, (m) => {
        if (m.rlimits.length) r.pick(m.rlimits).resource = r.pick([16, 1000, 0xffffffff]);
        m.itimers.push(
          {
            $typeName: "ckpt.ITimer",
            which: r.int(5),
            intervalSec: -1n,
            intervalUsec: BigInt.asIntN(64, big()),
            valueSec: 0n,
            valueUsec: 0n,
          } as never,
        );
      })],
    ["posix timers/mlockall", () =>
      edit(coreName(pid), TaskCoreSchema, (m) => {
        m.posixTimers.push(create(PosixTimerSchema, {
          id: r.pick([-1, 0, 7, n32()]),
          signo: r.pick([0, 14, 65, 1000]),
          notify: r.int(9),
          notifyTid: r.pick([0, pid, n32()]),
          valueNsec: BigInt.asIntN(64, big()),
          intervalSec: r.pick([-1n, 0n, 5n]),
        }));
        if (r.int(2)) m.posixTimers.push(m.posixTimers[0]);
        if (r.int(4) === 0) {
          m.posixTimers = Array.from(
            { length: 70_000 },
            (_, id) => create(PosixTimerSchema, { id }),
          );
        }
        m.mlockFuture = r.int(5);
      })],
    ["locks", () => {
      const lock = create(FileLockSchema, {
        kind: r.int(5),
        start: r.pick([0n, 5n, BigInt.asUintN(64, big())]),
        end: r.pick([0n, 4n, BigInt.asUintN(64, big())]),
        fd: r.pick([0, 1, n32()]),
      });
      if (r.int(2)) edit(FILES, FilesImageSchema, (m) => r.pick(m.files).locks.push(lock));
      else edit(fdName(pid), FdTableSchema, (m) => m.locks.push(lock));
    }],
    ["vma advice/mlock", () =>
      edit(mmName(pid), MmImageSchema, (m) => {
        const v = r.pick(m.vmas);
        v.advice = r.int(1024);
        v.mlock = r.int(5);
        v.sealed = !!r.int(2);
      })],
    ["core: missing mm/creds", () =>
      edit(coreName(pid), TaskCoreSchema, (m) => {
        if (r.int(2)) m.mm = undefined;
        else m.creds = undefined;
      })],
    ["core pid/cwd", () =>
      edit(coreName(pid), TaskCoreSchema, (m) => {
        if (r.int(2)) m.pid = n32();
        else m.cwdFileId = r.int(1000);
      })],
    ["fds", () =>
      edit(fdName(pid), FdTableSchema, (m) => {
        if (r.int(2)) m.fds.push(...m.fds);
        else if (m.fds.length) r.pick(m.fds).fd = n32();
      })],
    ["files", () =>
      edit(FILES, FilesImageSchema, (m) => {
        const f = r.pick(m.files);
        const w = r.int(4);
        if (w === 0) f.kind = r.int(20);
        else if (w === 1) f.id = m.files[0].id;
        else if (w === 2 && f.reg) {
          f.reg.path = r.pick(["", "relative", "/a\0b", "/" + "x".repeat(5000)]);
        } else m.files.push(...m.files);
      })],
    ["inventory pids/files", () =>
      edit(INVENTORY, InventorySchema, (m) => {
        const w = r.int(4);
        if (w === 0) m.pids = Array.from({ length: 40_000 }, (_, i) => i + 1);
        else if (w === 1) m.rootPid = n32();
        else if (w === 2) {
          m.files[r.int(m.files.length)].name = r.pick(["../x.img", "/etc/passwd", "", "a/b"]);
        } else m.formatVersion = r.pick([0, 2, 0xffffffff]);
      })],
  ];
  const [what, fn] = r.pick(cases);
  fn();
  return what;
}

/** Raw damage: bytes of the files as they are on disk. */
function raw(
  r: Rng,
  files: Map<string, Uint8Array>,
  pagesSize: bigint,
): { what: string; pagesSize: bigint } {
  const names = [...files.keys()];
  const name = r.pick(names);
  const b = files.get(name)!;
  const w = r.int(9);
  if (w === 0 && b.length) {
    const c = b.slice();
    c[r.int(c.length)] ^= 1 << r.int(8);
    files.set(name, c);
    return { what: `bit flip in ${name}`, pagesSize };
  }
  if (w === 1) {
    files.set(name, b.slice(0, r.int(b.length)));
    return { what: `truncated ${name}`, pagesSize };
  }
  if (w === 2) {
    const c = new Uint8Array(b.length + 1 + r.int(64));
    c.set(b);
    c.set(r.bytes(c.length - b.length), b.length);
    files.set(name, c);
    return { what: `extended ${name}`, pagesSize };
  }
  if (w === 3) {
    files.set(name, r.bytes(r.int(4096)));
    return { what: `random ${name}`, pagesSize };
  }
  if (w === 4) {
    const other = r.pick(names);
    files.set(name, files.get(other)!);
    return { what: `${other} in place of ${name}`, pagesSize };
  }
  if (w === 5 && b.length >= HEADER_SIZE) {
    const c = b.slice();
    const dv = new DataView(c.buffer);
    const field = r.pick([8, 12, 16, 20]);
    dv.setUint32(field, r.pick([0, 1, 2, 7, 0xffffffff, r.int(1 << 30)]), true);
    files.set(name, c);
    return { what: `header field ${field} of ${name}`, pagesSize };
  }
  if (w === 6) {
    files.delete(name);
    return { what: `missing ${name}`, pagesSize };
  }
  if (w === 7) {
    // The pages file truncated or grown (its content is checked natively).
    return {
      what: "pages size",
      pagesSize: r.pick([0n, 4096n, pagesSize - 4096n, pagesSize + 4096n]),
    };
  }
  // Payload damage re-sealed, so it reaches the protobuf decoder.
  const k = kindOf(name);
  if (!k) return { what: "none", pagesSize };
  const payload = decodeImage(name, b).payload.slice();
  const m = r.int(3);
  let p: Uint8Array = payload;
  if (m === 0 && payload.length) payload[r.int(payload.length)] = r.int(256);
  else if (m === 1) p = payload.subarray(0, r.int(payload.length));
  else {
    const ins = r.bytes(1 + r.int(16));
    const at = r.int(payload.length);
    p = new Uint8Array([...payload.subarray(0, at), ...ins, ...payload.subarray(at)]);
  }
  reseal(files, name, k[0], p);
  return { what: `re-sealed payload damage in ${name}`, pagesSize };
}

Deno.test("fuzz: image readers, validator and plan builder with damaged inputs", async () => {
  const real = await dumpCounter(true);
  try {
    // The undamaged set is accepted and yields a plan.
    const clean = parseImageSet(real.dir, memorySource(real.files, real.pagesSize));
    assert(buildPlan(clean).length > 0);

    const seed = Number(Deno.env.get("CKPT_FUZZ_SEED") ?? Date.now() % 0xffffffff);
    const r = rng(seed);
    const outcomes = new Map<string, number>();
    const t0 = performance.now();
    let slowest = 0;
    const cost = new Map<string, number>();
    for (let i = 0; i < ITERATIONS; i++) {
      const files = new Map(real.files);
      let pagesSize = real.pagesSize;
      let what: string;
      const t = performance.now();
      try {
        if (r.int(2)) what = structured(r, files, real.pid);
        else ({ what, pagesSize } = raw(r, files, pagesSize));
      } catch (err) {
        throw new Error(`seed ${seed} input ${i}: building the input failed: ${err}`);
      }
      try {
        const set = parseImageSet(real.dir, memorySource(files, pagesSize));
        buildPlan(set);
        outcomes.set("accepted", (outcomes.get("accepted") ?? 0) + 1);
      } catch (err) {
        if (!(err instanceof CkptError)) {
          throw new Error(
            `seed ${seed} input ${i} (${what}): ${(err as Error)?.name}: ${
              (err as Error)?.message
            }`,
          );
        }
        assert(!err.message.includes("\n"), `one line: ${err.message}`);
        const key = err.message.replace(/^[^:]*\/([^/:]+):/, "$1:").replace(/[0-9a-fx]{2,}/g, "N")
          .slice(0, 60);
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      }
      const dt = performance.now() - t;
      slowest = Math.max(slowest, dt);
      const cat = what.replace(/ in .*| of .*/, "");
      cost.set(cat, (cost.get(cat) ?? 0) + dt);
    }
    const ms = performance.now() - t0;
    console.log(
      `fuzz: ${ITERATIONS} inputs in ${(ms / 1000).toFixed(1)} s (seed ${seed}, slowest ${
        slowest.toFixed(0)
      } ms), ${outcomes.size} distinct outcomes`,
    );
    if (Deno.env.get("CKPT_FUZZ_PROFILE")) {
      console.log([...cost].sort((a, b) => b[1] - a[1]).slice(0, 8));
    }
    assert(slowest < 2000, `no input may take long (slowest ${slowest} ms)`);
    assert(outcomes.size > 30, "the mutations reach many different checks");
  } finally {
    await Deno.remove(real.root, { recursive: true });
  }
});

Deno.test("ckpt restore of a real dump with one flipped byte fails naming the file, starts nothing", async () => {
  const real = await dumpCounter(false);
  const pid = real.pid;
  try {
    const size = Number(real.pagesSize);
    const payloadByte = (name: string) =>
      HEADER_SIZE + Math.floor((real.files.get(name)!.length - HEADER_SIZE) / 2);
    const targets: [string, number][] = [
      [coreName(pid), payloadByte(coreName(pid))],
      [mmName(pid), payloadByte(mmName(pid))],
      [pagemapName(pid), payloadByte(pagemapName(pid))],
      [FILES, payloadByte(FILES)],
      [fdName(pid), payloadByte(fdName(pid))],
      [INVENTORY, payloadByte(INVENTORY)],
      [INVENTORY, 21], // its own CRC field
      [pagesName(pid), Math.floor(size / 2)],
      [pagesName(pid), size - 1],
      [pagesName(pid), 100], // inside the header page, past the magic
    ];
    const r = rng(7);
    for (const n of [coreName(pid), mmName(pid), FILES]) {
      targets.push([n, r.int(real.files.get(n)!.length)]);
    }
    for (let i = 0; i < 2; i++) targets.push([pagesName(pid), PAGE_SIZE + r.int(size - PAGE_SIZE)]);

    for (const [name, off] of targets) {
      const path = `${real.dir}/${name}`;
      const f = await Deno.open(path, { read: true, write: true });
      const b = new Uint8Array(1);
      await f.seek(off, Deno.SeekMode.Start);
      await f.read(b);
      await f.seek(off, Deno.SeekMode.Start);
      await f.write(new Uint8Array([b[0] ^ 0x10]));
      try {
        const res = await runCkpt(["restore", "-D", real.dir, "-d"]);
        assertEquals(res.code, 1, `${name}@${off}: ${res.stdout}${res.stderr}`);
        assertMatch(res.stderr, /^ckpt: [^\n]*\n$/, `${name}@${off}: one line`);
        assert(res.stderr.includes(name), `${name}@${off}: names the file: ${res.stderr}`);
        if (name.startsWith("pages-") && off >= PAGE_SIZE) {
          assertMatch(res.stderr, /checksum mismatch in the run at offset 0x[0-9a-f]+ \(vaddr 0x/);
        }
        assert(gone(pid), `${name}@${off}: nothing with pid ${pid} was started`);
      } finally {
        await f.seek(off, Deno.SeekMode.Start);
        await f.write(b);
        f.close();
      }
    }
    // Undamaged again, the same directory restores.
    const ok = await runCkpt(["restore", "-D", real.dir, "-d"]);
    assertEquals(ok.code, 0, ok.stderr);
    assert(alive(pid));
  } finally {
    await killAndForget(pid);
    await Deno.remove(real.root, { recursive: true });
  }
});
