#!/usr/bin/env bash
# Builds zig-out/lib/libckpt.so (restorer blob embedded) and the test workloads
# when any input is newer than the library. Safety checks stay on (ReleaseSafe).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
lib=zig-out/lib/libckpt.so
stale=0
if [ ! -f "$lib" ] || [ "${CKPT_FORCE_BUILD:-}" = 1 ]; then
  stale=1
elif [ -n "$(find build.zig ffi tests/workloads tools/zig-version -newer "$lib" -type f 2>/dev/null | head -n 1)" ]; then
  stale=1
fi
if [ "$stale" = 1 ]; then
  zig=$("$root/tools/ensure-zig.sh")
  echo "ckpt: building native library (zig build)" >&2
  "$zig" build -Doptimize="${CKPT_OPTIMIZE:-ReleaseSafe}" >&2
  touch "$lib"
fi
