// Serving CRIU's RPC on one connection, as `criu swrk` does: requests are
// answered in order; after one that does not ask to keep the connection open
// (keep_open) ckpt is done, but a PRE_DUMP waits for the next PRE_DUMP or
// the final DUMP, as CRIU's pre-dump loop does. Operations run through the
// same library calls as the CLI (src/api/guarded.ts: locks, image checks),
// with the options mapped by options.ts and the caller's action scripts
// (notify_scripts) as NOTIFY round trips that the operation waits on.
import { create, isFieldSet, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type criu_features,
  criu_featuresSchema,
  criu_notifySchema,
  type criu_opts,
  type criu_req,
  criu_req_type,
  type criu_resp,
  criu_respSchema,
  criu_versionSchema,
} from "../gen/criu/rpc_pb.ts";
import { dump, preDump, restore } from "../api/guarded.ts";
import { check } from "../api/check.ts";
import { describe } from "../errors.ts";
import { NativeError, wait } from "../native/mod.ts";
import { Level, log } from "../util/log.ts";
import { formatMs } from "../util/units.ts";
import type { Notify } from "../util/actions.ts";
import { VERSION } from "../version.ts";
import { dumpStatsLines, restoreStatsLines } from "../images/criu_stats.ts";
import { type Channel, RpcError } from "./channel.ts";
import {
  checkOptions,
  type Dirs,
  dumpOptions,
  preDumpOptions,
  resolveDirs,
  restoreOptions,
  type RpcOp,
  type RpcPlace,
  RpcRefused,
} from "./options.ts";
import { CRIU_COMPAT, hasLazyPages, hasMemTrack } from "./compat.ts";

const T = criu_req_type;
const EOPNOTSUPP = 95;

const typeName = (t: number) => criu_req_type[t] ?? `type ${t}`;

function respond(
  type: criu_req_type,
  fields: Omit<MessageInitShape<typeof criu_respSchema>, "type" | "success" | "$typeName"> = {},
): criu_resp {
  return create(criu_respSchema, { ...fields, type, success: true });
}

function failure(type: criu_req_type, err: unknown): criu_resp {
  const errno = err instanceof NativeError
    ? err.errno
    : err instanceof RpcRefused
    ? EOPNOTSUPP
    : undefined;
  return create(criu_respSchema, {
    type,
    success: false,
    crErrmsg: describe(err).replace(/\s*\n\s*/g, "; "),
    ...(errno !== undefined ? { crErrno: errno } : {}),
  });
}

/** Serves requests on ch until the last one is answered (or the caller
 * closes its end); resolves to ckpt's exit status: 0 when the last request
 * succeeded. */
export async function serve(ch: Channel, mode: RpcPlace["mode"]): Promise<number> {
  const place: RpcPlace = { mode, peer: ch.peer };
  let req = ch.recv();
  if (!req) {
    log.error(`the caller (pid ${ch.peer}) closed the connection before any request`);
    return 1;
  }
  for (;;) {
    const t0 = performance.now();
    const { ok, more } = await handle(ch, req, place);
    log.debug(`${typeName(req.type)} answered in ${formatMs(performance.now() - t0)}`);
    if (!more && !(ok && req.keepOpen)) return ok ? 0 : 1;
    const next = ch.recv();
    if (!next) return ok ? 0 : 1;
    if (more && next.type !== T.PRE_DUMP && next.type !== T.DUMP) {
      ch.send(failure(
        T.EMPTY,
        new RpcError(
          `a ${typeName(next.type)} request after PRE_DUMP: only PRE_DUMP or DUMP may follow one`,
        ),
      ));
      return 1;
    }
    req = next;
  }
}

/** One request. `more`: a next request belongs to this one (pre-dumps). */
async function handle(
  ch: Channel,
  req: criu_req,
  place: RpcPlace,
): Promise<{ ok: boolean; more?: boolean }> {
  switch (req.type) {
    case T.VERSION:
      ch.send(respond(T.VERSION, {
        version: create(criu_versionSchema, {
          majorNumber: CRIU_COMPAT.major,
          minorNumber: CRIU_COMPAT.minor,
          sublevel: CRIU_COMPAT.sublevel,
          // No gitid: go-criu counts a git build as the next minor release.
          name: `ckpt ${VERSION}`,
        }),
      }));
      return { ok: true };
    case T.CHECK: {
      const report = await check();
      const missing = report.probes.filter((p) => p.required && !p.ok);
      ch.send(
        report.ok ? respond(T.CHECK) : failure(
          T.CHECK,
          new RpcError(`missing: ${missing.map((p) => `${p.name} (${p.detail})`).join("; ")}`),
        ),
      );
      return { ok: report.ok };
    }
    case T.FEATURE_CHECK:
      ch.send(respond(T.FEATURE_CHECK, { features: features(req.features) }));
      return { ok: true };
    case T.DUMP:
      return { ok: await operation(ch, req, place, "dump") };
    case T.PRE_DUMP: {
      const ok = await operation(ch, req, place, "pre-dump");
      return { ok, more: ok };
    }
    case T.SINGLE_PRE_DUMP:
      return { ok: await operation(ch, req, place, "pre-dump") };
    case T.RESTORE:
      return { ok: await operation(ch, req, place, "restore") };
    case T.WAIT_PID:
      return { ok: waitPid(ch, req.pid) };
    case T.PAGE_SERVER:
    case T.PAGE_SERVER_CHLD:
      ch.send(failure(
        req.type,
        new RpcRefused(typeName(req.type), [
          "ckpt has no page server; move images with dump --stream | restore --stream",
        ]),
      ));
      return { ok: false };
    case T.CPUINFO_DUMP:
    case T.CPUINFO_CHECK:
      ch.send(failure(
        req.type,
        new RpcRefused(typeName(req.type), [
          "ckpt keeps no cpuinfo image: it restores on the machine and kernel it dumped on",
        ]),
      ));
      return { ok: false };
    default:
      // NOTIFY outside an operation, EMPTY, or a number this ckpt does not know.
      ch.send(failure(T.EMPTY, new RpcError(`invalid request (${typeName(req.type)})`)));
      return { ok: false };
  }
}

/** FEATURE_CHECK: each feature the caller asked about, answered. */
function features(asked: criu_features | undefined): criu_features {
  const out = create(criu_featuresSchema, {});
  if (!asked) return out;
  const f = criu_featuresSchema.field;
  if (isFieldSet(asked, f.memTrack)) out.memTrack = hasMemTrack();
  if (isFieldSet(asked, f.lazyPages)) out.lazyPages = hasLazyPages();
  if (isFieldSet(asked, f.pidfdStore)) out.pidfdStore = false;
  return out;
}

function waitPid(ch: Channel, pid: number): boolean {
  try {
    const st = wait(pid, 0);
    ch.send(respond(T.WAIT_PID, { status: st?.raw ?? 0 }));
    return true;
  } catch (err) {
    ch.send(failure(T.WAIT_PID, err));
    return false;
  }
}

/** The caller's action scripts: a NOTIFY, then its answer. */
function notifyVia(ch: Channel): Notify {
  return (script, pid) => {
    log.debug(`notify ${script}${pid !== undefined ? ` (pid ${pid})` : ""}`);
    const notify = create(criu_notifySchema, { script, ...(pid !== undefined ? { pid } : {}) });
    ch.send(respond(T.NOTIFY, { notify }));
    const ans = ch.recv();
    if (!ans) throw new RpcError("the caller closed the connection instead of answering");
    if (ans.type !== T.NOTIFY) {
      throw new RpcError(`the caller answered with a ${typeName(ans.type)} request, not NOTIFY`);
    }
    if (!ans.notifySuccess) throw new RpcError("the caller reported a failure");
  };
}

/** DUMP, PRE_DUMP or RESTORE: options checked, the log opened where the
 * caller asked, the operation run, the answer sent. */
async function operation(
  ch: Channel,
  req: criu_req,
  place: RpcPlace,
  op: RpcOp,
): Promise<boolean> {
  const t0 = performance.now();
  const o = req.opts;
  if (!o) {
    ch.send(failure(req.type, new RpcError(`the ${typeName(req.type)} request has no opts`)));
    return false;
  }
  let dirs: Dirs;
  try {
    dirs = resolveDirs(o, place);
    log.close();
    log.configure({ verbosity: dirs.verbosity, logFile: dirs.logFile });
    Deno.chdir(dirs.workDir); // as CRIU does: relative paths are the work dir's
  } catch (err) {
    ch.send(failure(req.type, err));
    return false;
  }
  log.info(`${typeName(req.type)} request from pid ${place.peer} (${place.mode})`);
  if (log.level >= Level.debug) log.debug(`options: ${JSON.stringify(setOptions(o))}`);
  let after: Promise<void> | undefined;
  try {
    checkOptions(o, op, place, typeName(req.type));
    const notify = o.notifyScripts ? notifyVia(ch) : undefined;
    // What the RPC adds to the CLI's path: the rest is the same library call.
    const overhead = () => `${formatMs(performance.now() - t0)} to map the request`;
    if (op === "dump") {
      const opts = dumpOptions(o, dirs, place);
      log.debug(overhead());
      const r = await dump({ ...opts, notify });
      if (o.displayStats && r.stats) { for (const l of dumpStatsLines(r.stats)) log.always(l); }
      ch.send(respond(T.DUMP, { dump: { restored: false } }));
    } else if (op === "pre-dump") {
      const opts = preDumpOptions(o, dirs, place);
      log.debug(overhead());
      const r = await preDump({ ...opts, notify });
      if (o.displayStats && r.stats) { for (const l of dumpStatsLines(r.stats)) log.always(l); }
      ch.send(respond(req.type));
    } else {
      const opts = restoreOptions(o, dirs);
      log.debug(overhead());
      const r = await restore({ ...opts, notify });
      if (o.displayStats) { for (const l of restoreStatsLines(r.stats)) log.always(l); }
      ch.send(respond(T.RESTORE, { restore: { pid: r.pid } }));
      after = r.loaded;
    }
  } catch (err) {
    log.error(describe(err));
    if (err instanceof Error && !(err instanceof RpcError) && err.stack) log.debug(err.stack);
    try {
      ch.send(failure(req.type, err));
    } catch (sendErr) {
      log.error(describe(sendErr));
    }
    return false;
  }
  // A lazy restore goes on serving pages after the answer; ckpt stays until
  // every page is in, as CRIU's lazy-pages daemon does.
  if (after) {
    try {
      await after;
    } catch (err) {
      log.error(describe(err));
      return false;
    }
  }
  return true;
}

/** The options a request set, by CRIU's names (for the log). */
function setOptions(o: criu_opts): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o) as [string, unknown][]) {
    if (k.startsWith("$") || (Array.isArray(v) && v.length === 0)) continue;
    out[k] = v;
  }
  return out;
}
