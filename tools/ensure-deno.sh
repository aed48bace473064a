#!/usr/bin/env bash
# Prints the path of the project's pinned Deno, finding or installing it once
# into .toolchain/deno-VERSION/deno; ./ckpt then execs it directly (no npm
# process between the caller and ckpt, so fds, signals and the exit status
# pass straight through, and a command starts in about 0.1 s instead of the
# second npx takes). A Deno of that version already on PATH (or the one npx
# unpacked) is linked; otherwise npm installs it (package deno@VERSION, whose
# platform package carries the binary).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ver=$(tr -d '[:space:]' <"$root/tools/deno-version")
dir="$root/.toolchain/deno-$ver"
bin="$dir/deno"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

# The real binary behind a candidate: npm's .bin/deno is a node script
# (bin.cjs) next to, or above, the binary it starts.
real_binary() {
  local p
  p=$(readlink -f "$1") || return 1
  for c in "$p" "$(dirname "$p")/deno" "$(dirname "$p")/../@deno/linux-x64-glibc/deno" \
    "$(dirname "$p")/../@deno/linux-arm64-glibc/deno"; do
    if [ -f "$c" ] && [ -x "$c" ] && [ "$(head -c 4 "$c" | od -An -c | tr -d ' ')" = '177ELF' ]; then
      readlink -f "$c"
      return 0
    fi
  done
  return 1
}

found=""
if cand=$(command -v deno 2>/dev/null) && real=$(real_binary "$cand") &&
  "$real" --version 2>/dev/null | head -n 1 | grep -q "^deno $ver "; then
  found=$real
fi
mkdir -p "$root/.toolchain"
if [ -n "$found" ]; then
  mkdir -p "$dir"
  ln -sfn "$found" "$bin"
else
  if ! command -v npm >/dev/null 2>&1; then
    echo "ckpt: Deno $ver is not installed and npm is not there to install it (npm package deno@$ver)" >&2
    exit 1
  fi
  echo "ckpt: installing Deno $ver into .toolchain/ (one time)" >&2
  rm -rf "$dir.partial"
  npm install --prefix "$dir.partial" --no-save --no-package-lock --no-audit --no-fund \
    --ignore-scripts --loglevel=error "deno@$ver" >&2
  got=$(find "$dir.partial/node_modules/@deno" -mindepth 2 -maxdepth 2 -name deno -type f | head -n 1)
  if [ -z "$got" ]; then
    echo "ckpt: npm installed deno@$ver without a binary for this platform" >&2
    exit 1
  fi
  mkdir -p "$dir.partial/bin"
  mv "$got" "$dir.partial/bin/deno"
  chmod 755 "$dir.partial/bin/deno"
  rm -rf "$dir.partial/node_modules"
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  ln -sfn bin/deno "$bin"
fi
echo "$bin"
