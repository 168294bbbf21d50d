#!/usr/bin/env bash
# Regenerates what is printed from the key table (src/config/settings.cpp): the example
# config/tokenbouncer.conf and the key reference in docs/configuration.md (between its
# BEGIN/END KEY REFERENCE markers; the introduction above them is hand-written).
# tests/integration/test_packaging.py fails when the committed files differ from this output.
#   scripts/gen-docs.sh [path/to/tokenbouncer]   (default: builds build/tokenbouncer)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-}
if [ -z "$bin" ]; then
  [ -f build/CMakeCache.txt ] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build --target tokenbouncer >/dev/null
  bin=build/tokenbouncer
fi

"$bin" --print-keys=conf > config/tokenbouncer.conf.new
mv config/tokenbouncer.conf.new config/tokenbouncer.conf

begin='<!-- BEGIN KEY REFERENCE (scripts/gen-docs.sh) -->'
end='<!-- END KEY REFERENCE -->'
doc=docs/configuration.md
[ "$(grep -cxF "$begin" "$doc")" = 1 ] && [ "$(grep -cxF "$end" "$doc")" = 1 ] ||
  { echo "gen-docs.sh: $doc needs exactly one '$begin' and one '$end' line" >&2; exit 1; }
"$bin" --print-keys=markdown > "$doc.keys"
awk -v begin="$begin" -v end="$end" -v keys="$doc.keys" '
  $0 == begin { print; print ""; while ((getline line < keys) > 0) print line; skip = 1; next }
  $0 == end   { skip = 0 }
  !skip       { print }
' "$doc" > "$doc.new"
mv "$doc.new" "$doc"
rm -f "$doc.keys"
echo "regenerated config/tokenbouncer.conf and the key reference in $doc"
