// The images' protobuf codec (src/images/codec.ts) against @bufbuild/protobuf
// itself: for every message type of images.proto, random messages (values at
// the edges of each type, nested and repeated fields, unicode) encode to
// exactly bufbuild's bytes and decode to exactly its messages, key order
// included; damaged bytes decode (or fail) exactly as bufbuild does.
import {
  create,
  type DescField,
  type DescMessage,
  fromBinary,
  type Message,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";
import { assert, assertEquals } from "../src/deps/std_assert.ts";
import * as pb from "../src/gen/ckpt/images_pb.ts";
import {
  compiles,
  decodeMessage,
  encodeMessage,
  fallbacks,
  newMessage,
  thresholds,
} from "../src/images/codec.ts";

// Every message, however small, through the generated code.
Object.assign(thresholds, { decodeBytes: 0, encodeItems: 0, creates: 0 });

const schemas = (Object.values(pb) as unknown[]).filter((v): v is DescMessage =>
  typeof v === "object" && v !== null && (v as { kind?: string }).kind === "message"
);

// A small deterministic PRNG, so a failure can be replayed.
let seed = 0x2545f491;
function rnd(n: number): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) % n;
}
const pick = <T>(xs: T[]): T => xs[rnd(xs.length)];

function scalar(t: ScalarType): unknown {
  switch (t) {
    case ScalarType.INT32:
      return pick([0, 1, -1, 127, 128, 300, -0x80000000, 0x7fffffff, rnd(1 << 30) - (1 << 29)]);
    case ScalarType.UINT32:
      return pick([0, 1, 127, 128, 16384, 0x7fffffff, 0x80000000, 0xffffffff, rnd(1 << 30)]);
    case ScalarType.INT64:
      return pick([0n, 1n, -1n, 2n ** 53n, -(2n ** 63n), 2n ** 63n - 1n, BigInt(rnd(1e9))]);
    case ScalarType.UINT64:
      return pick([0n, 1n, 2n ** 32n, 2n ** 53n + 1n, 2n ** 64n - 1n, BigInt(rnd(1e9)) << 20n]);
    case ScalarType.BOOL:
      return rnd(2) === 1;
    case ScalarType.STRING:
      return pick([
        "",
        "a",
        "/tmp/x y",
        "é\u0000ü",
        "\ufeffbom",
        "x".repeat(70),
        "日本語".repeat(30),
      ]);
    case ScalarType.BYTES:
      return new Uint8Array(Array.from({ length: pick([0, 1, 5, 200]) }, () => rnd(256)));
    default:
      throw new Error(`scalar type ${t} is not in images.proto`);
  }
}

function value(f: DescField, depth: number): unknown {
  switch (f.fieldKind) {
    case "scalar":
      return scalar(f.scalar);
    case "enum":
      return pick(f.enum.values).number;
    case "message":
      return randomMessage(f.message, depth + 1);
    case "list": {
      const n = depth > 2 ? 0 : pick([0, 1, 3]);
      return Array.from(
        { length: n },
        () =>
          f.listKind === "message"
            ? randomMessage(f.message, depth + 1)
            : f.listKind === "enum"
            ? pick(f.enum.values).number
            : scalar(f.scalar),
      );
    }
    default:
      throw new Error(`field kind ${f.fieldKind} is not in images.proto`);
  }
}

function randomInit(d: DescMessage, depth = 0): Record<string, unknown> {
  const init: Record<string, unknown> = {};
  for (const f of d.fields) {
    if (rnd(3) === 0) continue; // left at its zero value
    if (f.fieldKind === "message" && depth > 2) continue;
    init[f.localName] = value(f, depth);
  }
  return init;
}

function randomMessage(d: DescMessage, depth = 0): Message {
  return create(d, randomInit(d, depth));
}

/** Keys in order, recursively: the decoded messages must have bufbuild's shape. */
function shape(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(shape);
  if (v instanceof Uint8Array || typeof v !== "object" || v === null) return typeof v;
  return Object.entries(v).map(([k, x]) => [k, shape(x)]);
}

Deno.test("codec: every images.proto type is compiled", () => {
  assert(schemas.length > 30);
  for (const s of schemas) assert(compiles(s), `${s.typeName} falls back to bufbuild`);
});

Deno.test("codec: random messages encode and decode exactly as bufbuild", () => {
  for (const s of schemas) {
    for (let i = 0; i < 60; i++) {
      const m = randomMessage(s);
      const want = toBinary(s, m);
      const got = encodeMessage(s, m);
      assertEquals(got, want, `${s.typeName}: encoding #${i}`);
      const back = decodeMessage(s, want);
      assertEquals(back, fromBinary(s, want), `${s.typeName}: decoding #${i}`);
      assertEquals(shape(back), shape(fromBinary(s, want)), `${s.typeName}: shape #${i}`);
    }
  }
  assertEquals(fallbacks, { encode: 0, decode: 0, make: 0 }, "the fast path was not taken");
});

Deno.test("codec: damaged bytes give bufbuild's result or its error", () => {
  const outcome = (f: () => unknown) => {
    try {
      return { ok: f() };
    } catch (err) {
      return { err: String(err) };
    }
  };
  for (const s of schemas) {
    for (let i = 0; i < 40; i++) {
      const good = toBinary(s, randomMessage(s));
      const bad = new Uint8Array(good);
      const how = rnd(4);
      let input: Uint8Array = bad;
      if (how === 0 && bad.length) bad[rnd(bad.length)] ^= 1 << rnd(8);
      else if (how === 1) input = bad.subarray(0, rnd(bad.length + 1));
      else if (how === 2 && bad.length) bad[rnd(bad.length)] = rnd(256);
      else input = new Uint8Array([...bad, ...Array.from({ length: 4 }, () => rnd(256))]);
      assertEquals(
        outcome(() => decodeMessage(s, input)),
        outcome(() => fromBinary(s, input)),
        `${s.typeName}: damage #${i} (${how})`,
      );
    }
  }
  assert(
    fallbacks.decode > 0 && fallbacks.decode < schemas.length * 40,
    "no damage was decoded fast",
  );
});

Deno.test("codec: values bufbuild refuses to encode are refused the same way", () => {
  const m = create(pb.UnixSocketFileSchema, { fd: 3 });
  (m as unknown as { rcvbuf: number }).rcvbuf = -1; // uint32
  let want = "", got = "";
  try {
    toBinary(pb.UnixSocketFileSchema, m);
  } catch (err) {
    want = String(err);
  }
  try {
    encodeMessage(pb.UnixSocketFileSchema, m);
  } catch (err) {
    got = String(err);
  }
  assert(want !== "");
  assertEquals(got, want);
});

Deno.test("codec: newMessage makes exactly what create makes", () => {
  for (const s of schemas) {
    for (let i = 0; i < 40; i++) {
      const init = randomInit(s);
      const before = fallbacks.make;
      const got = newMessage(s, init);
      assertEquals(got, create(s, init), `${s.typeName}: #${i}`);
      assertEquals(shape(got), shape(create(s, init)), `${s.typeName}: shape #${i}`);
      assertEquals(fallbacks.make, before, `${s.typeName}: #${i} went to create`);
    }
    assertEquals(newMessage(s), create(s));
    // Values create converts: plain objects for messages, arrays for bytes.
    for (const f of s.fields) {
      const raw = f.fieldKind === "message"
        ? { [f.localName]: {} }
        : f.fieldKind === "scalar" && f.scalar === ScalarType.BYTES
        ? { [f.localName]: [1, 2, 3] }
        : undefined;
      if (raw) assertEquals(newMessage(s, raw), create(s, raw), `${s.typeName}.${f.localName}`);
    }
  }
});
