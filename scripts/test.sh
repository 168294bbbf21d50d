#!/usr/bin/env bash
# Installs what is missing (Debian 12 packages), builds, and runs every test with ctest:
# the unit tests and the integration suites against a real PostgreSQL 15.
# Run as root (PostgreSQL is started as the postgres user with runuser).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh test

jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTOKENBOUNCER_WARNINGS_AS_ERRORS=ON
cmake --build build -j "$jobs"
# The integration suites are independent (own servers, free ports): run them side by side.
ctest --test-dir build --output-on-failure -j "$((jobs + 1))"
