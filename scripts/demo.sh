#!/usr/bin/env bash
# The quick start: installs what is missing, builds tokenbouncer, starts a throwaway PostgreSQL 15
# that behaves like Azure Database for PostgreSQL (TLS only, asks for a password over TLS) and a
# local token service, runs tokenbouncer in front, shows psql going through it, and cleans up.
# Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh test >/dev/null
if [ ! -x build/tokenbouncer ] || [ -n "$(find src include CMakeLists.txt -newer build/tokenbouncer -print -quit)" ]; then
  echo "building tokenbouncer..."
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build --target tokenbouncer >/dev/null
fi
exec /usr/bin/python3 scripts/demo.py "$@"
