// criu_opts → ckpt's options. Every field of CRIU's rpc.proto has one rule
// here: used (mapped onto the ckpt option of the same meaning), accepted
// (a permission or a method choice that needs nothing from ckpt, or a field
// CRIU itself ignores for this request), or refused while it asks for
// something ckpt cannot do yet. A request with any refused field is answered
// with an error naming each of them and nothing is done: an option is never
// silently dropped. Unknown field numbers (a newer rpc.proto) are refused too.
import { isFieldSet } from "@bufbuild/protobuf";
import type { DescField } from "@bufbuild/protobuf";
import {
  cgroup_rootSchema,
  criu_cg_mode,
  criu_file_validation_method,
  type criu_opts,
  criu_optsSchema,
} from "../gen/criu/rpc_pb.ts";
import type { DumpOptions, PreDumpOptions } from "../api/guarded.ts";
import type { RestoreOptions } from "../api/guarded.ts";
import { MAX_GHOST_BYTES } from "../files/regular.ts";
import { RpcError } from "./channel.ts";
import { ImageDir } from "../images/dir.ts";
import { parseVethExternals, type VethExternal } from "../ns/net/options.ts";
import { restoreExternals } from "../mount/restore.ts";
import { type CgroupRoot, type ManageMode, propsSpec } from "../cgroup/options.ts";
import { validPath } from "../cgroup/hierarchy.ts";

export type RpcOp = "dump" | "pre-dump" | "restore";

/** Where a request came from: swrk (ckpt runs for one caller, which holds
 * the other end of a socketpair) or service (a listening socket). */
export interface RpcPlace {
  mode: "swrk" | "service";
  /** The caller (SO_PEERCRED): whose fd numbers images_dir_fd and
   * work_dir_fd are. */
  peer: number;
}

/** A request ckpt cannot carry out exactly; nothing was done. */
export class RpcRefused extends RpcError {
  constructor(readonly what: string, readonly problems: string[]) {
    super(
      `ckpt does not support ${problems.length === 1 ? "this option" : "these options"} of the ` +
        `${what} request yet, so nothing was done: ${problems.join("; ")}`,
    );
    this.name = "RpcRefused";
  }
}

/** The images and work directories of a request, and its log. */
export interface Dirs {
  imagesDir: string;
  workDir: string;
  /** Log file path, or undefined for stderr (log_to_stderr). */
  logFile?: string;
  /** ckpt's verbosity for CRIU's log_level (2 = warnings, 4 = debug). */
  verbosity: number;
}

/** A path for fd `n` of the peer that names the same directory: the path
 * it was opened by when that still leads there (so paths ckpt records and
 * logs read normally), else /proc/PEER/fd/N itself. */
function peerDir(place: RpcPlace, n: number, what: string): string {
  const magic = `/proc/${place.peer}/fd/${n}`;
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(magic);
  } catch (err) {
    throw new RpcError(
      `${what} ${n}: not an open descriptor of the caller (pid ${place.peer}): ${
        (err as Error).message
      }`,
    );
  }
  if (!st.isDirectory) throw new RpcError(`${what} ${n} (${magic}) is not a directory`);
  try {
    const path = Deno.readLinkSync(magic);
    const real = Deno.statSync(path);
    if (real.dev === st.dev && real.ino === st.ino) return path;
  } catch { /* deleted, or in another mount namespace */ }
  return magic;
}

export function resolveDirs(o: criu_opts, place: RpcPlace): Dirs {
  let imagesDir: string;
  if (o.imagesDirFd !== -1) imagesDir = peerDir(place, o.imagesDirFd, "images_dir_fd");
  else if (o.imagesDir) imagesDir = o.imagesDir;
  else throw new RpcError("the request gives neither images_dir_fd nor images_dir");
  const workDir = isFieldSet(o, criu_optsSchema.field.workDirFd)
    ? peerDir(place, o.workDirFd, "work_dir_fd")
    : imagesDir;
  let logFile: string | undefined;
  if (o.logFile && o.logFile !== "-") {
    if (o.logFile.includes("/")) {
      throw new RpcError(`log_file '${o.logFile}': no directories are allowed (use work_dir_fd)`);
    }
    logFile = `${workDir}/${o.logFile}`;
  } else if (!o.logToStderr && o.logFile !== "-") {
    logFile = `${workDir}/criu.log`; // CRIU's default name
  }
  // CRIU: 1 errors, 2 warnings (default), 3 info, 4 debug; ckpt counts -v
  // steps above warnings.
  return { imagesDir, workDir, logFile, verbosity: Math.max(-1, Math.min(3, o.logLevel - 2)) };
}

const on = (v: unknown): boolean =>
  Array.isArray(v) ? v.length > 0 : typeof v === "string" ? v !== "" : !!v;

function shown(v: unknown): string {
  if (Array.isArray(v)) {
    const items = v.slice(0, 3).map((x) =>
      typeof x === "object" && x !== null
        ? Object.entries(x).filter(([k]) => !k.startsWith("$")).map(([, y]) => String(y)).join(
          ":",
        )
        : String(x)
    );
    return `[${items.join(", ")}${v.length > 3 ? `, … ${v.length} in all` : ""}]`;
  }
  return String(v);
}

const CLONE_NEWNET = 0x40000000;
const NEEDS_MNT = "mounts and mount namespaces are not supported yet";
const NEEDS_TCP = "TCP sockets are not supported yet";

/** Why field f (set, to value v) cannot be honoured for op, or undefined. */
function refusal(f: DescField, v: unknown, o: criu_opts, op: RpcOp, place: RpcPlace) {
  const dumping = op !== "restore";
  switch (f.name) {
    // Used below, or a permission/method ckpt needs nothing for.
    case "images_dir_fd":
    case "images_dir":
    case "work_dir_fd":
    case "log_level":
    case "log_file":
    case "log_to_stderr":
    case "notify_scripts":
    case "display_stats":
    case "shell_job":
    case "ext_unix_sk":
    case "unix_sk_ino":
      return undefined;
    case "pid":
    case "leave_running":
    case "leave_stopped":
    case "parent_img":
      return undefined;
    // "May use another path to a device": ckpt reopens devices by path.
    // dump options; CRIU ignores them on restore too
    case "evasive_devices":
    // Permission to link deleted files back: ckpt saves their contents.
    case "link_remap":
    // Path resolution of watches: ckpt always resolves them (file handles).
    case "force_irmap":
    // No sysctls are restored, so none can fail.
    case "weak_sysctls":
    // ckpt checks no rwx bits of files at restore.
    case "skip_file_rwx_check":
    // Methods of reading memory and deleted files; ckpt has its own.
    case "pre_dump_mode":
    case "ghost_fiemap":
    // Network locking is for TCP and network namespaces, refused below.
    case "network_lock":
    // ckpt always saves file locks (flock, POSIX, OFD); CRIU refuses them without.
    case "file_locks":
      return undefined;
    case "orphan_pts_master":
      // A terminal whose master is outside is refused at dump, or with
      // shell_job restored onto ckpt's own terminal: CRIU would instead make
      // a new pair and hand its master over, which ckpt cannot do yet.
      return !dumping && on(v) && o.shellJob
        ? "orphan_pts_master with shell_job: ckpt restores an outside terminal onto its own and cannot hand a new pty master to the caller yet"
        : undefined;
    case "root":
      // Restore: the root filesystem of a tree with a mount namespace of its
      // own (--root); CRIU does not use it at dump.
      return undefined;
    case "track_mem":
      // Pre-dumps always track; a dump that kills the tree needs none after.
      if (op === "dump" && on(v) && o.leaveRunning) {
        return "track_mem with leave_running: ckpt's dump does not keep tracking memory after it; pre-dump again instead";
      }
      return undefined;
    case "lazy_pages":
      return dumping && on(v)
        ? "lazy_pages on dump: ckpt has no page server; restore lazily with lazy_pages on RESTORE"
        : undefined;
    case "rst_sibling":
    case "inherit_fd":
      return on(v) && place.mode !== "swrk"
        ? `${f.name} is for swrk only (as in CRIU): in service mode the fds and the parent are not the caller's`
        : undefined;
    case "external":
      if (!on(v)) return undefined;
      for (const e of v as string[]) {
        const ok = e.startsWith("veth[") || /^mnt\[[^\]]+\]:.+$/.test(e) ||
          (dumping && (/^unix\[\d+\]$/.test(e) || /^net\[\d+\]:.+$/.test(e)));
        if (!ok) {
          return `external=${
            shown(v)
          }: only unix[INO], net[INO]:KEY, veth[IF][:OUT] and mnt[KEY]:VAL on dump and ` +
            `veth[IF]:OUT and mnt[KEY]:VAL on restore are supported`;
        }
      }
      return undefined;
    // Cgroups (cgroupOptions below); CRIU reads the dump-only ones on dump.
    case "manage_cgroups":
    case "manage_cgroups_mode":
    case "cg_root":
    case "cgroup_props":
    case "cgroup_props_file":
    case "cgroup_dump_controller":
    case "freeze_cgroup":
      return undefined;
    case "cgroup_yard":
      return on(v)
        ? `cgroup_yard=${v}: ckpt works in the cgroup hierarchies mounted where it runs, not in a yard`
        : undefined;
    case "cpu_cap":
      return v === 0xffffffff
        ? undefined
        : `cpu_cap=0x${
          (v as number).toString(16)
        }: ckpt restores only on the CPU and kernel it dumped on`;
    case "ghost_limit":
      return (v as number) >= MAX_GHOST_BYTES ? undefined : `ghost_limit=${v}: ckpt saves files ` +
        `deleted while open up to ${MAX_GHOST_BYTES} bytes and cannot lower that limit yet`;
    case "file_validation_method":
      return !dumping && v === criu_file_validation_method.BUILD_ID
        ? "file_validation_method=BUILD_ID: ckpt checks files by size (and mtime for mappings)"
        : undefined;
    case "config_file":
      return configFileRefusal(String(v));
    case "empty_ns":
      // CLONE_NEWNET alone, as in CRIU (runc always sends it).
      return v === 0 || v === CLONE_NEWNET
        ? undefined
        : `empty_ns=0x${
          (v as number).toString(16)
        }: only CLONE_NEWNET (0x40000000) can be left empty`;
    // Asking for what ckpt does not do yet.
    case "tcp_established":
    case "tcp_skip_in_flight":
    case "tcp_close":
      return on(v) ? `${f.name}: ${NEEDS_TCP}` : undefined;
    case "ext_mnt":
      // Dump: mountpoint → key (--external mnt[MNT]:KEY); restore: key →
      // host path (--external mnt[KEY]:PATH). Keys no mount has are unused,
      // as in CRIU (runc names every device node and masked path).
      return (v as { key: string; val: string }[]).find((e) => !e.key || !e.val)
        ? `ext_mnt=${shown(v)}: every entry needs a key and a value`
        : undefined;
    case "auto_ext_mnt":
    case "ext_sharing":
    case "ext_masters":
    case "skip_mnt":
    case "enable_fs":
    case "mntns_compat_mode":
    case "lsm_mount_context":
      return on(v) ? `${f.name}=${shown(v)}: ${NEEDS_MNT}` : undefined;
    case "veths":
      return on(v) && dumping ? "veths: the outside ends of veths are given at restore" : undefined;
    case "join_ns":
      if (!on(v)) return undefined;
      if (dumping) return "join_ns: namespaces are joined at restore";
      for (const j of v as { ns: string; extraOpt?: string }[]) {
        if (j.ns !== "net") return `join_ns ${j.ns}: only network namespaces can be joined yet`;
        if (j.extraOpt) return `join_ns ${j.ns}: extra_opt is for user namespaces`;
      }
      return undefined;
    case "ps":
      return "ps: ckpt has no page server; move images with dump --stream | restore --stream";
    case "tls":
    case "tls_no_cn_verify":
    case "tls_cacert":
    case "tls_cacrl":
    case "tls_cert":
    case "tls_key":
      return on(v) ? `${f.name}: ckpt has no page server to secure` : undefined;
    case "auto_dedup":
      return on(v) ? "auto_dedup: ckpt does not punch holes in parent images" : undefined;
    case "exec_cmd":
      return on(v) ? `exec_cmd=${shown(v)}: not supported` : undefined;
    case "irmap_scan_paths":
      return on(v)
        ? `irmap_scan_paths=${shown(v)}: ckpt finds watched inodes by file handle`
        : undefined;
    case "timeout":
      return on(v) ? `timeout=${v}: ckpt's freeze has no time limit to set` : undefined;
    case "status_fd":
      return `status_fd=${v}: ckpt starts no page server or lazy-pages daemon to report ready`;
    case "lsm_profile":
      return on(v) ? `lsm_profile=${v}: LSM profiles are not restored yet` : undefined;
    case "pidfd_store_sk":
      return "pidfd_store_sk: ckpt tells a reused pid apart by its start time, not by a pidfd store";
    case "unprivileged":
      return on(v) ? "unprivileged: ckpt runs as root" : undefined;
    case "allow_uprobes":
      return on(v) ? "allow_uprobes: [uprobes] mappings are not supported" : undefined;
  }
  return `${f.name}: not known to this ckpt`;
}

/** CRIU skips a configuration file that does not exist; one that does is
 * CRIU's own settings, which ckpt does not read. */
function configFileRefusal(path: string): string | undefined {
  if (!path) return undefined;
  try {
    const text = Deno.readTextFileSync(path);
    if (text.split("\n").every((l) => /^\s*(#.*)?$/.test(l))) return undefined;
  } catch {
    return undefined;
  }
  return `config_file=${path}: ckpt does not read CRIU configuration files; give its options in the request`;
}

/** Every problem with the options of an op, or throws RpcRefused. */
export function checkOptions(o: criu_opts, op: RpcOp, place: RpcPlace, what: string): void {
  const problems: string[] = [];
  for (const f of criu_optsSchema.fields) {
    if (!isFieldSet(o, f)) continue;
    const why = refusal(f, (o as unknown as Record<string, unknown>)[f.localName], o, op, place);
    if (why) problems.push(why);
  }
  for (const u of o.$unknown ?? []) {
    problems.push(`field number ${u.no}: not in the rpc.proto this ckpt knows`);
  }
  if (problems.length) throw new RpcRefused(what, problems);
}

function extUnixSk(o: criu_opts): string[] {
  const out = o.extUnixSk ? [""] : [];
  if (o.unixSkIno.length) out.push(o.unixSkIno.map((u) => String(u.inode)).join(","));
  return out;
}

export function dumpOptions(o: criu_opts, dirs: Dirs, place: RpcPlace): DumpOptions {
  return {
    pid: dumpPid(o, place),
    dir: dirs.imagesDir,
    leaveRunning: o.leaveRunning,
    leaveStopped: o.leaveStopped,
    shellJob: o.shellJob,
    extUnixSk: extUnixSk(o),
    external: [...o.external, ...o.extMnt.map((e) => `mnt[${e.key}]:${e.val}`)],
    emptyNet: (o.emptyNs & CLONE_NEWNET) !== 0,
    prevImagesDir: o.parentImg || undefined,
    cgroups: {
      mode: cgroupMode(o),
      roots: cgroupRoots(o),
      props: propsSpec(o.cgroupProps || undefined, o.cgroupPropsFile || undefined),
      controllers: o.cgroupDumpController.length ? o.cgroupDumpController : undefined,
    },
    freezeCgroup: o.freezeCgroup || undefined,
  };
}

/** The key a dump's external network namespace is to be inherited as. */
function netKeyOf(dir: string): string | undefined {
  try {
    return ImageDir.open(dir).readNamespaces()?.net?.externalKey || undefined;
  } catch {
    return undefined; // restore itself says what is wrong with the directory
  }
}

/** CRIU: manage_cgroups true is soft, false ignore; a mode overrides it;
 * neither is CRIU's default (soft). */
function cgroupMode(o: criu_opts): ManageMode {
  if (isFieldSet(o, criu_optsSchema.field.manageCgroupsMode)) {
    const m = o.manageCgroupsMode;
    if (m === criu_cg_mode.IGNORE) return "ignore";
    if (m === criu_cg_mode.CG_NONE) return "none";
    if (m === criu_cg_mode.PROPS) return "props";
    if (m === criu_cg_mode.FULL) return "full";
    if (m === criu_cg_mode.STRICT) return "strict";
    return "soft";
  }
  if (isFieldSet(o, criu_optsSchema.field.manageCgroups)) {
    return o.manageCgroups ? "soft" : "ignore";
  }
  return "soft";
}

/** cg_root: a ctrl given (even empty: cgroup v2) names that controller's
 * hierarchy; none, every hierarchy. */
function cgroupRoots(o: criu_opts): CgroupRoot[] {
  for (const r of o.cgRoot) {
    if (!validPath(r.path)) {
      throw new RpcError(`cg_root ${r.ctrl}:${r.path}: not an absolute cgroup path`);
    }
  }
  return o.cgRoot.map((r) =>
    isFieldSet(r, cgroup_rootSchema.field.ctrl) ? { controller: r.ctrl, path: r.path } : {
      path: r.path,
    }
  );
}

export function preDumpOptions(o: criu_opts, dirs: Dirs, place: RpcPlace): PreDumpOptions {
  return {
    pid: dumpPid(o, place),
    dir: dirs.imagesDir,
    shellJob: o.shellJob,
    prevImagesDir: o.parentImg || undefined,
    freezeCgroup: o.freezeCgroup || undefined,
  };
}

export function restoreOptions(o: criu_opts, dirs: Dirs): RestoreOptions {
  if (o.orphanPtsMaster && !o.shellJob && inventoryShellJob(dirs.imagesDir)) {
    throw new RpcRefused("RESTORE", [
      "orphan_pts_master: the images were dumped as a shell job, whose terminal ckpt restores " +
      "onto its own; it cannot hand a new pty master to the caller yet",
    ]);
  }
  const inherit = new Map<string, number>();
  for (const i of o.inheritFd) {
    const nsKey = i.key === netKeyOf(dirs.imagesDir);
    if (!nsKey && !/^(pipe|socket):\[\d+\]$/.test(i.key) && !i.key.startsWith("/")) {
      throw new RpcRefused("RESTORE", [
        `inherit_fd key '${i.key}': ckpt inherits pipe:[INO], socket:[INO], paths, and the ` +
        `network namespace dumped as external net[INO]:KEY (these images have ${
          netKeyOf(dirs.imagesDir) ?? "none"
        })`,
      ]);
    }
    inherit.set(i.key, i.fd);
  }
  const veths = new Map<string, VethExternal>([
    ...parseVethExternals(o.external),
    ...o.veths.map((p) => [p.ifIn, { outside: p.ifOut }] as [string, VethExternal]),
  ]);
  return {
    dir: dirs.imagesDir,
    shellJob: o.shellJob,
    extUnixSk: extUnixSk(o),
    inherit,
    emptyNet: (o.emptyNs & CLONE_NEWNET) !== 0,
    joinNet: o.joinNs.find((j) => j.ns === "net")?.nsFile,
    veths,
    sibling: o.rstSibling,
    lazyPages: o.lazyPages,
    fileValidation: "filesize",
    root: o.root || undefined,
    externalMounts: new Map([
      ...restoreExternals(o.external),
      ...o.extMnt.map((e): [string, string] => [e.key, e.val]),
    ]),
    cgroups: { mode: cgroupMode(o), roots: cgroupRoots(o) },
  };
}

function inventoryShellJob(dir: string): boolean {
  try {
    return ImageDir.open(dir).readInventory().shellJob;
  } catch {
    return false; // restore itself says what is wrong with the directory
  }
}

/** CRIU dumps the requesting process when no pid is given; a swrk is that
 * process's child, so it would be dumping itself. */
function dumpPid(o: criu_opts, place: RpcPlace): number {
  if (isFieldSet(o, criu_optsSchema.field.pid)) return o.pid;
  if (place.mode === "swrk") {
    throw new RpcRefused("DUMP", [
      "pid is not set, which means the caller itself, whose tree holds this ckpt swrk: give pid",
    ]);
  }
  return place.peer;
}
