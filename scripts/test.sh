#!/usr/bin/env bash
# Installs what is missing (Debian 12 packages), builds, and runs every test, three ways:
#   1. a Release build: unit tests and the integration suites against a real PostgreSQL 15;
#   2. the same suites on an AddressSanitizer + UndefinedBehaviorSanitizer build, where any
#      sanitizer report fails the run;
#   3. every libFuzzer target for a short while (scripts/fuzz.sh).
# Run as root (PostgreSQL is started as the postgres user with runuser).
#
# Usage: scripts/test.sh [--quick]   --quick: the Release build only (for a fast local loop)
# Environment: TB_FUZZ_SECONDS (default 20) per fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

if [ "$quick" = 1 ]; then scripts/deps.sh test; else scripts/deps.sh all; fi

jobs=$(nproc)
phase() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

phase "release build and tests"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTOKENBOUNCER_WARNINGS_AS_ERRORS=ON
cmake --build build -j "$jobs"
# The integration suites are independent (own servers, free ports): run them side by side.
ctest --test-dir build --output-on-failure -j "$((jobs + 1))"

[ "$quick" = 1 ] && exit 0

phase "sanitizer build (ASan + UBSan) and tests"
# Warnings are enforced by the release build; GCC 12 gives false ones (-Wmaybe-uninitialized,
# -Wmismatched-new-delete in Boost's coroutine frames) when sanitizers are on.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTOKENBOUNCER_SANITIZE=ON \
      -DTOKENBOUNCER_WARNINGS_AS_ERRORS=OFF
cmake --build build-asan -j "$jobs"
# Reports go to files as well as failing the process (-fno-sanitize-recover): a report in a
# tokenbouncer that a test only stops at the end would otherwise go unseen.
reports=$(mktemp -d /tmp/tb-sanitizer-XXXXXX)
chmod 1777 "$reports"
export ASAN_OPTIONS="detect_leaks=1:log_path=$reports/asan:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/ubsan"
status=0
ctest --test-dir build-asan --output-on-failure -j "$((jobs + 1))" || status=$?
if compgen -G "$reports/*" >/dev/null; then
  echo "sanitizer reports:"
  for f in "$reports"/*; do echo "--- $f"; cat "$f"; done
  status=1
fi
rm -rf "$reports"
unset ASAN_OPTIONS UBSAN_OPTIONS
[ "$status" = 0 ] || exit "$status"

phase "fuzzing (${TB_FUZZ_SECONDS:-20} s per target)"
scripts/fuzz.sh "${TB_FUZZ_SECONDS:-20}"

phase "all passed"
