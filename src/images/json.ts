// Protobuf messages as JSON for people: proto3 JSON (proto field names,
// 64-bit integers as strings), except that bytes fields are summarised —
// registers, xsave areas and saved file or pipe contents run to kilobytes of
// base64 nobody can read. Small ones are kept as hex; registers are named.
import {
  type DescField,
  type DescMessage,
  type JsonObject,
  type JsonValue,
  type MessageShape,
  ScalarType,
  toJson,
} from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { crc32c } from "./crc32c.ts";

/** Bytes fields up to this size are also shown in full, as hex. */
export const SMALL_BYTES = 32;

export function messageToJson<D extends DescMessage>(schema: D, msg: MessageShape<D>): JsonValue {
  const json = toJson(schema, msg, { useProtoFieldName: true, alwaysEmitImplicit: true });
  return summarise(schema, json);
}

function summarise(desc: DescMessage, json: JsonValue): JsonValue {
  if (json === null || typeof json !== "object" || Array.isArray(json)) return json;
  const out: JsonObject = { ...json };
  for (const f of desc.fields) {
    const v = out[f.name];
    if (v !== undefined) out[f.name] = summariseField(f, v);
  }
  return out;
}

function summariseField(f: DescField, v: JsonValue): JsonValue {
  switch (f.fieldKind) {
    case "message":
      return summarise(f.message, v);
    case "scalar":
      if (f.scalar === ScalarType.BYTES) return bytesSummary(f, v);
      return HEX_FIELDS.has(fullName(f)) ? asHex(v) : v;
    case "list":
      if (!Array.isArray(v)) return v;
      if (f.listKind === "message") return v.map((x) => summarise(f.message, x));
      if (f.scalar === ScalarType.BYTES) return v.map((x) => bytesSummary(f, x));
      return HEX_FIELDS.has(fullName(f)) ? v.map(asHex) : v;
    case "map":
      if (f.mapKind !== "message" || v === null || typeof v !== "object" || Array.isArray(v)) {
        return v;
      }
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, summarise(f.message, x)]));
    default:
      return v;
  }
}

function bytesSummary(f: DescField, v: JsonValue): JsonValue {
  if (typeof v !== "string") return v;
  const b = base64Decode(v);
  const out: JsonObject = { bytes: b.length, crc32c: hex32(crc32c(b)) };
  if (b.length <= SMALL_BYTES) out.hex = toHex(b);
  const decode = DECODERS[fullName(f)];
  if (decode && b.length > 0) Object.assign(out, decode(b));
  return out;
}

const fullName = (f: DescField) => `${f.parent.typeName}.${f.name}`;

// Addresses, masks and capability sets read far better in hex; crit does
// the same.
const HEX_FIELDS = new Set([
  "ckpt.PageRun.vaddr",
  "ckpt.PageRun.crc32c",
  "ckpt.ImageFile.crc32c",
  "ckpt.Vma.start",
  "ckpt.Vma.end",
  "ckpt.Vma.pgoff",
  "ckpt.SigAction.handler",
  "ckpt.SigAction.flags",
  "ckpt.SigAction.restorer",
  "ckpt.SigAction.mask",
  "ckpt.ThreadCore.sigmask",
  "ckpt.ThreadCore.altstack_sp",
  "ckpt.ThreadCore.tid_address",
  "ckpt.ThreadCore.robust_head",
  "ckpt.ThreadCore.rseq_addr",
  "ckpt.Creds.cap_inh",
  "ckpt.Creds.cap_prm",
  "ckpt.Creds.cap_eff",
  "ckpt.Creds.cap_bnd",
  "ckpt.Creds.cap_amb",
  ...[
    "start_code",
    "end_code",
    "start_data",
    "end_data",
    "start_brk",
    "brk",
    "start_stack",
    "arg_start",
    "arg_end",
    "env_start",
    "env_end",
  ].map((n) => `ckpt.MmFields.${n}`),
]);

function asHex(v: JsonValue): JsonValue {
  if (typeof v !== "string" && typeof v !== "number") return v;
  try {
    return "0x" + BigInt(v).toString(16);
  } catch {
    return v;
  }
}

// struct user_regs_struct (x86_64), in kernel order.
const USER_REGS = [
  "r15",
  "r14",
  "r13",
  "r12",
  "rbp",
  "rbx",
  "r11",
  "r10",
  "r9",
  "r8",
  "rax",
  "rcx",
  "rdx",
  "rsi",
  "rdi",
  "orig_rax",
  "rip",
  "cs",
  "eflags",
  "rsp",
  "ss",
  "fs_base",
  "gs_base",
  "ds",
  "es",
  "fs",
  "gs",
];

/** Field-specific views of bytes whose layout is known, by full field name. */
const DECODERS: Record<string, (b: Uint8Array) => JsonObject> = {
  "ckpt.ThreadCore.regs": (b): JsonObject => {
    if (b.length !== USER_REGS.length * 8) return {};
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    return {
      decoded: Object.fromEntries(
        USER_REGS.map((r, i) => [r, "0x" + dv.getBigUint64(i * 8, true).toString(16)]),
      ),
    };
  },
};

export function hex32(n: number): string {
  return n.toString(16).padStart(8, "0");
}

function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
