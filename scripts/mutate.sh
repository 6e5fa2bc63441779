#!/usr/bin/env bash
# The long mutation run: the parser tests of tests/mutation.rs with many more cases and a
# time budget per parser, in an optimised build. A failing input is kept under
# tests/regressions/ (named after its parser and seed) and replayed by every later run.
#
# Usage: scripts/mutate.sh [cases per parser] [seconds per parser] [test name filter]
# (dev-only, not part of CI)
set -euo pipefail
cases=${1:-1000000}
seconds=${2:-600}
filter=${3:-}
STREAMTRACK_MUTATION_CASES=$cases STREAMTRACK_MUTATION_SECONDS=$seconds STREAMTRACK_MUTATION_SAVE=1 \
  cargo test --release --test mutation -- --nocapture --test-threads 1 $filter 2>&1 |
  grep -E "inputs|panicked|test result|kept as"
