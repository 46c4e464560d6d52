#!/usr/bin/env bash
# pg_upgrade of a cluster with session_gc from one PostgreSQL major to the next, as a DBA runs
# it (README, Upgrading): a cluster of OLD with the library preloaded, policies on a timestamptz,
# a naive and an epoch table, a purge's history and totals, and rows expired since; pg_upgrade
# to NEW, which has the same session_gc installed; then the policies, history and totals are
# there and cleanup() purges exactly the rows expired before, keeping every live one.
# Called by scripts/test.sh: 16 -> 18, and 16 -> 17 inside the trixie root (which borrows 16's
# install).
# The extension must be installed into both majors (the test command has done it).
# Usage: scripts/test-pg-upgrade.sh OLD NEW
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/majors.sh

old=${1:?usage: scripts/test-pg-upgrade.sh OLD NEW} new=${2:?usage: scripts/test-pg-upgrade.sh OLD NEW}
old_bin=$("$(pg_config_for "$old")" --bindir)
new_bin=$("$(pg_config_for "$new")" --bindir)
echo "== pg_upgrade from PostgreSQL $old to $new with session_gc"

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
dir=$(mktemp -d "/tmp/session_gc-pg-upgrade-$old-$new.XXXXXX")
port=${SESSION_GC_UPGRADE_PORT:-54339}
stop_all() {
    as_pg "$old_bin/pg_ctl" -D "$dir/old" -m fast -w stop >/dev/null 2>&1 || true
    as_pg "$new_bin/pg_ctl" -D "$dir/new" -m fast -w stop >/dev/null 2>&1 || true
}
cleanup_dir() { stop_all; rm -rf "$dir"; }
trap cleanup_dir EXIT
if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi

make_cluster() { # BIN DATA
    # Checksums on both: 18 makes them by default, and pg_upgrade needs the two to agree.
    as_pg "$1/initdb" -D "$2" -A trust -U postgres -E UTF8 --locale=C --data-checksums --no-sync >/dev/null
    cat >>"$2/postgresql.conf" <<CONF
shared_preload_libraries = 'session_gc'
session_gc.enabled = off
CONF
}
start() { # BIN DATA
    as_pg "$1/pg_ctl" -D "$2" -l "$dir/$(basename "$2").log" -w \
        -o "-p $port -k $dir -c listen_addresses=''" start >/dev/null
}
psql_in() { "$1/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "${@:2}"; }
# What must survive the upgrade unchanged: policies, history and totals.
kept_state() {
    psql_in "$1" -c "SELECT table_name::text, expires_column, epoch_unit, time_zone, policy_name
                       FROM session_gc.policies ORDER BY 1, 5" \
        -c "SELECT table_name, trigger, status, deleted FROM session_gc.history ORDER BY id" \
        -c "SELECT table_name::text, runs, deleted_total FROM session_gc.totals ORDER BY 1"
}
fail() {
    echo "pg_upgrade $old -> $new: $*" >&2
    cat "$dir"/*.log >&2 2>/dev/null || true
    find "$dir/new" -path '*pg_upgrade_output.d*' -name '*.log' -exec tail -n 20 {} + >&2 2>/dev/null || true
    exit 1
}

make_cluster "$old_bin" "$dir/old"
start "$old_bin" "$dir/old"
psql_in "$old_bin" >/dev/null <<'SQL'
CREATE EXTENSION session_gc;
CREATE TABLE zoned (id bigserial PRIMARY KEY, expires timestamptz NOT NULL);
CREATE INDEX ON zoned (expires);
CREATE TABLE naive (id bigserial PRIMARY KEY, expires timestamp NOT NULL);
CREATE INDEX ON naive (expires);
CREATE TABLE epoch (id bigserial PRIMARY KEY, expires bigint NOT NULL);
CREATE INDEX ON epoch (expires);
INSERT INTO zoned (expires) SELECT now() - interval '1 day' FROM generate_series(1, 100);
INSERT INTO zoned (expires) SELECT now() + interval '1 day' FROM generate_series(1, 50);
INSERT INTO naive (expires) SELECT (now() AT TIME ZONE 'UTC') - interval '1 day' FROM generate_series(1, 100);
INSERT INTO naive (expires) SELECT (now() AT TIME ZONE 'UTC') + interval '1 day' FROM generate_series(1, 50);
INSERT INTO epoch (expires) SELECT extract(epoch FROM now())::bigint - 86400 FROM generate_series(1, 100);
INSERT INTO epoch (expires) SELECT extract(epoch FROM now())::bigint + 86400 FROM generate_series(1, 50);
SELECT session_gc.register('zoned', expires_column => 'expires');
SELECT session_gc.register('naive', expires_column => 'expires', time_zone => 'UTC');
SELECT session_gc.register('epoch', expires_column => 'expires', epoch_unit => 's');
SELECT * FROM session_gc.cleanup();
-- Expired since the last purge: the upgraded cluster must purge these.
INSERT INTO zoned (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 30);
INSERT INTO naive (expires) SELECT (now() AT TIME ZONE 'UTC') - interval '1 hour' FROM generate_series(1, 30);
INSERT INTO epoch (expires) SELECT extract(epoch FROM now())::bigint - 3600 FROM generate_series(1, 30);
SQL
before=$(kept_state "$old_bin")
as_pg "$old_bin/pg_ctl" -D "$dir/old" -m fast -w stop >/dev/null

make_cluster "$new_bin" "$dir/new"
# pg_upgrade writes its reports into the current directory.
if ! (cd "$dir" && as_pg "$new_bin/pg_upgrade" -b "$old_bin" -B "$new_bin" -d "$dir/old" -D "$dir/new" \
    -p "$port" -P "$port" --socketdir="$dir" >"$dir/pg_upgrade.log" 2>&1); then
    fail "pg_upgrade failed"
fi
start "$new_bin" "$dir/new"
after=$(kept_state "$new_bin")
[ "$before" = "$after" ] || fail "policies, history or totals changed:
before: $before
after:  $after"
purged=$(psql_in "$new_bin" -c "SELECT string_agg(table_name::text || '=' || deleted, ' ' ORDER BY table_name::text)
                                  FROM session_gc.cleanup()")
[ "$purged" = "epoch=30 naive=30 zoned=30" ] || fail "cleanup() after the upgrade purged: $purged"
left=$(psql_in "$new_bin" -c "SELECT (SELECT count(*) FROM zoned) || ' ' || (SELECT count(*) FROM naive)
                                     || ' ' || (SELECT count(*) FROM epoch)")
[ "$left" = "50 50 50" ] || fail "live rows left after the purge: $left (50 each expected)"
echo "   PostgreSQL $old -> $new: policies, history and totals kept; the purge after it deleted the 90 expired rows and kept the 150 live ones"
