-- session_gc 0.3.0 -> 0.4.0: a table may have several policies (policy_name), each about the
-- rows its row_filter selects (Phoenix's users_tokens: one policy per kind of token); purges
-- wait for standbys (session_gc.max_replica_lag) and history, totals and metrics() show how long.
-- Run by ALTER EXTENSION session_gc UPDATE.
\echo Use "ALTER EXTENSION session_gc UPDATE TO '0.4.0'" to load this file. \quit

-- Totals and pending drops referred to the policy of their table; a table may now have several,
-- so a trigger removes them with the table's last policy instead of a foreign key.
ALTER TABLE session_gc.totals DROP CONSTRAINT totals_table_name_fkey;
ALTER TABLE session_gc.pending_drops DROP CONSTRAINT pending_drops_parent_fkey;
ALTER TABLE session_gc.policies
    DROP CONSTRAINT policies_pkey,
    ADD COLUMN policy_name text NOT NULL DEFAULT 'default'
        CONSTRAINT policies_policy_name_check CHECK (policy_name <> ''),
    ADD COLUMN row_filter text;
-- Dropping the primary key may take its NOT NULL along (PostgreSQL 18).
ALTER TABLE session_gc.policies ALTER COLUMN table_name SET NOT NULL;
ALTER TABLE session_gc.policies ADD CONSTRAINT policies_pkey PRIMARY KEY (table_name, policy_name);

-- Time purges waited for standbys.
ALTER TABLE session_gc.history ADD COLUMN replica_wait interval NOT NULL DEFAULT '0';
ALTER TABLE session_gc.totals ADD COLUMN replica_wait_total interval NOT NULL DEFAULT '0';

CREATE FUNCTION session_gc.forget_unregistered_tables() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM session_gc.totals t
     WHERE t.table_name IN (SELECT g.table_name FROM gone g)
       AND NOT EXISTS (SELECT FROM session_gc.policies p WHERE p.table_name = t.table_name);
    DELETE FROM session_gc.pending_drops d
     WHERE d.parent IN (SELECT g.table_name FROM gone g)
       AND NOT EXISTS (SELECT FROM session_gc.policies p WHERE p.table_name = d.parent);
    RETURN NULL;
END
$$;
CREATE TRIGGER forget_unregistered_tables AFTER DELETE ON session_gc.policies
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION session_gc.forget_unregistered_tables();
REVOKE ALL ON FUNCTION session_gc.forget_unregistered_tables() FROM PUBLIC;

-- register() gains row_filter and policy_name, unregister() policy_name, metrics()
-- replica_wait_seconds_total: recreated, keeping whatever EXECUTE grants they had (pg_monitor's
-- on metrics()).
DO $upgrade$
DECLARE
    changed record;
    grantees text[];
    grantee text;
BEGIN
    FOR changed IN
        SELECT * FROM (VALUES
            ('session_gc.register(regclass, name, name, interval, name, interval, name, interval, text, text, integer, boolean, text, name, integer, name)',
             'session_gc.register(regclass, name, name, interval, name, interval, name, interval, text, text, integer, boolean, text, name, integer, name, text, text)',
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
	"activity_column" name DEFAULT NULL,
	"row_filter" TEXT DEFAULT NULL,
	"policy_name" TEXT DEFAULT 'default'
) RETURNS TEXT
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'register_v4_wrapper'
$create$),
            ('session_gc.unregister(regclass)',
             'session_gc.unregister(regclass, text)',
             $create$
CREATE FUNCTION session_gc.unregister(
	"tbl" regclass,
	"policy_name" TEXT DEFAULT NULL
) RETURNS bool
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'unregister_v4_wrapper'
$create$),
            ('session_gc.metrics()',
             'session_gc.metrics()',
             $create$
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
	"table_bytes" bigint,
	"replica_wait_seconds_total" double precision
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'metrics_v4_wrapper'
$create$)) AS f(old_signature, new_signature, definition)
    LOOP
        SELECT coalesce(pg_catalog.array_agg(a.grantee::pg_catalog.regrole::pg_catalog.text), '{}'::pg_catalog.text[])
          INTO grantees
          FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
         WHERE p.oid OPERATOR(pg_catalog.=) changed.old_signature::pg_catalog.regprocedure
           AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
           AND a.grantee OPERATOR(pg_catalog.<>) 0
           AND a.grantee OPERATOR(pg_catalog.<>) p.proowner;
        EXECUTE pg_catalog.format('DROP FUNCTION %s', changed.old_signature);
        EXECUTE changed.definition;
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', changed.new_signature);
        FOREACH grantee IN ARRAY grantees LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s', changed.new_signature, grantee);
        END LOOP;
    END LOOP;
END
$upgrade$;
