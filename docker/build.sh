#!/usr/bin/env bash
# Builds tokenbouncer in Release and installs it into a staging directory. The ONE build script:
# docker/Dockerfile runs it in its build stage, tests/integration/test_packaging.py runs it too.
#
#   docker/build.sh --destdir DIR [--prefix /usr] [--build-dir DIR] [--jobs N]
#
#   --destdir DIR    stage the installation under DIR (cmake --install with DESTDIR=DIR); required
#   --prefix P       installation prefix (default /usr: /usr/bin/tokenbouncer,
#                    /usr/lib/systemd/system/tokenbouncer.service, /etc/tokenbouncer/tokenbouncer.conf)
#   --build-dir DIR  build directory (default: a fresh one under /tmp). When DIR is already
#                    configured (DIR/CMakeCache.txt exists) it is reused as it is: no configure,
#                    only an incremental build of the binary and the install, with the prefix DIR
#                    was configured with (--prefix must then agree or be left out).
#   --jobs N         parallel build jobs (default: nproc)
#   --configure-only configure a fresh --build-dir as the build would, and stop (the packaging
#                    test reads the install rules of exactly this configuration)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)

destdir= prefix= build_dir= jobs=$(nproc) configure_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) destdir=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --configure-only) configure_only=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$destdir" ] || [ "$configure_only" = 1 ] || { echo "build.sh: --destdir is required (see --help)" >&2; exit 2; }

"$src/scripts/deps.sh" build

if [ -n "$build_dir" ] && [ -f "$build_dir/CMakeCache.txt" ]; then
  configured=$(sed -n 's/^CMAKE_INSTALL_PREFIX:[A-Z]*=//p' "$build_dir/CMakeCache.txt")
  if [ -n "$prefix" ] && [ "$prefix" != "$configured" ]; then
    echo "build.sh: $build_dir is configured with prefix $configured, not $prefix" >&2
    exit 2
  fi
  echo "build.sh: reusing $build_dir (prefix $configured)"
  [ "$configure_only" = 1 ] && exit 0
  cmake --build "$build_dir" --target tokenbouncer -j "$jobs"
else
  build_dir=${build_dir:-$(mktemp -d /tmp/tokenbouncer-build.XXXXXX)}
  cmake -S "$src" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX="${prefix:-/usr}" -DTOKENBOUNCER_BUILD_TESTS=OFF
  [ "$configure_only" = 1 ] && exit 0
  cmake --build "$build_dir" -j "$jobs"
fi

DESTDIR="$destdir" cmake --install "$build_dir"
"$destdir$(sed -n 's/^CMAKE_INSTALL_PREFIX:[A-Z]*=//p' "$build_dir/CMakeCache.txt")/bin/tokenbouncer" --version
