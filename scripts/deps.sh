#!/usr/bin/env bash
# Installs, when missing, the Debian 12 packages tokenbouncer needs to build, test and benchmark.
# Usage: scripts/deps.sh [build|test|fuzz|all]   (default: all but fuzz)
set -euo pipefail

what=${1:-test}
build=(cmake ninja-build g++ pkg-config libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
       libssl-dev libspdlog-dev libfmt-dev catch2)
test=(postgresql-15 postgresql-client-15 pgbouncer python3 python3-psycopg python3-asyncpg python3-pytest
      openssl ca-certificates procps iproute2 systemd)
fuzz=(clang-14 libclang-rt-14-dev)

case "$what" in
  build) pkgs=("${build[@]}") ;;
  test)  pkgs=("${build[@]}" "${test[@]}") ;;
  fuzz)  pkgs=("${build[@]}" "${fuzz[@]}") ;;
  all)   pkgs=("${build[@]}" "${test[@]}" "${fuzz[@]}") ;;
  *) echo "usage: $0 [build|test|fuzz|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  # A fresh postgresql-15 would create and start a "main" cluster on port 5432; the tests start
  # their own servers, so do not create one.
  if [[ " ${missing[*]} " == *" postgresql-15 "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    $SUDO mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
