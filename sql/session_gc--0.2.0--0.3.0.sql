-- session_gc 0.2.0 -> 0.3.0: cleanup() purges in committed batches (in_transaction => true keeps
-- the old way), purge() is no longer executable by PUBLIC, worker_status() shows other tables'
-- activity only to roles that may read all statistics, NOTIFY payloads name no table and
-- session_gc.run(run_id) reads one's own run. Run by ALTER EXTENSION session_gc UPDATE.
\echo Use "ALTER EXTENSION session_gc UPDATE TO '0.3.0'" to load this file. \quit

-- cleanup() gains in_transaction: recreated, keeping whatever EXECUTE grants it had.
-- worker_status() becomes a C function (it must know who calls it): recreated likewise.
DO $upgrade$
DECLARE
    changed record;
    grantees text[];
    grantee text;
BEGIN
    FOR changed IN
        SELECT * FROM (VALUES
            ('session_gc.cleanup(regclass, boolean, integer, interval)',
             'session_gc.cleanup(regclass, boolean, integer, interval, boolean)',
             $create$
CREATE FUNCTION session_gc.cleanup(
	"tbl" regclass DEFAULT NULL,
	"dry_run" bool DEFAULT false,
	"batch_size" INT DEFAULT NULL,
	"max_runtime" interval DEFAULT NULL,
	"in_transaction" bool DEFAULT false
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
AS 'MODULE_PATHNAME', 'cleanup_v3_wrapper'
$create$),
            ('session_gc.worker_status()',
             'session_gc.worker_status()',
             $create$
CREATE FUNCTION session_gc.worker_status() RETURNS TABLE (
	"database" name,
	"worker_running" bool,
	"enabled" bool,
	"in_recovery" bool,
	"launcher_pid" INT,
	"worker_pid" INT,
	"worker_activity" TEXT,
	"interval" interval,
	"last_pass_started" timestamp with time zone,
	"last_pass_finished" timestamp with time zone,
	"last_pass_tables" INT,
	"last_pass_deleted" bigint,
	"last_pass_errors" bigint,
	"next_pass" timestamp with time zone
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'worker_status_wrapper'
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

-- unregister(NULL) is refused with an error instead of returning NULL.
ALTER FUNCTION session_gc.unregister(regclass) CALLED ON NULL INPUT;

-- One run of history, for listeners of NOTIFY session_gc (the payload names no table).
CREATE FUNCTION session_gc.run(
	"run_id" bigint
) RETURNS TABLE (
	"table_name" regclass,
	"trigger" TEXT,
	"status" TEXT,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	"deleted" bigint,
	"partitions_dropped" INT,
	"error" TEXT
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'run_wrapper';

-- ALL FUNCTIONS does not cover procedures: purge() was executable by PUBLIC.
REVOKE ALL ON ALL ROUTINES IN SCHEMA session_gc FROM PUBLIC;
GRANT EXECUTE ON FUNCTION session_gc.worker_status() TO pg_monitor;

-- A time_zone stored as an abbreviation ('EST') was read through each caller's
-- timezone_abbreviations; 0.3.0 stores the fixed UTC offset it stands for (here, in the
-- updating session's abbreviations) as a POSIX zone, which reads the same for everyone.
UPDATE session_gc.policies p
   SET time_zone = CASE WHEN z.seconds OPERATOR(pg_catalog.=) 0 THEN 'UTC'
       ELSE pg_catalog.format('<%s%s%s>%s%s:%s:%s',
                CASE WHEN z.seconds OPERATOR(pg_catalog.>) 0 THEN '+' ELSE '-' END,
                pg_catalog.lpad((z.magnitude OPERATOR(pg_catalog./) 3600)::pg_catalog.text, 2, '0'),
                CASE WHEN z.magnitude OPERATOR(pg_catalog.%) 3600 OPERATOR(pg_catalog.=) 0 THEN ''
                     ELSE pg_catalog.lpad((z.magnitude OPERATOR(pg_catalog./) 60 OPERATOR(pg_catalog.%) 60)::pg_catalog.text, 2, '0') END,
                CASE WHEN z.seconds OPERATOR(pg_catalog.>) 0 THEN '-' ELSE '+' END,
                z.magnitude OPERATOR(pg_catalog./) 3600,
                pg_catalog.lpad((z.magnitude OPERATOR(pg_catalog./) 60 OPERATOR(pg_catalog.%) 60)::pg_catalog.text, 2, '0'),
                pg_catalog.lpad((z.magnitude OPERATOR(pg_catalog.%) 60)::pg_catalog.text, 2, '0'))
       END
  FROM (SELECT a.abbrev,
               extract(epoch FROM a.utc_offset)::pg_catalog.int4 AS seconds,
               pg_catalog.abs(extract(epoch FROM a.utc_offset)::pg_catalog.int4) AS magnitude
          FROM pg_catalog.pg_timezone_abbrevs a) z
 WHERE pg_catalog.lower(z.abbrev) OPERATOR(pg_catalog.=) pg_catalog.lower(p.time_zone)
   AND p.time_zone OPERATOR(pg_catalog.!~) '^<';
