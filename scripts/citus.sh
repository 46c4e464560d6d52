#!/usr/bin/env bash
# Builds Citus (vendor/, a test dependency only: session_gc does not need it) and installs it
# into a PostgreSQL major's install, once per machine (skipped when that install has it).
# Inside the trixie root for 17 (scripts/test-major.sh runs there). About a minute.
# Usage: scripts/citus.sh 16|17
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/majors.sh

v=${1:?usage: scripts/citus.sh 16|17}
version=14.0.1
pg_config=$(pg_config_for "$v")
control="$("$pg_config" --sharedir)/extension/citus.control"
if [ -f "$("$pg_config" --pkglibdir)/citus.so" ] && grep -q "default_version = '14.0-1'" "$control" 2>/dev/null; then
    exit 0
fi
echo "== building Citus $version for PostgreSQL $v (a test dependency)"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
tar xJf "vendor/citus-$version.tar.xz" -C "$build" --strip-components=1
(
    cd "$build"
    ./configure PG_CONFIG="$pg_config" --without-libcurl --without-lz4 --without-zstd >/dev/null
    make -j2 >/dev/null
    make install >/dev/null
)
