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

scripts/setup.sh
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
echo "== all tests passed on PostgreSQL ${versions[*]} in $SECONDS s"
for v in "${versions[@]}"; do
    echo "   PostgreSQL $v: ${seconds_for[$v]} s"
done
