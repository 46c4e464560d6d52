#!/usr/bin/env bash
# The demo: a throwaway PostgreSQL cluster (15 unless `--pg 16`, `--pg 17` or `--pg 18`) with session_gc
# preloaded, 100,000 sample sessions, stats() before, cleanup(), stats() after; then more
# sessions expire, the background worker is switched on with a reload and purges them; worker
# status, stats and history after. Leaves nothing running.
# Usage: scripts/demo.sh [--pg 15|16|17|18]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/majors.sh

major=15
while [ $# -gt 0 ]; do
    case "$1" in
        --pg) major=${2:-}; shift 2 ;;
        *) echo "usage: scripts/demo.sh [--pg 15|16|17|18]" >&2; exit 2 ;;
    esac
done
pg_config=$(pg_config_for "$major")

scripts/setup.sh "$major"
if runs_in_trixie_root "$major"; then
    exec scripts/trixie.sh run scripts/demo.sh --pg "$major"
fi
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
echo "== building and installing session_gc into PostgreSQL $major"
cargo pgrx install --pg-config "$pg_config" --no-default-features --features "pg$major" >/dev/null

bin=$("$pg_config" --bindir)
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
cat >>"$dir/data/postgresql.conf" <<CONF
shared_preload_libraries = 'session_gc'
session_gc.enabled = off        # switched on later in the demo, with a reload
session_gc.interval = 2s
CONF
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-p $port -k $dir -c listen_addresses=''" start >/dev/null

run_sql() { "$bin/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres "$@"; }
run_sql -f demo/sessions.sql
run_sql -f demo/worker-before.sql
echo "   waiting for the worker (polling session_gc.history, 60 s at most)..."
deadline=$((SECONDS + 60))
until [ "$(run_sql -At -c "SELECT count(*) FROM session_gc.history WHERE trigger = 'worker' AND status <> 'running'")" -gt 0 ]; do
    if [ $SECONDS -ge $deadline ]; then
        echo "the worker did not run within 60 s; server log:" >&2
        cat "$dir/server.log" >&2
        exit 1
    fi
    sleep 0.2
done
echo
echo "== the server log says"
grep "session_gc" "$dir/server.log" | sed 's/^/   /'
run_sql -f demo/worker-after.sql
echo
echo "== demo finished; the cluster is removed"
