#!/usr/bin/env bash
# One PostgreSQL major's part of the suite (called by scripts/test.sh, inside the trixie root for
# 17): clippy for that major, the in-server unit tests (cargo pgrx test), the packaged install,
# then the client-driven integration tests against real clusters of that major.
# Usage: scripts/test-major.sh 15|16|17|18
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/majors.sh

v=${1:?usage: scripts/test-major.sh MAJOR}
pg_config=$(pg_config_for "$v")
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
target=${CARGO_TARGET_DIR:-target}

step_started=$SECONDS
took() { echo "   (PostgreSQL $v $1: $((SECONDS - step_started)) s)"; step_started=$SECONDS; }

# Backtraces in a server's error details are for debugging, not for tests of error reports.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

echo "== PostgreSQL $v: cargo clippy -D warnings"
cargo clippy --quiet --no-default-features --features "pg$v pg_test" --all-targets -- -D warnings
took "clippy"

pgdata_root=/tmp/session_gc-pgrx-test-$v
mkdir -p "$pgdata_root"
chown postgres "$pgdata_root" 2>/dev/null || true
echo "== PostgreSQL $v: in-server unit tests"
cargo pgrx test "pg$v" --runas postgres --pgdata "$pgdata_root/data"
took "unit tests"

echo "== PostgreSQL $v: packaging the extension (the install artifact) and installing the package"
cargo pgrx package --pg-config "$pg_config" --no-default-features --features "pg$v" >/dev/null
package_dir=$target/release/session_gc-pg$v
upgrades=$(cd sql && ls session_gc--*--*.sql)
for file in session_gc.control "session_gc--$version.sql" $upgrades session_gc.so; do
    if ! find "$package_dir" -name "$file" | grep -q .; then
        echo "the package lacks $file" >&2
        exit 1
    fi
done
# A new file rather than an overwrite: a running server keeps its mapping of the old library.
cp -a --remove-destination "$package_dir/." /
# The previous releases' install scripts, for the upgrade test only.
cp sql/archive/session_gc--*.sql "$("$pg_config" --sharedir)/extension/"
took "package"

# Citus, for tests/tests/citus.rs (a test dependency, built once per machine and root).
citus=0
case "$v" in
    16|17) scripts/citus.sh "$v"; citus=1; took "Citus" ;;
esac

echo "== PostgreSQL $v: integration tests on real clusters"
# The real session libraries the framework tests drive, pinned (once per machine and root).
scripts/libraries.sh "$target/libraries"
SESSION_GC_CITUS=$citus SESSION_GC_LIBRARIES=$(cd "$target/libraries" && pwd) SESSION_GC_PG_BIN=$("$pg_config" --bindir) \
    cargo test --manifest-path tests/Cargo.toml -- --test-threads=4
took "integration tests"
