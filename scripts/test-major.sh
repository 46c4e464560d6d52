#!/usr/bin/env bash
# One PostgreSQL major's part of the suite (called by scripts/test.sh, inside the trixie root for
# 17): clippy for that major, the in-server unit tests (cargo pgrx test), the packaged install
# (the .deb with dpkg -i on 15 and 17, the package tree on 16 and 18), the client-driven
# integration tests against real clusters of that major, then dpkg -r, which must leave no file.
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

# The install artifact: on Debian's servers (15 here, 17 in the trixie root) the .deb a DBA
# installs, with dpkg; on the relocatable 16 and 18 the tree of cargo pgrx package.
upgrades=$(cd sql && ls session_gc--*--*.sql)
expected_files=(session_gc.control "session_gc--$version.sql" $upgrades session_gc.so)
deb=
case "$v" in
    15|17)
        echo "== PostgreSQL $v: building the Debian package and installing it with dpkg -i"
        deb=$(scripts/package.sh "$v" | tail -1)
        package=postgresql-$v-session-gc
        contents=$(dpkg-deb -c "$deb")
        DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null
        # dpkg -L lists only our files: the library, the control file, the scripts, the doc.
        listed=$(dpkg -L "$package" | while read -r path; do [ -d "$path" ] || echo "$path"; done)
        foreign=$(echo "$listed" | grep -v -e "^$("$pg_config" --pkglibdir)/session_gc\.so$" \
            -e "^$("$pg_config" --sharedir)/extension/session_gc\(\.control\|--.*\.sql\)$" \
            -e "^/usr/share/doc/$package/copyright$" || true)
        if [ -n "$foreign" ]; then
            echo "dpkg -L $package lists files that are not session_gc's: $foreign" >&2
            exit 1
        fi
        for file in "${expected_files[@]}"; do
            if ! echo "$listed" | grep -q "/$file\$"; then
                echo "the package lacks $file" >&2
                exit 1
            fi
        done
        ;;
    *)
        echo "== PostgreSQL $v: packaging the extension (the install artifact) and installing the tree"
        cargo pgrx package --pg-config "$pg_config" --no-default-features --features "pg$v" >/dev/null
        package_dir=$target/release/session_gc-pg$v
        for file in "${expected_files[@]}"; do
            if ! find "$package_dir" -name "$file" | grep -q .; then
                echo "the package lacks $file" >&2
                exit 1
            fi
        done
        # A new file rather than an overwrite: a running server keeps its mapping of the old library.
        cp -a --remove-destination "$package_dir/." /
        ;;
esac
# The previous releases' install scripts, for the upgrade test only (removed after it).
archived=$(cd sql/archive && ls session_gc--*.sql)
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
SESSION_GC_PHP=$(inside_trixie_root && echo 0 || echo 1) SESSION_GC_CITUS=$citus SESSION_GC_LIBRARIES=$(cd "$target/libraries" && pwd) SESSION_GC_PG_BIN=$("$pg_config" --bindir) \
    cargo test --manifest-path tests/Cargo.toml -- --test-threads=4
took "integration tests"

if [ -n "$deb" ]; then
    echo "== PostgreSQL $v: removing the package with dpkg -r"
    for file in $archived; do rm -f "$("$pg_config" --sharedir)/extension/$file"; done
    DEBIAN_FRONTEND=noninteractive dpkg -r "$package" >/dev/null
    left=$(echo "$contents" | awk '{print $NF}' | sed 's|^\./|/|' | while read -r path; do
        [ -f "$path" ] && echo "$path"; done || true)
    if [ -n "$left" ] || dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null | grep -q '^ii'; then
        echo "dpkg -r $package left files behind or the package installed: ${left:-(still installed)}" >&2
        exit 1
    fi
    took "package removal"
fi
