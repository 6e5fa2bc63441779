#!/usr/bin/env bash
# Fails unless openh264 is the only C/C++ compiled into streamtrack: lists every crate of the
# dependency graph (normal, build and dev dependencies, this platform, the features actually
# enabled) that has `cc` or `cmake` as a build dependency, which is how a build script
# compiles C or C++, and allows only openh264-sys2. Needs no build; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
found=$(for builder in cc cmake; do
  # `-i` inverts the graph, `--depth 1` keeps the crates that depend on the builder itself.
  cargo tree --workspace --locked -e build,normal,dev -i "$builder" --depth 1 --prefix none \
    2>/dev/null | grep -v "^$builder v" || true
done | sed -E 's/ v[0-9].*//' | sort -u)
echo "crates that compile C/C++: ${found:-none}" | tr '\n' ' '
echo
others=$(grep -vx "openh264-sys2" <<<"$found" || true)
if [ -n "$others" ]; then
  echo "not allowed (only openh264 may compile C/C++): $others" | tr '\n' ' '
  echo
  exit 1
fi
