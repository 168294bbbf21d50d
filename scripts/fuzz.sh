#!/usr/bin/env bash
# Builds the libFuzzer targets with clang 14 (ASan + UBSan) in build-fuzz and runs each for a
# while. Fails when a target crashes; crash inputs are kept in build-fuzz/crashes/.
# Usage: scripts/fuzz.sh [seconds per target]   (default 60)
# See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
scripts/deps.sh fuzz

jobs=$(nproc)
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
      -DTOKENBOUNCER_BUILD_FUZZERS=ON -DTOKENBOUNCER_BUILD_TESTS=OFF -DTOKENBOUNCER_FUZZ_SECONDS="$seconds"
cmake --build build-fuzz -j "$jobs" --target tokenbouncer_fuzzers

# ctest runs every target on a scratch copy of its corpus (build-fuzz/tests/fuzz/work/<target>,
# the committed corpus and regressions are only read), first replaying the committed inputs.
# The fuzzers take one core each: run as many side by side as there are cores.
ctest --test-dir build-fuzz --output-on-failure -j "$jobs"
