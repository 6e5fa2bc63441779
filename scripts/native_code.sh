#!/usr/bin/env bash
# Lists the dependencies whose build scripts compiled and linked C/C++ code (a static library
# announced with `cargo:rustc-link-lib=static=…`, which is what the `cc` and `cmake` crates
# emit) in a built target directory, and fails on any but openh264 — the one C library the
# project accepts. Run after a build (`cargo test --no-run` or `cargo build`).
# Not yet part of .ci/run: turso_core (under Burn's autotune cache) still compiles simsimd.
# Usage: scripts/native_code.sh [TARGET_DIR] [PROFILE]
set -euo pipefail
target=${1:-${CARGO_TARGET_DIR:-target}}
profile=${2:-debug}
found=$(grep -l "rustc-link-lib=static=" "$target/$profile"/build/*/output 2>/dev/null |
  sed -E 's#.*/build/(.+)-[0-9a-f]{16}/output#\1#' | sort -u)
echo "crates that compiled C/C++: ${found:-none}" | tr '\n' ' '
echo
others=$(grep -vx "openh264-sys2" <<<"$found" || true)
if [ -n "$others" ]; then
  echo "not allowed: $others" | tr '\n' ' '
  echo
  exit 1
fi
