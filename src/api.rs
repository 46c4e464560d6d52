//! The SQL-facing functions. They check arguments and rights, then hand over to the policy
//! model, the engine, stats and history. Everything here lives in schema `session_gc`.

use crate::engine::{self, Budget, Progress};
use crate::error::{GcError, GcResult, OrRaise};
use crate::gucs;
use crate::history::{self, RunStatus, Trigger};
use crate::identity;
use crate::policy::{self, Policy, RuleSpec};
use crate::schema;
use crate::stats;
use crate::txn;
use crate::types::{Name, RegClass};
use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::time::{Duration, Instant};

/// Registers (or, called again, replaces) the expiry policy of one table.
/// (`_v2`: the C symbol of 0.2.0's signature; 0.1.0's lives on in `legacy`.)
#[allow(clippy::too_many_arguments)]
#[pg_extern(name = "register", volatile, parallel_unsafe)]
fn register_v2(
    tbl: RegClass,
    expires_column: default!(Option<Name>, "NULL"),
    idle_column: default!(Option<Name>, "NULL"),
    idle_timeout: default!(Option<Interval>, "NULL"),
    created_column: default!(Option<Name>, "NULL"),
    max_age: default!(Option<Interval>, "NULL"),
    active_column: default!(Option<Name>, "NULL"),
    grace: default!(Option<Interval>, "'0'"),
    epoch_unit: default!(Option<String>, "NULL"),
    time_zone: default!(Option<String>, "NULL"),
    batch_size: default!(Option<i32>, "NULL"),
    enabled: default!(Option<bool>, "true"),
    strategy: default!(Option<String>, "'delete_rows'"),
    user_column: default!(Option<Name>, "NULL"),
    max_per_user: default!(Option<i32>, "NULL"),
    activity_column: default!(Option<Name>, "NULL"),
) -> String {
    schema::require_current().or_raise();
    let spec = RuleSpec {
        expires_column: expires_column.map(|n| n.0),
        idle_column: idle_column.map(|n| n.0),
        idle_timeout: positive_interval("idle_timeout", idle_timeout).or_raise(),
        created_column: created_column.map(|n| n.0),
        max_age: positive_interval("max_age", max_age).or_raise(),
        active_column: active_column.map(|n| n.0),
        grace: grace_interval(grace).or_raise(),
        epoch_unit,
        user_column: user_column.map(|n| n.0),
        max_per_user,
        activity_column: activity_column.map(|n| n.0),
        strategy,
    };
    register_policy(tbl.0, &spec, time_zone, batch_size, enabled.unwrap_or(true)).or_raise()
}

fn register_policy(
    relid: pg_sys::Oid,
    spec: &RuleSpec,
    time_zone: Option<String>,
    batch_size: Option<i32>,
    enabled: bool,
) -> GcResult<String> {
    let info = policy::table_info(relid)?;
    policy::check_table_kind(&info)?;
    identity::require_owner(&info)?;
    if let Some(size) = batch_size {
        check_batch_size(size)?;
    }
    let time_zone = match time_zone {
        Some(zone) => known_time_zone(&zone)?,
        None => Spi::get_one::<String>("SELECT pg_catalog.current_setting('TimeZone')")?
            .unwrap_or_else(|| "UTC".into()),
    };
    let resolved = policy::resolve(&info, spec)?;
    for rule in &resolved.rules {
        let suggestion = if rule.is_ordered() {
            None
        } else {
            Some(format!("{} = false", rule.quoted_column()))
        };
        let purpose = format!("the {} rule", rule.kind.label());
        warn_if_unindexed(&info, &rule.column, suggestion, &purpose)?;
    }
    if let Some(cap) = &resolved.cap {
        warn_if_unindexed(&info, &cap.user_column, None, "the per-user cap")?;
    }
    identity::as_extension_owner(|| {
        Spi::run_with_args(
            "INSERT INTO session_gc.policies AS p
                 (table_name, expires_column, idle_column, idle_timeout, created_column, max_age,
                  active_column, grace, epoch_unit, time_zone, batch_size, enabled, registered_by,
                  strategy, user_column, max_per_user, activity_column)
             VALUES ($1::oid::regclass, $2, $3, $4::interval, $5, $6::interval, $7, $8::interval,
                     $9, $10, $11, $12, session_user, $13, $14, $15, $16)
             ON CONFLICT (table_name) DO UPDATE SET
                 expires_column = EXCLUDED.expires_column, idle_column = EXCLUDED.idle_column,
                 idle_timeout = EXCLUDED.idle_timeout, created_column = EXCLUDED.created_column,
                 max_age = EXCLUDED.max_age, active_column = EXCLUDED.active_column,
                 grace = EXCLUDED.grace, epoch_unit = EXCLUDED.epoch_unit,
                 time_zone = EXCLUDED.time_zone, batch_size = EXCLUDED.batch_size,
                 enabled = EXCLUDED.enabled, strategy = EXCLUDED.strategy,
                 user_column = EXCLUDED.user_column, max_per_user = EXCLUDED.max_per_user,
                 activity_column = EXCLUDED.activity_column, updated_at = now()",
            &[
                relid.into(),
                spec.expires_column.clone().into(),
                spec.idle_column.clone().into(),
                spec.idle_timeout.clone().into(),
                spec.created_column.clone().into(),
                spec.max_age.clone().into(),
                spec.active_column.clone().into(),
                spec.grace.as_str().into(),
                spec.epoch_unit.clone().into(),
                time_zone.as_str().into(),
                batch_size.into(),
                enabled.into(),
                resolved.strategy.name().into(),
                spec.user_column.clone().into(),
                spec.max_per_user.into(),
                // Stored as given: NULL keeps following idle_column / created_column.
                spec.activity_column.clone().into(),
            ],
        )?;
        Ok::<_, GcError>(())
    })?;
    let mut described: Vec<String> = resolved.rules.iter().map(|r| r.describe()).collect();
    if let Some(cap) = &resolved.cap {
        described.push(format!(
            "its user ({}) has {} newer sessions (by {})",
            cap.quoted_user(),
            cap.max_per_user,
            cap.quoted_rank()
        ));
    }
    let partitions = match resolved.strategy {
        policy::Strategy::DropPartitions { .. } => "; expired partitions are dropped whole",
        policy::Strategy::DeleteRows => "",
    };
    Ok(format!(
        "{}: rows are purged when {}{partitions}{}",
        info.display_name,
        described.join(", or "),
        if enabled { "" } else { " (disabled)" }
    ))
}

/// Removes the policy of a table. Its history stays until trimmed.
#[pg_extern(volatile, parallel_unsafe)]
fn unregister(tbl: RegClass) -> bool {
    schema::require_current().or_raise();
    let info = policy::table_info(tbl.0).or_raise();
    identity::require_owner(&info).or_raise();
    let removed = identity::as_extension_owner(|| {
        Spi::get_one_with_args::<i64>(
            "WITH gone AS (DELETE FROM session_gc.policies WHERE table_name = $1::oid::regclass RETURNING 1)
             SELECT count(*)::int8 FROM gone",
            &[tbl.0.into()],
        )
    })
    .map_err(GcError::from)
    .or_raise()
    .unwrap_or(0);
    if removed == 0 {
        no_policy(&info.display_name).raise();
    }
    true
}

/// Purges now, in batches, inside the caller's transaction. One row per table purged.
/// (`_v2`: the C symbol of 0.2.0's result columns; 0.1.0's lives on in `legacy`.)
#[allow(clippy::type_complexity)] // pgrx needs the row type spelled out
#[pg_extern(name = "cleanup", volatile, parallel_unsafe)]
fn cleanup_v2(
    tbl: default!(Option<RegClass>, "NULL"),
    dry_run: default!(Option<bool>, "false"),
    batch_size: default!(Option<i32>, "NULL"),
    max_runtime: default!(Option<Interval>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(table_name, RegClass),
        name!(deleted, i64),
        name!(expired, i64),
        name!(idle, i64),
        name!(aged, i64),
        name!(inactive, i64),
        name!(over_cap, i64),
        name!(partitions_dropped, i32),
        name!(batches, i32),
        name!(duration, Interval),
        name!(status, String),
        name!(error, Option<String>),
    ),
> {
    schema::require_current().or_raise();
    if let Some(size) = batch_size {
        check_batch_size(size).or_raise();
    }
    let deadline = max_runtime_deadline(max_runtime).or_raise();
    let targets = targets(tbl).or_raise();
    let dry_run = dry_run.unwrap_or(false);
    let mut rows = Vec::with_capacity(targets.len());
    for relid in targets {
        let started = Instant::now();
        let row = if dry_run {
            let policy = load_owned(relid).or_raise();
            let census = engine::census(&policy, engine::Counting::Exact).or_raise();
            let progress = Progress {
                deleted_by_rule: census.expired_by_rule,
                ..Progress::default()
            };
            cleanup_row(relid, &progress, started, "dry_run", None)
        } else {
            match purge_one(relid, batch_size, deadline, tbl.is_some()) {
                Ok((progress, status)) => {
                    cleanup_row(relid, &progress, started, status.as_str(), None)
                }
                Err(error) => cleanup_row(
                    relid,
                    &Progress::default(),
                    started,
                    "error",
                    Some(error.to_string()),
                ),
            }
        };
        rows.push(row);
    }
    if !dry_run {
        history::trim().or_raise();
    }
    TableIterator::new(rows)
}

/// Purges one table in the caller's transaction and records the run. A failure is rolled back
/// (only this table's work), recorded and warned about; with `raise`, it is then raised.
fn purge_one(
    relid: pg_sys::Oid,
    batch_size: Option<i32>,
    deadline: Option<Instant>,
    raise: bool,
) -> GcResult<(Progress, RunStatus)> {
    let info = policy::table_info(relid)?;
    let history_id = history::start(relid, &info.display_name, Trigger::Manual)?;
    let run = txn::in_subtransaction(|| {
        txn::compress_wal_of_batch();
        let policy = load_owned(relid)?;
        let budget = Budget {
            batch_size: i64::from(
                batch_size
                    .or(policy.batch_size)
                    .unwrap_or_else(gucs::batch_size),
            ),
            deadline,
        };
        engine::purge(&policy, &budget)
    });
    match run {
        Ok(progress) => {
            let status = RunStatus::of(&progress);
            history::finish(history_id, relid, &progress, status, None)?;
            Ok((progress, status))
        }
        Err(error) => {
            if txn::is_cancel(&error) || raise {
                error.raise();
            }
            history::finish(
                history_id,
                relid,
                &Progress::default(),
                RunStatus::Error,
                Some(&error.to_string()),
            )?;
            GcError::new(
                PgSqlErrorCode::ERRCODE_WARNING,
                format!(
                    "session_gc: purge of {} failed: {}",
                    info.display_name, error.message
                ),
            )
            .hint("The error is recorded in session_gc.history; the other tables were purged.")
            .warn();
            Err(error)
        }
    }
}

/// What is in each registered table now. `total_rows` is the planner's estimate; the
/// expired counts are served by the rules' indexes: exact up to `EXACT_COUNT_LIMIT` rows per
/// rule, the planner's estimate beyond (`exact => true` always counts, `false` never does).
/// (`_v2`: the C symbol of 0.2.0's result columns; 0.1.0's lives on in `legacy`.)
#[allow(clippy::type_complexity)] // pgrx needs the row type spelled out
#[pg_extern(name = "stats", volatile, parallel_unsafe)]
fn stats_v2(
    tbl: default!(Option<RegClass>, "NULL"),
    exact: default!(Option<bool>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(table_name, RegClass),
        name!(total_rows, Option<i64>),
        name!(expired_rows, i64),
        name!(expired, i64),
        name!(idle, i64),
        name!(aged, i64),
        name!(inactive, i64),
        name!(over_cap, i64),
        name!(exact, bool),
        name!(oldest_expired, Option<TimestampWithTimeZone>),
        name!(table_bytes, Option<i64>),
        name!(dead_rows, Option<i64>),
        name!(last_run, Option<TimestampWithTimeZone>),
        name!(last_deleted, Option<i64>),
        name!(deleted_total, Option<i64>),
    ),
> {
    schema::require_current().or_raise();
    let targets = match tbl {
        Some(_) => targets(tbl).or_raise(),
        None => visible_policies(false).or_raise(),
    };
    let counting = match exact {
        Some(true) => engine::Counting::Exact,
        Some(false) => engine::Counting::Estimate,
        None => engine::Counting::Auto,
    };
    let mut rows = Vec::with_capacity(targets.len());
    for relid in targets {
        let policy = load_owned(relid).or_raise();
        let s = stats::collect(&policy, counting).or_raise();
        let [expired, idle, aged, inactive, over_cap] = s.census.expired_by_rule;
        rows.push((
            RegClass(relid),
            s.total_rows,
            s.census.total(),
            expired,
            idle,
            aged,
            inactive,
            over_cap,
            s.census.exact,
            s.census.oldest_expired,
            s.table_bytes,
            s.dead_rows,
            s.last_run,
            s.last_deleted,
            s.deleted_total,
        ));
    }
    TableIterator::new(rows)
}

/// Figures for monitoring, one row per registered table, in the shape exporters expect:
/// labels (database, table, strategy) and numbers. Granted to `pg_monitor`: it shows counts,
/// never session rows, for every table whoever owns it. `expired_backlog` counts what a purge
/// would delete now (the same index-range counts as `stats()`); NULL when the policy no
/// longer matches its table.
#[allow(clippy::type_complexity)] // pgrx needs the row type spelled out
#[pg_extern(volatile, parallel_unsafe)]
fn metrics() -> TableIterator<
    'static,
    (
        name!(database, String),
        name!(table_name, String),
        name!(strategy, String),
        name!(enabled, bool),
        name!(runs_total, i64),
        name!(deleted_total, i64),
        name!(partitions_dropped_total, i64),
        name!(errors_total, i64),
        name!(expired_backlog, Option<i64>),
        name!(over_cap_backlog, Option<i64>),
        name!(last_run_age_seconds, Option<f64>),
        name!(last_run_ok, Option<bool>),
        name!(table_bytes, Option<i64>),
    ),
> {
    schema::require_current().or_raise();
    let database = Spi::get_one::<String>("SELECT pg_catalog.current_database()::text")
        .map_err(GcError::from)
        .or_raise()
        .unwrap_or_default();
    let rows: Vec<_> = stats::metrics()
        .or_raise()
        .into_iter()
        .map(|m| {
            let over_cap = m
                .backlog
                .as_ref()
                .map(|c| c.expired_by_rule[policy::RuleKind::OverCap.index()]);
            (
                database.clone(),
                m.table_name,
                m.strategy,
                m.enabled,
                m.runs_total,
                m.deleted_total,
                m.partitions_dropped_total,
                m.errors_total,
                m.backlog.as_ref().map(|c| c.total()),
                over_cap,
                m.last_run_age_seconds,
                m.last_status.map(|status| status == "ok"),
                m.table_bytes,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// One row of `cleanup()`'s result, in its column order.
type CleanupRow = (
    RegClass,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i32,
    i32,
    Interval,
    String,
    Option<String>,
);

fn cleanup_row(
    relid: pg_sys::Oid,
    progress: &Progress,
    started: Instant,
    status: &str,
    error: Option<String>,
) -> CleanupRow {
    let [expired, idle, aged, inactive, over_cap] = progress.deleted_by_rule;
    let micros = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
    (
        RegClass(relid),
        progress.deleted(),
        expired,
        idle,
        aged,
        inactive,
        over_cap,
        progress.partitions_dropped,
        progress.batches,
        Interval::from_micros(micros),
        status.to_string(),
        error,
    )
}

/// The tables a call acts on: the one named (which must have a policy and be the caller's),
/// or every enabled policy on a table the caller owns.
fn targets(tbl: Option<RegClass>) -> GcResult<Vec<pg_sys::Oid>> {
    match tbl {
        Some(RegClass(relid)) => {
            let info = policy::table_info(relid)?;
            identity::require_owner(&info)?;
            if !Policy::registered_tables(false)?.contains(&relid) {
                return Err(no_policy(&info.display_name));
            }
            Ok(vec![relid])
        }
        None => visible_policies(true),
    }
}

/// Registered tables whose owner the caller acts as; superusers see all.
fn visible_policies(only_enabled: bool) -> GcResult<Vec<pg_sys::Oid>> {
    let mut visible = Vec::new();
    for relid in Policy::registered_tables(only_enabled)? {
        let info = policy::table_info(relid)?;
        if identity::acts_as(info.owner) {
            visible.push(relid);
        }
    }
    Ok(visible)
}

fn load_owned(relid: pg_sys::Oid) -> GcResult<Policy> {
    let policy = Policy::load(relid)?;
    policy.ok_or_else(|| no_policy(&format!("with OID {}", relid.to_u32())))
}

fn no_policy(table: &str) -> GcError {
    GcError::new(
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("table {table} has no session_gc policy"),
    )
    .detail("Only tables registered with session_gc.register() can be purged or inspected.")
    .hint("Register it first, e.g. SELECT session_gc.register('sessions', expires_column => 'expires_at');")
}

fn check_batch_size(size: i32) -> GcResult<()> {
    if (1..=gucs::MAX_BATCH_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(
            GcError::invalid_parameter(format!("batch_size {size} is out of range"))
                .detail(format!(
                    "A batch holds between 1 and {} rows.",
                    gucs::MAX_BATCH_SIZE
                ))
                .hint("Pass a positive batch size such as 500, or NULL for session_gc.batch_size."),
        )
    }
}

/// The interval as text, refusing zero and negative values.
fn positive_interval(parameter: &str, value: Option<Interval>) -> GcResult<Option<String>> {
    let Some(value) = value else { return Ok(None) };
    let (text, positive) = interval_sign(value)?;
    if positive {
        Ok(Some(text))
    } else {
        Err(
            GcError::invalid_parameter(format!("{parameter} must be positive, got '{text}'"))
                .detail(format!(
                    "{parameter} is how long a session may last under its rule."
                ))
                .hint("Pass a positive interval such as '30 minutes' or '30 days'."),
        )
    }
}

fn grace_interval(value: Option<Interval>) -> GcResult<String> {
    let Some(value) = value else {
        return Ok("0".into());
    };
    let (text, _) = interval_sign(value)?;
    let negative = Spi::get_one_with_args::<bool>(
        "SELECT $1::interval < interval '0'",
        &[text.as_str().into()],
    )?;
    if negative == Some(true) {
        return Err(GcError::invalid_parameter(format!(
            "grace must not be negative, got '{text}'"
        ))
        .detail("grace is extra time a session is kept after it expired.")
        .hint("Pass '0' for none, or a positive interval such as '5 minutes'."));
    }
    Ok(text)
}

fn interval_sign(value: Interval) -> GcResult<(String, bool)> {
    let (text, positive) = Spi::get_two_with_args::<String, bool>(
        "SELECT $1::text, $1 > interval '0'",
        &[value.into()],
    )?;
    Ok((text.unwrap_or_default(), positive.unwrap_or(false)))
}

fn max_runtime_deadline(max_runtime: Option<Interval>) -> GcResult<Option<Instant>> {
    let Some(value) = max_runtime else {
        return Ok(None);
    };
    let (text, positive) = interval_sign(value)?;
    if !positive {
        return Err(GcError::invalid_parameter(format!(
            "max_runtime must be positive, got '{text}'"
        ))
        .detail("max_runtime bounds how long the purge keeps starting new batches.")
        .hint("Pass a positive interval such as '30 seconds', or NULL for no limit."));
    }
    let micros = Spi::get_one_with_args::<f64>(
        "SELECT extract(epoch FROM $1::interval)::float8 * 1e6",
        &[text.as_str().into()],
    )?
    .unwrap_or(0.0);
    Ok(Some(
        Instant::now() + Duration::from_micros(micros.max(0.0) as u64),
    ))
}

/// The canonical spelling of a known time zone, or 22023.
fn known_time_zone(zone: &str) -> GcResult<String> {
    let found = Spi::get_one_with_args::<String>(
        "SELECT min(name) FROM (
             SELECT name FROM pg_catalog.pg_timezone_names WHERE lower(name) = lower($1)
             UNION ALL
             SELECT abbrev FROM pg_catalog.pg_timezone_abbrevs WHERE lower(abbrev) = lower($1)) z",
        &[zone.into()],
    )?;
    found.ok_or_else(|| {
        GcError::invalid_parameter(format!("time zone \"{zone}\" not recognized"))
            .detail("time_zone says how naive timestamp and date columns are read.")
            .hint("Use a name from pg_timezone_names, such as 'UTC' or 'Europe/Berlin'.")
    })
}

/// Warns when no btree or BRIN index starts with `column` (or names it in its predicate);
/// `partial` is the predicate of the suggested index, for boolean rules.
fn warn_if_unindexed(
    info: &policy::TableInfo,
    column: &str,
    partial: Option<String>,
    purpose: &str,
) -> GcResult<()> {
    let served = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (
             SELECT 1 FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
               JOIN pg_catalog.pg_am am ON am.oid = ic.relam
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attname = $2
              WHERE i.indrelid = $1 AND am.amname IN ('btree', 'brin')
                AND (i.indkey[0] = a.attnum
                     OR pg_catalog.pg_get_expr(i.indpred, i.indrelid) LIKE '%' || pg_catalog.quote_ident($2) || '%'))",
        &[info.relid.into(), column.into()],
    )?;
    if served != Some(true) {
        let column = pgrx::spi::quote_identifier(column);
        let suggestion = match partial {
            None => format!(
                "CREATE INDEX CONCURRENTLY ON {} ({column});",
                info.quoted_table
            ),
            Some(predicate) => format!(
                "CREATE INDEX CONCURRENTLY ON {} ({column}) WHERE {predicate};",
                info.quoted_table
            ),
        };
        GcError::new(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!("no index serves column {column} of {}", info.display_name),
        )
        .detail(format!(
            "Without one, every purge batch and every stats() count of {purpose} scans the table."
        ))
        .hint(suggestion)
        .warn();
    }
    Ok(())
}

/// Batches of a `CALL session_gc.purge()`: each batch in a subtransaction, committed on its own
/// when the procedure was called outside a transaction block.
struct ProcedureTransactions {
    commit_each_batch: bool,
}

impl crate::pass::Transactions for ProcedureTransactions {
    fn run<R>(&mut self, work: impl FnOnce() -> GcResult<R>) -> GcResult<R> {
        let outcome = txn::in_subtransaction(work);
        if let Err(error) = &outcome {
            if txn::is_cancel(error) {
                error.raise();
            }
        }
        if self.commit_each_batch {
            unsafe { pg_sys::SPI_commit() };
        }
        outcome
    }

    fn stop_requested(&mut self) -> bool {
        false
    }

    fn batch_commits_alone(&self) -> bool {
        self.commit_each_batch
    }

    fn pause(&mut self) {
        let delay = gucs::batch_delay();
        if !delay.is_zero() && self.commit_each_batch {
            // Only sleep outside a transaction: inside one, locks would be held while waiting.
            std::thread::sleep(delay);
        }
        pgrx::check_for_interrupts!();
    }
}

/// Purges like the worker does, by hand: round-robin over the tables (or only `tbl`), each
/// batch its own transaction when called outside a transaction block (`CALL session_gc.purge();`),
/// so a large backlog is cleared without one long transaction. Reports a NOTICE per table.
#[pg_extern(
    volatile,
    parallel_unsafe,
    sql = r#"
CREATE PROCEDURE session_gc.purge(tbl regclass DEFAULT NULL, batch_size integer DEFAULT NULL,
                                  max_runtime interval DEFAULT NULL)
LANGUAGE c AS 'MODULE_PATHNAME', 'purge_wrapper';
COMMENT ON PROCEDURE session_gc.purge(regclass, integer, interval) IS
    'Purge now with one committed transaction per batch (when called outside a transaction block)';
"#
)]
fn purge(
    tbl: Option<RegClass>,
    batch_size: Option<i32>,
    max_runtime: Option<Interval>,
    fcinfo: pg_sys::FunctionCallInfo,
) {
    schema::require_current().or_raise();
    if let Some(size) = batch_size {
        check_batch_size(size).or_raise();
    }
    let deadline = max_runtime_deadline(max_runtime).or_raise();
    // The caller's tables only: the one named, or every enabled policy on a table it owns.
    let tables = targets(tbl).or_raise();
    let nonatomic = unsafe { called_nonatomic(fcinfo) };
    if nonatomic {
        let connected = unsafe { pg_sys::SPI_connect_ext(pg_sys::SPI_OPT_NONATOMIC as i32) };
        if connected != pg_sys::SPI_OK_CONNECT as i32 {
            GcError::new(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "could not connect to SPI",
            )
            .raise();
        }
    }
    let mut tx = ProcedureTransactions {
        commit_each_batch: nonatomic,
    };
    let options = crate::pass::PassOptions {
        trigger: Trigger::Manual,
        tables: Some(tables),
        batch_size,
        deadline,
    };
    let summary = crate::pass::run(&mut tx, &options);
    if nonatomic {
        unsafe { pg_sys::SPI_finish() };
    }
    let summary = summary.or_raise();
    for table in &summary.tables {
        pgrx::notice!(
            "session_gc: {}: {} rows deleted in {} batches ({}{})",
            table.table,
            table.progress.deleted(),
            table.progress.batches,
            table.status.as_str(),
            table
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
}

/// Whether a procedure call may commit: CALL outside a transaction block.
unsafe fn called_nonatomic(fcinfo: pg_sys::FunctionCallInfo) -> bool {
    unsafe {
        let context = (*fcinfo).context;
        !context.is_null()
            && (*context).type_ == pg_sys::NodeTag::T_CallContext
            && !(*(context as *mut pg_sys::CallContext)).atomic
    }
}
