#!/usr/bin/env bash
# Soak test (not run in CI): mixed pgbench load through tokenbouncer for a long time, with Microsoft
# Entra tokens from the fake token service (tests/fake_azure) that expire quickly and an upstream
# PostgreSQL 15 restart at a fixed interval. The load runs in consecutive chunks so that failures
# are attributed to time windows; a chunk that overlaps a restart window is counted separately.
# A restart window lasts from the restart until --grace seconds after PostgreSQL is back.
#
#   scripts/soak.sh [--minutes N] [--token-lifetime S] [--restart-every S]
#                   [--chunk S] [--grace S] [--scale N] [--rate TPS]
#
# Defaults: 30 minutes, tokens living 120 s, a restart every 600 s, 20 s chunks, 5 s grace.
# A short run: scripts/soak.sh --minutes 3 --token-lifetime 30 --restart-every 80
#
# Each chunk runs three pgbench processes side by side, all in transaction pooling mode:
#   tpcb     -c 8 built-in tpcb-like on the read-write port
#   select   -c 4 -S -M prepared on the read-only port (a second identity, role ro_role)
#   connect  -c 2 -S -C -R 100 (a new connection per transaction) on the read-write port
# Server connections are recycled (server_lifetime 30 s), so new upstream logins keep using
# fresh tokens; PostgreSQL accepts only the latest token of each identity.
#
# It prints one line per chunk (transactions, failed transactions, aborted clients, tokenbouncer's
# VmRSS), then totals, RSS samples, token fetches per identity and the distinct tokens upstream
# logins used. Exit status 1 when a target is missed: a failed transaction, aborted client, hung
# or stalled pgbench outside the restart windows; a growth trend in RSS; tokens not refreshed;
# tokenbouncer exiting. Failures inside restart windows are reported, not counted against it.
#
# --rate sets pgbench -R for the tpcb and select loads. SOAK_KEEP_LOG=1 keeps tokenbouncer's log.
# It builds build/tokenbouncer (Release) first; with TB_TEST_BINARY=/path/to/tokenbouncer it uses
# that binary and builds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test >/dev/null
if [ -z "${TB_TEST_BINARY:-}" ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build --target tokenbouncer >/dev/null
fi
ulimit -n 65536 2>/dev/null || true
exec /usr/bin/python3 scripts/soak.py "$@"
