#!/usr/bin/env bash
# The demo: a throwaway PostgreSQL 15 cluster with session_gc, 100,000 sample sessions,
# stats() before, cleanup(), stats() and history after. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
echo "== building and installing session_gc into PostgreSQL 15"
cargo pgrx install --pg-config /usr/bin/pg_config --no-default-features --features pg15 >/dev/null

bin=/usr/lib/postgresql/15/bin
dir=$(mktemp -d /tmp/session_gc-demo.XXXXXX)
chown postgres "$dir"
port=${SESSION_GC_DEMO_PORT:-54329}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup_cluster() {
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup_cluster EXIT

echo "== starting a throwaway cluster in $dir (port $port)"
as_pg "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-p $port -k $dir -c listen_addresses=''" start >/dev/null

psql -X -q -h "$dir" -p "$port" -U postgres -d postgres -f demo/sessions.sql
echo
echo "== demo finished; the cluster is removed"
