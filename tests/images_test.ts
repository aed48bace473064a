// Image robustness: real images written through ImageDir must show cleanly,
// and every kind of damage must give one `ckpt: FILE: ...` line, exit != 0.
import { assert, assertEquals, assertMatch, assertThrows } from "../src/deps/std_assert.ts";
import { show } from "../mod.ts";
import { ImageError } from "../src/errors.ts";
import { crc32c } from "../src/images/crc32c.ts";
import { coreName, INVENTORY, pagemapName, pagesName } from "../src/images/dir.ts";
import {
  decodeImage,
  encodeImage,
  FORMAT_VERSION,
  HEADER_SIZE,
  ImageKind,
  PAGE_SIZE,
  pagesHeader,
} from "../src/images/format.ts";
import { kindOfName } from "../src/images/kinds.ts";
import type { ShownDir, ShownMessage, ShownPages } from "../src/images/show.ts";
import { runCkpt } from "./helpers/ckpt.ts";
import { buildImages, NR_PAGES, PID } from "./helpers/images.ts";

const enc = new TextEncoder();

Deno.test("crc32c matches the Castagnoli check value", () => {
  assertEquals(crc32c(enc.encode("123456789")), 0xE3069283);
  assertEquals(crc32c(new Uint8Array()), 0);
  // Both the 8-byte and the byte-at-a-time loops, and chaining via seed.
  const data = enc.encode("The quick brown fox jumps over the lazy dog, twice over.");
  assertEquals(crc32c(data.subarray(13), crc32c(data.subarray(0, 13))), crc32c(data));
});

Deno.test("encodeImage/decodeImage round trip", () => {
  const payload = enc.encode("some protobuf bytes");
  const img = encodeImage(ImageKind.Core, payload);
  assertEquals(img.length, HEADER_SIZE + payload.length);
  assertEquals(new TextDecoder().decode(img.subarray(0, 8)), "CKPTIMG1");
  const d = decodeImage("x.img", img, ImageKind.Core);
  assertEquals(d.kind, ImageKind.Core);
  assertEquals(d.version, FORMAT_VERSION);
  assertEquals(d.payload, payload);
  const empty = decodeImage("e.img", encodeImage(ImageKind.Files, new Uint8Array()));
  assertEquals(empty.payload.length, 0);
  assertEquals(decodeImage("p.img", pagesHeader()).kind, ImageKind.Pages);
});

Deno.test("decodeImage rejects damage with an ImageError naming the file", () => {
  const good = encodeImage(ImageKind.Mm, enc.encode("payload"));
  const cases: [Uint8Array, RegExp][] = [
    [good.slice(0, 5), /bad magic/],
    [good.slice(0, 20), /truncated header/],
    [good.slice(0, good.length - 1), /truncated/],
    [new Uint8Array([...good, 0]), /unexpected bytes/],
    [
      (() => {
        const b = good.slice();
        b[HEADER_SIZE + 2] ^= 1;
        return b;
      })(),
      /checksum mismatch/,
    ],
    [
      (() => {
        const b = good.slice();
        new DataView(b.buffer).setUint32(8, 99, true);
        return b;
      })(),
      /version 99 is newer/,
    ],
  ];
  for (const [data, re] of cases) {
    const err = assertThrows(() => decodeImage("mm-1.img", data), ImageError);
    assertMatch(err.message, /^mm-1\.img: /);
    assertMatch(err.message, re);
  }
  const err = assertThrows(() => decodeImage("f", good, ImageKind.Core), ImageError);
  assertMatch(err.message, /expected a Core image, found Mm/);
});

Deno.test("file names map to the kinds ckpt writes there", () => {
  assertEquals(kindOfName(INVENTORY)?.kind, ImageKind.Inventory);
  assertEquals(kindOfName(coreName(7))?.kind, ImageKind.Core);
  assertEquals(kindOfName(coreName(7))?.pid, 7);
  assertEquals(kindOfName(pagesName(12))?.kind, ImageKind.Pages);
  assertEquals(kindOfName("core-x.img"), undefined);
  assertEquals(kindOfName("notes.txt"), undefined);
});

async function withImages(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ckpt-images-test-" });
  try {
    buildImages(`${dir}/img`);
    await fn(`${dir}/img`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("show() reads a whole directory, inventory first, with pages per task", async () => {
  await withImages(async (dir) => {
    const r = await show(dir) as ShownDir;
    assertEquals(r.images.map((i) => i.file), [
      INVENTORY,
      coreName(PID),
      pagemapName(PID),
      pagesName(PID),
    ]);
    const core = r.images[1] as ShownMessage;
    const payload = core.payload as { comm: string; threads: Record<string, unknown>[] };
    assertEquals(payload.comm, "counter");
    // Large bytes are summarised, registers decoded.
    assertEquals(payload.threads[0].xsave, { bytes: 2696, crc32c: hex(0xaa, 2696) });
    const regs = payload.threads[0].regs as { decoded: Record<string, string> };
    assertEquals(regs.decoded.rip, "0x401000");
    const pages = r.images[3] as ShownPages;
    assertEquals(pages.pages, NR_PAGES);
    assertEquals(r.tasks, [{
      pid: PID,
      pages_file: pagesName(PID),
      pages_files: 1,
      runs: 2,
      pages: NR_PAGES,
      bytes: NR_PAGES * PAGE_SIZE,
      in_parent_pages: 0,
    }]);
  });
});

function hex(byte: number, n: number): string {
  return crc32c(new Uint8Array(n).fill(byte)).toString(16).padStart(8, "0");
}

Deno.test("./ckpt show prints a directory and single files as JSON", async () => {
  await withImages(async (dir) => {
    const r = await runCkpt(["show", dir]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(r.stderr, "");
    const out = JSON.parse(r.stdout);
    assertEquals(out.images[0].kind, "Inventory");
    assertEquals(out.tasks[0].pages, NR_PAGES);
    assert(r.stdout.length < 20_000, "page contents or raw bytes leaked into the output");

    const f = await runCkpt(["show", "--compact", `${dir}/${coreName(PID)}`]);
    assertEquals(f.code, 0, f.stderr);
    assertEquals(f.stdout.trim().split("\n").length, 1);
    const core = JSON.parse(f.stdout);
    assertEquals(core.file, `${dir}/${coreName(PID)}`);
    assertEquals(core.kind, "Core");
    assertEquals(core.version, FORMAT_VERSION);
    assertEquals(core.payload.pid, PID);

    const p = await runCkpt(["show", `${dir}/${pagesName(PID)}`]);
    assertEquals(p.code, 0, p.stderr);
    assertEquals(JSON.parse(p.stdout), {
      file: `${dir}/${pagesName(PID)}`,
      kind: "Pages",
      version: FORMAT_VERSION,
      size: PAGE_SIZE * (NR_PAGES + 1),
      pages: NR_PAGES,
    });
  });
});

interface Damage {
  what: string;
  file: string;
  damage(b: Uint8Array, dir: string): Uint8Array;
  expect: RegExp;
}

const setU32 = (off: number, v: number) => (b: Uint8Array) => {
  const c = b.slice();
  new DataView(c.buffer).setUint32(off, v, true);
  return c;
};

const DAMAGES: Damage[] = [
  {
    what: "one flipped payload byte",
    file: coreName(PID),
    damage: (b) => {
      const c = b.slice();
      c[HEADER_SIZE + 5] ^= 0x40;
      return c;
    },
    expect: /checksum mismatch/,
  },
  {
    what: "truncation",
    file: coreName(PID),
    damage: (b) => b.slice(0, b.length - 100),
    expect: /truncated: header says/,
  },
  {
    what: "junk appended",
    file: pagemapName(PID),
    damage: (b) => new Uint8Array([...b, 1, 2, 3]),
    expect: /3 unexpected bytes/,
  },
  {
    what: "foreign magic",
    file: coreName(PID),
    damage: (b) => {
      const c = b.slice();
      c.set(enc.encode("ELF\x7fIMG1"));
      return c;
    },
    expect: /bad magic/,
  },
  {
    what: "format version 99",
    file: coreName(PID),
    damage: setU32(8, 99),
    expect: /version 99 is newer/,
  },
  {
    what: "wrong kind for its name",
    file: coreName(PID),
    damage: (_b, dir) => Deno.readFileSync(`${dir}/${pagemapName(PID)}`),
    expect: /expected a Core image, found Pagemap/,
  },
  {
    what: "unknown kind",
    file: "extra.img",
    damage: () => encodeImage(200 as ImageKind, enc.encode("x")),
    expect: /unknown image kind 200/,
  },
  {
    what: "random bytes",
    file: coreName(PID),
    damage: (b) => crypto.getRandomValues(new Uint8Array(b.length)),
    expect: /bad magic/,
  },
  { what: "empty file", file: coreName(PID), damage: () => new Uint8Array(), expect: /empty/ },
  {
    what: "pages file version 99",
    file: pagesName(PID),
    damage: setU32(8, 99),
    expect: /pages format version 99/,
  },
  {
    what: "pages file cut inside a page",
    file: pagesName(PID),
    damage: (b) => b.slice(0, b.length - 10),
    expect: /whole number of pages/,
  },
  {
    what: "pages header cut short",
    file: pagesName(PID),
    damage: (b) => b.slice(0, 100),
    expect: /truncated pages header/,
  },
];

for (const d of DAMAGES) {
  Deno.test(`./ckpt show: ${d.what} is one clear error naming ${d.file}`, async () => {
    await withImages(async (dir) => {
      const path = `${dir}/${d.file}`;
      const orig = (() => {
        try {
          return Deno.readFileSync(path);
        } catch {
          return new Uint8Array();
        }
      })();
      Deno.writeFileSync(path, d.damage(orig, dir));
      for (const target of [path, dir]) {
        const r = await runCkpt(["show", target]);
        assert(r.code !== 0, `${target}: exit 0 on damage`);
        const lines = r.stderr.trimEnd().split("\n");
        assertEquals(lines.length, 1, r.stderr);
        assertMatch(lines[0], /^ckpt: /);
        assert(lines[0].includes(path), `${lines[0]} does not name ${path}`);
        assertMatch(lines[0], d.expect);
        assertEquals(r.stdout, "");
      }
    });
  });
}

Deno.test("./ckpt show on a directory without an inventory says so", async () => {
  await withImages(async (dir) => {
    await Deno.remove(`${dir}/${INVENTORY}`);
    const r = await runCkpt(["show", dir]);
    assertEquals(r.code, 1);
    assertMatch(r.stderr, new RegExp(`^ckpt: ${dir}: no inventory\\.img`));
    assertEquals(r.stderr.trimEnd().split("\n").length, 1);
  });
});

Deno.test("./ckpt show: a pages file shorter than its pagemap is named", async () => {
  await withImages(async (dir) => {
    // Drop one page and the inventory's size record, so only the pagemap can tell.
    const path = `${dir}/${pagesName(PID)}`;
    Deno.truncateSync(path, PAGE_SIZE * NR_PAGES);
    const r = await runCkpt(["show", `${dir}/${pagesName(PID)}`]);
    assertEquals(r.code, 0, "a pages file alone cannot know its length");
    const d = await runCkpt(["show", dir]);
    assertEquals(d.code, 1);
    assertMatch(d.stderr, new RegExp(`^ckpt: ${path}: `));
  });
});

Deno.test("./ckpt show: missing path and usage errors", async () => {
  const r = await runCkpt(["show", "/nonexistent/ckpt-images"]);
  assertEquals(r.code, 1);
  assertEquals(r.stderr, "ckpt: /nonexistent/ckpt-images: no such file or directory\n");
  const u = await runCkpt(["show"]);
  assertEquals(u.code, 2);
  assertMatch(u.stderr, /^ckpt: show: give exactly one/);
});

Deno.test("show() rejects a damaged image with an ImageError naming it", async () => {
  await withImages(async (dir) => {
    const path = `${dir}/${pagemapName(PID)}`;
    const b = Deno.readFileSync(path);
    b[b.length - 1] ^= 0xff;
    Deno.writeFileSync(path, b);
    for (const target of [path, dir]) {
      const err = await show(target).then(() => undefined, (e) => e);
      assert(err instanceof ImageError, String(err));
      assertEquals(err.file, path);
    }
  });
});
