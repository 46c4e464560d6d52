-- session_gc 0.1.0 -> 0.2.0: per-user session caps, the drop_partitions strategy, metrics for
-- monitoring, NOTIFY after runs. Run by ALTER EXTENSION session_gc UPDATE.
\echo Use "ALTER EXTENSION session_gc UPDATE TO '0.2.0'" to load this file. \quit

-- Policies: the per-user cap and the new strategy.
ALTER TABLE session_gc.policies
    DROP CONSTRAINT policies_strategy_check,
    ADD CONSTRAINT policies_strategy_check CHECK (strategy IN ('delete_rows', 'drop_partitions')),
    ADD COLUMN user_column name,
    ADD COLUMN max_per_user integer CONSTRAINT policies_max_per_user_check CHECK (max_per_user > 0),
    ADD COLUMN activity_column name,
    DROP CONSTRAINT policies_check2,
    ADD CONSTRAINT policies_check2
        CHECK (num_nonnulls(expires_column, idle_column, created_column, active_column, user_column) > 0),
    ADD CONSTRAINT policies_cap_check CHECK ((user_column IS NULL) = (max_per_user IS NULL));

-- Totals gain the counters monitoring needs; errors still in history seed the error counter.
ALTER TABLE session_gc.totals
    ADD COLUMN partitions_dropped_total bigint NOT NULL DEFAULT 0,
    ADD COLUMN errors_total bigint NOT NULL DEFAULT 0;
UPDATE session_gc.totals t
   SET errors_total = (SELECT count(*) FROM session_gc.history h
                        WHERE h.relid = t.table_name::oid AND h.status = 'error');

ALTER TABLE session_gc.history
    ADD COLUMN over_cap bigint NOT NULL DEFAULT 0,
    ADD COLUMN partitions_dropped integer NOT NULL DEFAULT 0;

-- Partitions detached by drop_partitions and not dropped yet.
CREATE TABLE session_gc.pending_drops (
    relid        oid         PRIMARY KEY,
    parent       regclass    NOT NULL REFERENCES session_gc.policies ON DELETE CASCADE,
    schema_name  name        NOT NULL,
    table_name   name        NOT NULL,
    detached_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON session_gc.pending_drops FROM PUBLIC;

-- register(), cleanup() and stats() change signature or result columns: they are recreated,
-- and whatever EXECUTE grants the old ones had are given to the new ones.
DO $upgrade$
DECLARE
    changed record;
    grantees text[];
    grantee text;
BEGIN
    FOR changed IN
        SELECT * FROM (VALUES
            ('session_gc.register(regclass, name, name, interval, name, interval, name, interval, text, text, integer, boolean)',
             'session_gc.register(regclass, name, name, interval, name, interval, name, interval, text, text, integer, boolean, text, name, integer, name)',
             $create$
CREATE FUNCTION session_gc.register(
	"tbl" regclass,
	"expires_column" name DEFAULT NULL,
	"idle_column" name DEFAULT NULL,
	"idle_timeout" interval DEFAULT NULL,
	"created_column" name DEFAULT NULL,
	"max_age" interval DEFAULT NULL,
	"active_column" name DEFAULT NULL,
	"grace" interval DEFAULT '0',
	"epoch_unit" TEXT DEFAULT NULL,
	"time_zone" TEXT DEFAULT NULL,
	"batch_size" INT DEFAULT NULL,
	"enabled" bool DEFAULT true,
	"strategy" TEXT DEFAULT 'delete_rows',
	"user_column" name DEFAULT NULL,
	"max_per_user" INT DEFAULT NULL,
	"activity_column" name DEFAULT NULL
) RETURNS TEXT
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'register_v2_wrapper'
$create$),
            ('session_gc.cleanup(regclass, boolean, integer, interval)',
             'session_gc.cleanup(regclass, boolean, integer, interval)',
             $create$
CREATE FUNCTION session_gc.cleanup(
	"tbl" regclass DEFAULT NULL,
	"dry_run" bool DEFAULT false,
	"batch_size" INT DEFAULT NULL,
	"max_runtime" interval DEFAULT NULL
) RETURNS TABLE (
	"table_name" regclass,
	"deleted" bigint,
	"expired" bigint,
	"idle" bigint,
	"aged" bigint,
	"inactive" bigint,
	"over_cap" bigint,
	"partitions_dropped" INT,
	"batches" INT,
	"duration" interval,
	"status" TEXT,
	"error" TEXT
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'cleanup_v2_wrapper'
$create$),
            ('session_gc.stats(regclass)',
             'session_gc.stats(regclass, boolean)',
             $create$
CREATE FUNCTION session_gc.stats(
	"tbl" regclass DEFAULT NULL,
	"exact" bool DEFAULT NULL
) RETURNS TABLE (
	"table_name" regclass,
	"total_rows" bigint,
	"expired_rows" bigint,
	"expired" bigint,
	"idle" bigint,
	"aged" bigint,
	"inactive" bigint,
	"over_cap" bigint,
	"exact" bool,
	"oldest_expired" timestamp with time zone,
	"table_bytes" bigint,
	"dead_rows" bigint,
	"last_run" timestamp with time zone,
	"last_deleted" bigint,
	"deleted_total" bigint
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'stats_v2_wrapper'
$create$)) AS f(old_signature, new_signature, definition)
    LOOP
        SELECT coalesce(array_agg(a.grantee::regrole::text), '{}') INTO grantees
          FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
         WHERE p.oid = changed.old_signature::regprocedure
           AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner;
        EXECUTE format('DROP FUNCTION %s', changed.old_signature);
        EXECUTE changed.definition;
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', changed.new_signature);
        FOREACH grantee IN ARRAY grantees LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', changed.new_signature, grantee);
        END LOOP;
    END LOOP;
END
$upgrade$;

-- Figures for monitoring, one row per registered table.
CREATE FUNCTION session_gc.metrics() RETURNS TABLE (
	"database" TEXT,
	"table_name" TEXT,
	"strategy" TEXT,
	"enabled" bool,
	"runs_total" bigint,
	"deleted_total" bigint,
	"partitions_dropped_total" bigint,
	"errors_total" bigint,
	"expired_backlog" bigint,
	"over_cap_backlog" bigint,
	"last_run_age_seconds" double precision,
	"last_run_ok" bool,
	"table_bytes" bigint
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'metrics_wrapper';
REVOKE ALL ON FUNCTION session_gc.metrics() FROM PUBLIC;

-- Monitoring (postgres_exporter and the like) reads counts, never session rows.
GRANT USAGE ON SCHEMA session_gc TO pg_monitor;
GRANT EXECUTE ON FUNCTION session_gc.metrics() TO pg_monitor;
GRANT EXECUTE ON FUNCTION session_gc.worker_status() TO pg_monitor;
