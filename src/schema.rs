//! The extension's own tables, views and event trigger: what `CREATE EXTENSION` lays down
//! besides the functions. Privileges are settled last, once every function exists.
//! Also the check that those objects are of this library's version.

use crate::error::{GcError, GcResult};
use pgrx::PgSqlErrorCode;

pgrx::extension_sql!(
    r#"
-- One row per policy: which rows of a table are expired (the rules, for the rows its
-- row_filter selects) and how to remove them (the strategy). A table may have several
-- policies, told apart by policy_name. Kept by pg_dump as extension configuration.
CREATE TABLE session_gc.policies (
    table_name      regclass    NOT NULL,
    expires_column  name,
    idle_column     name,
    idle_timeout    interval,
    created_column  name,
    max_age         interval,
    active_column   name,
    grace           interval    NOT NULL DEFAULT '0',
    epoch_unit      text        CHECK (epoch_unit IN ('s', 'ms')),
    -- Since 0.6.0 NULL where no rule column is naive (no zone applies).
    time_zone       text,
    batch_size      integer     CHECK (batch_size > 0),
    enabled         boolean     NOT NULL DEFAULT true,
    strategy        text        NOT NULL DEFAULT 'delete_rows'
                    CONSTRAINT policies_strategy_check CHECK (strategy IN ('delete_rows', 'drop_partitions')),
    registered_by   name        NOT NULL DEFAULT current_user,
    registered_at   timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Since 0.2.0: the per-user cap (the oldest sessions beyond max_per_user are purged).
    user_column     name,
    max_per_user    integer     CONSTRAINT policies_max_per_user_check CHECK (max_per_user > 0),
    activity_column name,
    CONSTRAINT policies_check CHECK ((idle_column IS NULL) = (idle_timeout IS NULL)),
    CONSTRAINT policies_check1 CHECK ((created_column IS NULL) = (max_age IS NULL)),
    CONSTRAINT policies_check2
        CHECK (num_nonnulls(expires_column, idle_column, created_column, active_column, user_column) > 0),
    CONSTRAINT policies_cap_check CHECK ((user_column IS NULL) = (max_per_user IS NULL)),
    -- Since 0.4.0: several policies per table, each about the rows its filter selects.
    policy_name     text        NOT NULL DEFAULT 'default'
                    CONSTRAINT policies_policy_name_check CHECK (policy_name <> ''),
    row_filter      text,
    CONSTRAINT policies_pkey PRIMARY KEY (table_name, policy_name)
);
COMMENT ON TABLE session_gc.policies IS 'Expiry policies registered with session_gc.register()';
SELECT pg_catalog.pg_extension_config_dump('session_gc.policies', '');

-- Running totals per table: survive history trimming.
CREATE TABLE session_gc.totals (
    table_name     regclass    PRIMARY KEY,
    runs           bigint      NOT NULL DEFAULT 0,
    deleted_total  bigint      NOT NULL DEFAULT 0,
    last_run       timestamptz,
    last_deleted   bigint,
    last_status    text,
    partitions_dropped_total bigint NOT NULL DEFAULT 0,
    errors_total   bigint      NOT NULL DEFAULT 0,
    -- Since 0.4.0: time purges waited for standbys (session_gc.max_replica_lag).
    replica_wait_total interval NOT NULL DEFAULT '0'
);

-- One row per run and table; trimmed by session_gc.history_retention.
CREATE TABLE session_gc.history (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relid        oid         NOT NULL,
    table_name   text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,
    trigger      text        NOT NULL CHECK (trigger IN ('manual', 'worker')),
    status       text        NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'ok', 'partial', 'error', 'cancelled')),
    deleted      bigint      NOT NULL DEFAULT 0,
    expired      bigint      NOT NULL DEFAULT 0,
    idle         bigint      NOT NULL DEFAULT 0,
    aged         bigint      NOT NULL DEFAULT 0,
    inactive     bigint      NOT NULL DEFAULT 0,
    batches      integer     NOT NULL DEFAULT 0,
    error        text,
    pid          integer,
    over_cap     bigint      NOT NULL DEFAULT 0,
    partitions_dropped integer NOT NULL DEFAULT 0,
    replica_wait interval    NOT NULL DEFAULT '0'
);
CREATE INDEX history_started_at_idx ON session_gc.history (started_at);
CREATE INDEX history_relid_idx ON session_gc.history (relid, started_at);
COMMENT ON TABLE session_gc.history IS 'One row per purge run and table, kept for session_gc.history_retention';

-- Partitions detached by drop_partitions and not dropped yet: a partition is detached in one
-- short transaction (holding the parent's lock only for that) and dropped in the next, so the
-- drop's file work never holds the parent. A run that stops in between leaves the row here and
-- the next run drops the table.
CREATE TABLE session_gc.pending_drops (
    relid        oid         PRIMARY KEY,
    parent       regclass    NOT NULL,
    schema_name  name        NOT NULL,
    table_name   name        NOT NULL,
    detached_at  timestamptz NOT NULL DEFAULT now()
);

-- The background worker's last pass in this database (one row).
CREATE TABLE session_gc.worker_state (
    id                  boolean     PRIMARY KEY DEFAULT true CHECK (id),
    last_pass_started   timestamptz,
    last_pass_finished  timestamptz,
    last_pass_tables    integer,
    last_pass_deleted   bigint,
    last_pass_errors    bigint,
    passes              bigint      NOT NULL DEFAULT 0
);

-- A dropped table takes its policy with it.
CREATE FUNCTION session_gc.forget_dropped_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM session_gc.policies p
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.objsubid = 0
       AND p.table_name::pg_catalog.oid = d.objid;
END
$$;
CREATE EVENT TRIGGER session_gc_forget_dropped_tables ON sql_drop
    EXECUTE FUNCTION session_gc.forget_dropped_tables();

-- A table's totals and pending drops go with its last policy (a table may have several
-- policies, so no foreign key can say it).
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
"#,
    name = "catalog",
    bootstrap
);

pgrx::extension_sql!(
    r#"
-- Nothing is callable or readable by default; see the README's Security section for grants.
-- ROUTINES: functions and procedures (ALL FUNCTIONS leaves purge() executable by everyone).
REVOKE ALL ON ALL ROUTINES IN SCHEMA session_gc FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA session_gc FROM PUBLIC;
-- Monitoring (postgres_exporter and the like) reads counts, never session rows.
GRANT USAGE ON SCHEMA session_gc TO pg_monitor;
GRANT EXECUTE ON FUNCTION session_gc.metrics() TO pg_monitor;
GRANT EXECUTE ON FUNCTION session_gc.worker_status() TO pg_monitor;
-- A Citus coordinator's purge calls purge_shard on every node as the table's owner; it refuses
-- a role without the shard owner's privileges, so it deletes nothing its caller could not.
GRANT USAGE ON SCHEMA session_gc TO PUBLIC;
GRANT EXECUTE ON PROCEDURE session_gc.purge_shard(regclass, bigint, text, text, integer, integer, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION session_gc.purge_shard_step(regclass, bigint, text, text, text, integer, integer) TO PUBLIC;
"#,
    name = "privileges",
    finalize
);

/// The version of the extension's SQL objects in this database; None when not installed.
pub fn installed_version() -> GcResult<Option<String>> {
    crate::sql::one::<String>(
        "SELECT max(extversion) FROM pg_catalog.pg_extension WHERE extname = 'session_gc'",
        &[],
    )
}

/// This library's version: the one its SQL objects must have.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Refuses with 55000 when the database still has the SQL objects of another version: after a
/// package upgrade, until `ALTER EXTENSION session_gc UPDATE` has run. Also refuses (42501) a
/// call from inside a security-restricted operation, such as a trigger a purge fires on a
/// sessions table: code of the table's owner must not call back into session_gc mid-purge.
pub fn require_current() -> GcResult<()> {
    if unsafe { pgrx::pg_sys::InSecurityRestrictedOperation() } {
        return Err(GcError::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "session_gc functions cannot be called inside a security-restricted operation",
        )
        .detail("A purge runs triggers and row-security policies of a sessions table as its owner, restricted; they may not call session_gc.")
        .hint("Do not call session_gc from triggers, policies or index expressions of a registered table."));
    }
    match installed_version()? {
        Some(version) if version != LIBRARY_VERSION => Err(update_needed(&version)),
        _ => Ok(()),
    }
}

pub fn update_needed(installed: &str) -> GcError {
    GcError::new(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "session_gc {installed} is installed in this database but the library is {LIBRARY_VERSION}"
        ),
    )
    .detail("The package was upgraded; this database's session_gc functions and tables were not.")
    .hint("Run ALTER EXTENSION session_gc UPDATE; in this database.")
}
