#!/usr/bin/env bash
# Prints the path of the project's pinned Zig, installing it first if needed.
# Zig comes from PyPI's `ziglang` package (official releases), installed into
# .toolchain/ so nothing outside the checkout is touched.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ver=$(tr -d '[:space:]' <"$root/tools/zig-version")
dir="$root/.toolchain/zig-$ver"
zig="$dir/ziglang/zig"
if [ ! -x "$zig" ]; then
  echo "ckpt: installing Zig $ver into .toolchain/ (one time)" >&2
  py=$(command -v python3 || command -v python || true)
  if [ -z "$py" ]; then
    echo "ckpt: python3 with pip is needed to install Zig $ver (PyPI package ziglang)" >&2
    exit 1
  fi
  rm -rf "$dir.partial"
  "$py" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --root-user-action=ignore --target "$dir.partial" "ziglang==$ver" >&2
  mv "$dir.partial" "$dir"
fi
echo "$zig"
