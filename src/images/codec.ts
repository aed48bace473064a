// Protobuf encoding of images, byte for byte what @bufbuild/protobuf's
// toBinary/fromBinary give, several times faster: its reflective codec
// spends microseconds per field, and a dump of a server holds a few
// hundred thousand fields (ten thousand sockets and their epoll targets);
// decoding them alone took longer than everything else restore does. For
// each message type a plain function is generated from the schema, which
// reads and writes the fields by name and builds messages as object
// literals of one shape.
//
// Only what images.proto uses is compiled (proto3 scalars, enums, bytes,
// strings, nested and repeated messages, packed scalars); a schema with
// anything else, and any input out of the ordinary (an unknown field, a
// field twice, a wrong wire type, truncation, invalid UTF-8, a value out of
// its type's range, unknown fields kept on a message), goes to bufbuild
// itself, so errors and edge cases are exactly its own.
import {
  create,
  type DescField,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";

/** How often bufbuild was asked instead (tests: never for ordinary input). */
export const fallbacks = { encode: 0, decode: 0, make: 0 };

/** Returned by a generated create: let bufbuild do this one. */
const SLOW = Symbol("slow");

/** Thrown inside the generated code: let bufbuild do this one. */
class Fallback extends Error {}
const FALLBACK = new Fallback("fallback");

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const utf8Enc = new TextEncoder();

/** Input being decoded. */
class Reader {
  p = 0;
  constructor(readonly b: Uint8Array) {}

  /** A varint's low 32 bits (as bufbuild's uint32/int32 read them). */
  v32(): number {
    const b = this.b;
    let p = this.p;
    let x = b[p++];
    if (x < 0x80) {
      this.p = p;
      return x;
    }
    x &= 0x7f;
    for (let s = 7; s < 70; s += 7) {
      const c = b[p++];
      if (c === undefined) throw FALLBACK;
      if (s < 32) x |= (c & 0x7f) << s;
      if (c < 0x80) {
        this.p = p;
        return x >>> 0;
      }
    }
    throw FALLBACK; // longer than 10 bytes
  }

  /** A varint as [lo, hi] 32-bit halves, kept in fields (no array). */
  lo = 0;
  hi = 0;
  v64(): void {
    const b = this.b;
    let p = this.p;
    let lo = 0, hi = 0;
    for (let s = 0; s < 70; s += 7) {
      const c = b[p++];
      if (c === undefined) throw FALLBACK;
      const v = c & 0x7f;
      if (s < 28) lo |= v << s;
      else if (s === 28) {
        lo |= v << 28;
        hi |= v >>> 4;
      } else hi |= v << (s - 32);
      if (c < 0x80) {
        this.p = p;
        this.lo = lo >>> 0;
        this.hi = hi >>> 0;
        return;
      }
    }
    throw FALLBACK;
  }

  u64(): bigint {
    this.v64();
    const { lo, hi } = this;
    if (hi < 0x200000) return BigInt(hi * 0x1_0000_0000 + lo);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  i64(): bigint {
    this.v64();
    const { lo, hi } = this;
    if (hi < 0x200000) return BigInt(hi * 0x1_0000_0000 + lo);
    return BigInt.asIntN(64, (BigInt(hi) << 32n) | BigInt(lo));
  }

  bool(): boolean {
    this.v64();
    return this.lo !== 0 || this.hi !== 0;
  }

  /** The end of a length-delimited record starting here. */
  len(end: number): number {
    const n = this.v32();
    const e = this.p + n;
    if (n > 0x7fffffff || e > end) throw FALLBACK;
    return e;
  }

  bytes(end: number): Uint8Array {
    const e = this.len(end);
    const out = this.b.subarray(this.p, e);
    this.p = e;
    return out;
  }

  string(end: number): string {
    const e = this.len(end);
    const b = this.b;
    let s = "";
    let ascii = e - this.p <= 64;
    for (let i = this.p; ascii && i < e; i++) {
      if (b[i] > 0x7f) ascii = false;
      else s += String.fromCharCode(b[i]);
    }
    if (!ascii) {
      try {
        s = utf8.decode(b.subarray(this.p, e));
      } catch {
        throw FALLBACK; // invalid UTF-8: bufbuild says what
      }
    }
    this.p = e;
    return s;
  }
}

/** Output being encoded: length-delimited records reserve one byte for
 * their length and move their body when it needs more. */
class Writer {
  b = new Uint8Array(1024);
  p = 0;

  room(n: number): void {
    if (this.p + n <= this.b.length) return;
    let len = this.b.length * 2;
    while (len < this.p + n) len *= 2;
    const next = new Uint8Array(len);
    next.set(this.b.subarray(0, this.p));
    this.b = next;
  }

  v32(v: number): void {
    this.room(5);
    const b = this.b;
    while (v > 0x7f) {
      b[this.p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    b[this.p++] = v;
  }

  /** A varint of 64 bits given as unsigned halves. */
  v64(lo: number, hi: number): void {
    this.room(10);
    const b = this.b;
    while (hi !== 0 || lo > 0x7f) {
      b[this.p++] = (lo & 0x7f) | 0x80;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    b[this.p++] = lo;
  }

  u32(v: unknown): void {
    if (typeof v !== "number" || !(v >= 0 && v <= 0xffffffff) || v % 1 !== 0) throw FALLBACK;
    this.v32(v);
  }

  i32(v: unknown): void {
    if (typeof v !== "number" || !(v >= -0x80000000 && v <= 0x7fffffff) || v % 1 !== 0) {
      throw FALLBACK;
    }
    if (v >= 0) this.v32(v);
    else this.v64(v >>> 0, 0xffffffff);
  }

  u64(v: unknown): void {
    if (typeof v !== "bigint") throw FALLBACK;
    // Most values (inodes, sizes) are far below 2^53: no BigInt arithmetic.
    const n = Number(v);
    if (n >= 0 && n < 0x20_0000_0000_0000) return this.unsigned(n);
    if (v < 0n || v > 0xffffffffffffffffn) throw FALLBACK;
    this.v64(Number(v & 0xffffffffn), Number(v >> 32n));
  }

  i64(v: unknown): void {
    if (typeof v !== "bigint") throw FALLBACK;
    const n = Number(v);
    if (n >= 0 && n < 0x20_0000_0000_0000) return this.unsigned(n);
    if (v < -0x8000000000000000n || v > 0x7fffffffffffffffn) throw FALLBACK;
    const u = BigInt.asUintN(64, v);
    this.v64(Number(u & 0xffffffffn), Number(u >> 32n));
  }

  /** A safe non-negative integer as a varint. */
  private unsigned(n: number): void {
    if (n <= 0xffffffff) this.v32(n);
    else this.v64(n % 0x1_0000_0000, Math.floor(n / 0x1_0000_0000));
  }

  bool(v: unknown): void {
    if (typeof v !== "boolean") throw FALLBACK;
    this.room(1);
    this.b[this.p++] = v ? 1 : 0;
  }

  bytes(v: unknown): void {
    if (!(v instanceof Uint8Array)) throw FALLBACK;
    this.v32(v.length);
    this.room(v.length);
    this.b.set(v, this.p);
    this.p += v.length;
  }

  string(v: unknown): void {
    if (typeof v !== "string" || !v.isWellFormed()) throw FALLBACK;
    this.bytes(utf8Enc.encode(v));
  }

  /** Starts a length-delimited record; returns where its body starts. */
  fork(): number {
    this.room(1);
    this.p++;
    return this.p;
  }

  join(start: number): void {
    const len = this.p - start;
    let size = 1;
    for (let v = len; v > 0x7f; v >>>= 7) size++;
    if (size > 1) {
      this.room(size - 1);
      this.b.copyWithin(start + size - 1, start, this.p);
      this.p += size - 1;
    }
    let at = start - 1;
    let v = len;
    while (v > 0x7f) {
      this.b[at++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.b[at] = v;
  }
}

const WIRE = { varint: 0, len: 2 } as const;
/** FeatureSet.FieldPresence: EXPLICIT (proto3 `optional`), IMPLICIT. */
const EXPLICIT = 1, IMPLICIT = 2;

/** Reader and writer method for a scalar type, or undefined if unsupported. */
function scalarCall(t: ScalarType): { read: string; write: string; zero: string } | undefined {
  switch (t) {
    case ScalarType.INT32:
      return { read: "r.v32() | 0", write: "i32", zero: "0" };
    case ScalarType.UINT32:
      return { read: "r.v32()", write: "u32", zero: "0" };
    case ScalarType.INT64:
      return { read: "r.i64()", write: "i64", zero: "0n" };
    case ScalarType.UINT64:
      return { read: "r.u64()", write: "u64", zero: "0n" };
    case ScalarType.BOOL:
      return { read: "r.bool()", write: "bool", zero: "false" };
    case ScalarType.STRING:
      return { read: "r.string(end)", write: "string", zero: '""' };
    case ScalarType.BYTES:
      return { read: "r.bytes(end)", write: "bytes", zero: "EMPTY" };
    default:
      return undefined;
  }
}

interface Compiled {
  encode: (w: Writer, m: unknown) => void;
  decode: (r: Reader, end: number) => unknown;
  /** create(schema, init), or SLOW when init is not in final form. */
  make: (init: Record<string, unknown> | undefined) => unknown;
}

// Every type's generated functions, by the index typeIndex gives it; the
// types of all schemas share them (FileEntry is compiled once whether
// reached from FilesImage or made on its own).
const E: Compiled["encode"][] = [], D: Compiled["decode"][] = [], C: Compiled["make"][] = [];
const typeIndex = new Map<DescMessage, number | null>();
const visiting = new Set<DescMessage>();

/** The index of d's generated functions (and its nested types'), or null
 * when d (or a type in it) uses what is not compiled, or is recursive.
 * Each type's code is generated on its first use: a schema names many
 * types an image never holds. */
function compileType(d: DescMessage): number | null {
  const known = typeIndex.get(d);
  if (known !== undefined) return known;
  if (visiting.has(d)) return null; // recursive: bufbuild bounds the depth
  visiting.add(d);
  let ok = typeCode(d, -1) !== undefined;
  for (const f of d.fields) if (f.message && compileType(f.message) === null) ok = false;
  visiting.delete(d);
  if (!ok) {
    typeIndex.set(d, null);
    return null;
  }
  const i = E.length;
  const generate = () => {
    new Function("E", "D", "C", "FALLBACK", "EMPTY", "SLOW", `"use strict";\n${typeCode(d, i)}`)(
      E,
      D,
      C,
      FALLBACK,
      new Uint8Array(0),
      SLOW,
    );
  };
  E.push((w, m) => (generate(), E[i](w, m)));
  D.push((r, end) => (generate(), D[i](r, end)));
  C.push((init) => (generate(), C[i](init)));
  typeIndex.set(d, i);
  return i;
}

/** The encoder E[i] and decoder D[i] of one message type, as source. */
function typeCode(d: DescMessage, i: number): string | undefined {
  if (d.file.edition !== 999) return undefined; // proto3 only (EDITION_PROTO3)
  const index = typeIndex;
  const init: string[] = [`$typeName: ${JSON.stringify(d.typeName)}`];
  // create(): the same message from an init object whose values are in
  // final form (messages of their types, Uint8Array bytes; else create
  // itself is asked), its members in create's order: one literal up to the
  // first field absent until set (a message, a proto3 `optional`), then
  // one assignment each, such a field skipped when not given.
  const checks: string[] = []; // values create would convert
  const literal: string[] = [`$typeName: ${JSON.stringify(d.typeName)}`];
  const sets: string[] = [];
  const empty = `EMPTY_${d.typeName.replaceAll(".", "_")}`;
  let late = false;
  const always = (name: string, expr: string) => {
    if (late) sets.push(`m[${name}] = ${expr};`);
    else literal.push(`${name}: ${expr}`);
  };
  const listCheck = (from: string, test: string) =>
    `v = ${from}; if (v != null) { if (!Array.isArray(v)) return SLOW; ` +
    `for (let k = 0; k < v.length; k++) { const x = v[k]; if (${test}) return SLOW; } }`;
  for (const m of d.members) {
    if (m.kind === "oneof") return undefined;
    const f = m as DescField;
    const name = JSON.stringify(f.localName);
    const from = `init[${name}]`;
    const absentUntilSet = f.fieldKind === "message" ||
      ((f.fieldKind === "scalar" || f.fieldKind === "enum") && f.presence === EXPLICIT);
    if (absentUntilSet) {
      late = true;
      if (f.fieldKind === "message") {
        checks.push(
          `v = ${from}; if (v != null && v.$typeName !== ${
            JSON.stringify(f.message.typeName)
          }) return SLOW;`,
        );
      } else if (f.fieldKind === "scalar" && f.scalar === ScalarType.BYTES) {
        checks.push(`if (Array.isArray(${from})) return SLOW;`);
      }
      sets.push(`if ((v = ${from}) != null) m[${name}] = v;`);
      continue;
    }
    if (f.fieldKind === "list") {
      init.push(`${name}: []`);
      if (f.listKind === "message") {
        const t = JSON.stringify(f.message.typeName);
        checks.push(listCheck(from, `x === null || typeof x !== "object" || x.$typeName !== ${t}`));
        // create maps a given list to a new one.
        always(name, `(v = ${from}) == null || v.length === 0 ? [] : v.slice()`);
      } else if (f.listKind === "scalar" && f.scalar === ScalarType.BYTES) {
        checks.push(listCheck(from, "Array.isArray(x)"));
        always(name, `(v = ${from}) == null || v.length === 0 ? [] : v.slice()`);
      } else always(name, `(v = ${from}) ?? []`);
    } else if (f.fieldKind === "scalar") {
      const zero = scalarCall(f.scalar)?.zero;
      init.push(`${name}: ${zero}`);
      if (f.scalar === ScalarType.BYTES) {
        checks.push(`if (Array.isArray(${from})) return SLOW;`);
        always(name, `(v = ${from}) == null ? ${empty} : v`);
      } else always(name, `(v = ${from}) != null ? v : ${zero}`);
    } else if (f.fieldKind === "enum") {
      const zero = f.enum.values[0].number;
      init.push(`${name}: ${zero}`);
      always(name, `(v = ${from}) != null ? v : ${zero}`);
    }
  }
  const enc: string[] = [];
  const dec: string[] = [];
  for (const f of d.fields.toSorted((a, b) => a.number - b.number)) {
    if (f.oneof || f.fieldKind === "map") return undefined;
    if ("longAsString" in f && f.longAsString) return undefined; // jstype = JS_STRING
    if (f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")) {
      // Well-known types have their own representations.
      if (f.delimitedEncoding || f.message.typeName.startsWith("google.protobuf.")) {
        return undefined;
      }
    }
    const at = `m[${JSON.stringify(f.localName)}]`;
    const tag = (wire: number) => ((f.number << 3) | wire) >>> 0;
    const writeTag = (wire: number) => `w.v32(${tag(wire)});`;
    switch (f.fieldKind) {
      case "scalar":
      case "enum": {
        // IMPLICIT, or proto3 `optional` (EXPLICIT): written when set, even to zero.
        if (f.presence !== IMPLICIT && f.presence !== EXPLICIT) return undefined;
        if (f.getDefaultValue() !== undefined) return undefined;
        const c = f.fieldKind === "enum"
          ? { read: "r.v32() | 0", write: "i32" }
          : scalarCall(f.scalar);
        if (!c) return undefined;
        const zero = f.fieldKind === "enum"
          ? `v !== ${f.enum.values[0].number}`
          : f.scalar === ScalarType.BOOL
          ? "v !== false"
          : f.scalar === ScalarType.STRING
          ? 'v !== ""'
          : f.scalar === ScalarType.BYTES
          ? "!(v instanceof Uint8Array) || v.byteLength > 0"
          : "v != 0";
        const wire = f.fieldKind === "scalar" &&
            (f.scalar === ScalarType.STRING || f.scalar === ScalarType.BYTES)
          ? WIRE.len
          : WIRE.varint;
        const set = f.presence === EXPLICIT
          ? `v !== undefined && Object.prototype.hasOwnProperty.call(m, ${
            JSON.stringify(f.localName)
          })`
          : zero;
        enc.push(`v = ${at}; if (${set}) { ${writeTag(wire)} w.${c.write}(v); }`);
        dec.push(`case ${tag(wire)}: ${at} = ${c.read}; break;`);
        break;
      }
      case "message": {
        const j = index.get(f.message)!;
        enc.push(
          `v = ${at}; if (v !== undefined && Object.prototype.hasOwnProperty.call(m, ${
            JSON.stringify(f.localName)
          })) { ${writeTag(WIRE.len)} const s = w.fork(); E[${j}](w, v); w.join(s); }`,
        );
        dec.push(
          `case ${tag(WIRE.len)}: { if (${at} !== undefined) throw FALLBACK; ` +
            `const e = r.len(end); ${at} = D[${j}](r, e); break; }`,
        );
        break;
      }
      case "list": {
        if (f.listKind === "message") {
          const j = index.get(f.message)!;
          enc.push(
            `v = ${at}; for (let k = 0; k < v.length; k++) { ${
              writeTag(WIRE.len)
            } const s = w.fork(); E[${j}](w, v[k]); w.join(s); }`,
          );
          dec.push(
            `case ${tag(WIRE.len)}: { const e = r.len(end); ${at}.push(D[${j}](r, e)); break; }`,
          );
          break;
        }
        const c = f.listKind === "enum"
          ? { read: "r.v32() | 0", write: "i32" }
          : scalarCall(f.scalar);
        if (!c) return undefined;
        const lenWise = f.listKind === "scalar" &&
          (f.scalar === ScalarType.STRING || f.scalar === ScalarType.BYTES);
        if (lenWise) {
          enc.push(
            `v = ${at}; for (let k = 0; k < v.length; k++) { ${
              writeTag(WIRE.len)
            } w.${c.write}(v[k]); }`,
          );
          dec.push(`case ${tag(WIRE.len)}: ${at}.push(${c.read}); break;`);
          break;
        }
        if (f.packed) {
          enc.push(
            `v = ${at}; if (v.length) { ${
              writeTag(WIRE.len)
            } const s = w.fork(); for (let k = 0; k < v.length; k++) w.${c.write}(v[k]); w.join(s); }`,
          );
        } else {
          enc.push(
            `v = ${at}; for (let k = 0; k < v.length; k++) { ${
              writeTag(WIRE.varint)
            } w.${c.write}(v[k]); }`,
          );
        }
        // Either form is accepted, as protobuf requires.
        dec.push(`case ${tag(WIRE.varint)}: ${at}.push(${c.read}); break;`);
        dec.push(
          `case ${tag(WIRE.len)}: { const e = r.len(end); const a = ${at}; ` +
            `while (r.p < e) a.push(${c.read}); if (r.p !== e) throw FALLBACK; break; }`,
        );
        break;
      }
      default:
        return undefined;
    }
  }
  return `const ${empty} = new Uint8Array(0);
C[${i}] = (init) => {
  if (init === undefined || init === null) init = {};
  if (typeof init.$typeName === "string") return init.$typeName === ${
    JSON.stringify(d.typeName)
  } ? init : SLOW;
  let v;
  ${checks.join("\n  ")}
  const m = { ${literal.join(", ")} };
  ${sets.join("\n  ")}
  return m;
};
E[${i}] = (w, m) => {
  if (m.$typeName !== ${JSON.stringify(d.typeName)}) throw FALLBACK;
  if (m.$unknown !== undefined && m.$unknown.length) throw FALLBACK;
  let v;
  ${enc.join("\n  ")}
};
D[${i}] = (r, end) => {
  const m = { ${init.join(", ")} };
  while (r.p < end) {
    switch (r.v32()) {
      ${dec.join("\n      ")}
      default: throw FALLBACK;
    }
  }
  if (r.p !== end) throw FALLBACK;
  return m;
};`;
}

/** When generating code pays: below these, bufbuild (already warm, with
 * nothing to compile) is faster. Tests set them to 0. */
export const thresholds = {
  /** Payloads decoded fast from this many bytes on. */
  decodeBytes: 16 << 10,
  /** Messages encoded fast from this many items in their top-level lists. */
  encodeItems: 128,
  /** A type's messages made fast after this many of them. */
  creates: 64,
};

/** How many items a message's top-level lists hold (its size, roughly). */
function items(schema: DescMessage, msg: unknown): number {
  if (msg === null || typeof msg !== "object") return 0;
  let n = 0;
  for (const f of schema.fields) {
    if (f.fieldKind !== "list") continue;
    const v = (msg as Record<string, unknown>)[f.localName];
    if (Array.isArray(v)) n += v.length;
  }
  return n;
}

/** toBinary(schema, msg), faster. */
export function encodeMessage<D extends DescMessage>(
  schema: D,
  msg: MessageShape<D>,
): Uint8Array<ArrayBuffer> {
  const i = items(schema, msg) >= thresholds.encodeItems ? compileType(schema) : null;
  if (i !== null) {
    try {
      const w = new Writer();
      E[i](w, msg);
      return w.b.slice(0, w.p);
    } catch {
      // Out of the ordinary (see the top): bufbuild's own result or error.
      fallbacks.encode++;
    }
  }
  return toBinary(schema, msg) as Uint8Array<ArrayBuffer>;
}

/** fromBinary(schema, bytes), faster. */
export function decodeMessage<D extends DescMessage>(
  schema: D,
  bytes: Uint8Array,
): MessageShape<D> {
  const i = bytes.length >= thresholds.decodeBytes ? compileType(schema) : null;
  if (i !== null) {
    try {
      return D[i](new Reader(bytes), bytes.length) as MessageShape<D>;
    } catch {
      // As for encoding.
      fallbacks.decode++;
    }
  }
  return fromBinary(schema, bytes);
}

const made = new WeakMap<DescMessage, number>();

/** create(schema, init), faster: for init values already in final form
 * (nested values messages, bytes Uint8Arrays), else create itself. */
export function newMessage<D extends DescMessage>(
  schema: D,
  init?: MessageInitShape<D>,
): MessageShape<D> {
  const count = (made.get(schema) ?? 0) + 1;
  if (count <= thresholds.creates) made.set(schema, count);
  // create checks each item of a list given whole: a big list pays too.
  const fast = count > thresholds.creates || items(schema, init) >= thresholds.encodeItems;
  const i = fast ? compileType(schema) : null;
  if (i !== null) {
    const m = C[i](init as Record<string, unknown> | undefined);
    if (m !== SLOW) return m as MessageShape<D>;
    fallbacks.make++;
  }
  return create(schema, init);
}

/** Whether schema has the fast codec (tests: every image type must). */
export function compiles(schema: DescMessage): boolean {
  return compileType(schema) !== null;
}
