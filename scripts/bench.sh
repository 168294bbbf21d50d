#!/usr/bin/env bash
# Benchmark: pgbench directly, through PgBouncer and through tokenbouncer, alternating in one run;
# prints TPS, latency, proxy CPU per transaction and the ratios.
#   scripts/bench.sh [--seconds N] [--rounds N] [--only select,connect,txn200,prepared,memory]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target tokenbouncer >/dev/null
ulimit -n 65536 2>/dev/null || true
exec /usr/bin/python3 scripts/bench.py "$@"
