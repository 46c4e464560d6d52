#!/usr/bin/env bash
# The whole test suite, on PostgreSQL 15, 16, 17 and 18, from a fresh machine: set-up,
# formatting and lints, then for each major (scripts/test-major.sh) its lints, the in-server unit
# tests, the packaged install and the client-driven integration tests against real clusters.
# Usage: scripts/test.sh [15|16|17|18 ...]   (default: all four)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/majors.sh

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=("${SUPPORTED_MAJORS[@]}")
for v in "${versions[@]}"; do
    supported_major "$v" || { echo "unsupported PostgreSQL major: $v (15, 16, 17 or 18)" >&2; exit 2; }
done

step_started=$SECONDS
took() { echo "   ($1: $((SECONDS - step_started)) s)"; step_started=$SECONDS; }

scripts/setup.sh --tests "${versions[@]}"
for v in "${versions[@]}"; do
    # The trixie root must be the one today's package list makes, as on a fresh machine.
    if [ "$v" = 17 ]; then scripts/trixie.sh check; fi
done
took "set-up"

echo "== cargo fmt --check"
cargo fmt --all --check
(cd tests && cargo fmt --check)
(cd tests && cargo clippy --quiet --all-targets -- -D warnings)
took "fmt, and clippy of the tests"

declare -A seconds_for
for v in "${versions[@]}"; do
    started=$SECONDS
    if runs_in_trixie_root "$v"; then
        scripts/trixie.sh run scripts/test-major.sh "$v"
    else
        scripts/test-major.sh "$v"
    fi
    seconds_for[$v]=$((SECONDS - started))
done
# pg_upgrade across majors tested in this run, with what a DBA installs: 16 -> 18 here (both
# relocatable, the trees installed), 16 -> 17 inside the trixie root (which borrows 16's
# install) with 17's package. Not from 15: this machine's 15 (15.20-0+deb12u1) stores a
# pg_attver option on every column, which no other server accepts, so pg_upgrade from it fails
# for any cluster, a bare table's too.
tested() { local v; for v in "${versions[@]}"; do [ "$v" = "$1" ] && return 0; done; return 1; }
step_started=$SECONDS
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
deb_of() { echo "target/debian/postgresql-$1-session-gc_${version}-1_amd64.deb"; }
with_package() { # DEB PACKAGE CMD...: CMD with the .deb installed, removed after it
    local deb=$1 package=$2 rc=0
    shift 2
    DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null
    "$@" || rc=$?
    DEBIAN_FRONTEND=noninteractive dpkg -r "$package" >/dev/null
    return $rc
}
if tested 16 && tested 18; then
    scripts/test-pg-upgrade.sh 16 18
    took "pg_upgrade 16 -> 18"
fi
if tested 16 && tested 17; then
    scripts/trixie.sh run bash -euc "$(declare -f with_package); with_package \"\$@\"" with \
        "$(deb_of 17)" postgresql-17-session-gc scripts/test-pg-upgrade.sh 16 17
    took "pg_upgrade 16 -> 17"
fi

echo "== all tests passed on PostgreSQL ${versions[*]} in $SECONDS s"
for v in "${versions[@]}"; do
    echo "   PostgreSQL $v: ${seconds_for[$v]} s"
done
