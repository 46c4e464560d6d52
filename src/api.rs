//! The SQL-facing functions. They check arguments and rights, then hand over to the policy
//! model, the engine, stats and history. Everything here lives in schema `session_gc`.

use crate::engine::{self, Progress};
use crate::error::{GcError, GcResult, OrRaise};
use crate::gucs;
use crate::history::{RunStatus, Trigger};
use crate::identity;
use crate::policy::{self, Policy, RuleSpec, TableInfo};
use crate::schema;
use crate::sql;
use crate::stats;
use crate::txn;
use crate::types::{Name, RegClass};
use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::spi::quote_literal;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::time::{Duration, Instant};

/// Registers (or, called again with the same `policy_name`, replaces) an expiry policy of one
/// table. A table may have several policies, each about the rows its `row_filter` selects.
/// (`_v4`: the C symbol of 0.4.0's signature; earlier ones live on in `legacy`.)
#[allow(clippy::too_many_arguments)]
#[pg_extern(name = "register", volatile, parallel_unsafe)]
fn register_v4(
    tbl: Option<RegClass>,
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
    row_filter: default!(Option<String>, "NULL"),
    policy_name: default!(Option<String>, "'default'"),
) -> String {
    schema::require_current().or_raise();
    let relid = required_table(tbl).or_raise();
    let policy_name = required_policy_name(policy_name).or_raise();
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
        row_filter,
    };
    register_policy(
        relid,
        &policy_name,
        &spec,
        time_zone,
        batch_size,
        enabled.unwrap_or(true),
    )
    .or_raise()
}

/// A policy's name: given, not empty, at most 63 bytes (an identifier's length).
fn required_policy_name(name: Option<String>) -> GcResult<String> {
    match name {
        Some(name) if !name.trim().is_empty() && name.len() < 64 => Ok(name),
        given => Err(GcError::invalid_parameter(format!(
            "invalid policy_name {}",
            given.map_or("NULL".into(), |n| quote_literal(&n))
        ))
        .detail("A policy's name tells the policies of one table apart.")
        .hint("Pass a short name such as 'session', or leave policy_name out ('default').")),
    }
}

fn register_policy(
    relid: pg_sys::Oid,
    policy_name: &str,
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
    let resolved = policy::resolve(&info, spec)?;
    policy::check_location(
        &info,
        crate::citus::location(relid)?,
        resolved.cap.is_some(),
        matches!(resolved.strategy, policy::Strategy::DropPartitions { .. }),
    )?;
    check_shared_table(&info, policy_name, spec, &resolved)?;
    let naive_rules: Vec<&policy::Rule> = resolved
        .rules
        .iter()
        .filter(|r| r.column_kind.is_naive())
        .collect();
    // Only a rule on a naive column reads a zone; the policy stores one only then (NULL else),
    // and refuses one given for no such column, as it refuses an epoch_unit.
    let time_zone = time_zone.map(|zone| known_time_zone(&zone)).transpose()?;
    match (&time_zone, naive_rules.is_empty()) {
        (None, false) => return Err(time_zone_needed(&info, &naive_rules)),
        (Some(_), true) => return Err(time_zone_without_naive_column()),
        _ => {}
    }
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
        sql::run(
            "INSERT INTO session_gc.policies AS p
                 (table_name, expires_column, idle_column, idle_timeout, created_column, max_age,
                  active_column, grace, epoch_unit, time_zone, batch_size, enabled, registered_by,
                  strategy, user_column, max_per_user, activity_column, policy_name, row_filter)
             VALUES ($1::oid::regclass, $2, $3, $4::interval, $5, $6::interval, $7, $8::interval,
                     $9, $10, $11, $12, session_user, $13, $14, $15, $16, $17, $18)
             ON CONFLICT (table_name, policy_name) DO UPDATE SET
                 expires_column = EXCLUDED.expires_column, idle_column = EXCLUDED.idle_column,
                 idle_timeout = EXCLUDED.idle_timeout, created_column = EXCLUDED.created_column,
                 max_age = EXCLUDED.max_age, active_column = EXCLUDED.active_column,
                 grace = EXCLUDED.grace, epoch_unit = EXCLUDED.epoch_unit,
                 time_zone = EXCLUDED.time_zone, batch_size = EXCLUDED.batch_size,
                 enabled = EXCLUDED.enabled, strategy = EXCLUDED.strategy,
                 user_column = EXCLUDED.user_column, max_per_user = EXCLUDED.max_per_user,
                 activity_column = EXCLUDED.activity_column, row_filter = EXCLUDED.row_filter,
                 updated_at = now()",
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
                time_zone.clone().into(),
                batch_size.into(),
                enabled.into(),
                resolved.strategy.name().into(),
                spec.user_column.clone().into(),
                spec.max_per_user.into(),
                // Stored as given: NULL keeps following idle_column / created_column.
                spec.activity_column.clone().into(),
                policy_name.into(),
                spec.row_filter.clone().into(),
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
    // How naive columns are read is said apart from the rules: it is not another rule.
    let reading = match &time_zone {
        Some(zone) => {
            let columns: Vec<String> = naive_rules.iter().map(|r| r.quoted_column()).collect();
            format!(
                ". {} {} wall-clock time without a zone, read in {}",
                columns.join(" and "),
                if columns.len() == 1 { "holds" } else { "hold" },
                quote_literal(zone)
            )
        }
        None => String::new(),
    };
    let partitions = match resolved.strategy {
        policy::Strategy::DropPartitions { .. } => "; expired partitions are dropped whole",
        policy::Strategy::DeleteRows => "",
    };
    let named = if policy_name == "default" {
        String::new()
    } else {
        format!(" (policy {})", quote_literal(policy_name))
    };
    Ok(format!(
        "{}{named}: rows are purged when {}{partitions}{}{reading}",
        info.display_name,
        described.join(", or "),
        if enabled { "" } else { " (disabled)" }
    ))
}

/// Refuses a policy that cannot share its table with the table's other policies. Policies of
/// one table each select their rows with a row filter: one without would apply its rules to
/// every row, the other policies' rows included. Partition drops and a per-user cap act on
/// every row, so they need the table's only policy. Registrations of one table are serialized
/// (the lock is held until the transaction ends), so two cannot both pass this check.
fn check_shared_table(
    info: &TableInfo,
    policy_name: &str,
    spec: &RuleSpec,
    resolved: &policy::Resolved,
) -> GcResult<()> {
    let others = identity::as_extension_owner(|| {
        sql::run(
            "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('session_gc.register'), $1::oid::int4)",
            &[info.relid.into()],
        )?;
        sql::two::<String, bool>(
            "SELECT pg_catalog.string_agg(pg_catalog.quote_literal(policy_name), ', ' ORDER BY policy_name),
                    coalesce(bool_or(row_filter IS NULL OR strategy = 'drop_partitions'
                                     OR max_per_user IS NOT NULL), false)
               FROM session_gc.policies
              WHERE table_name = $1::oid::regclass AND policy_name <> $2",
            &[info.relid.into(), policy_name.into()],
        )
    })?;
    let (Some(others), other_acts_on_all) = others else {
        return Ok(());
    };
    let whole_table = if matches!(resolved.strategy, policy::Strategy::DropPartitions { .. }) {
        Some("drop_partitions")
    } else if resolved.cap.is_some() {
        Some("max_per_user")
    } else {
        None
    };
    if let Some(what) = whole_table {
        return Err(policy::shared_table(info, what));
    }
    if spec.row_filter.is_none() || other_acts_on_all == Some(true) {
        return Err(GcError::invalid_parameter(format!(
            "\"{}\" has other policies ({others}): each policy of a shared table needs a row_filter",
            info.display_name
        ))
        .detail(
            "The rules of a policy without a row_filter apply to every row of the table, the \
             rows the other policies keep for longer included.",
        )
        .hint(
            "Give this policy and the others a row_filter saying which rows each is about, \
             or replace the existing policy (same policy_name) instead of adding one.",
        ));
    }
    Ok(())
}

/// register() will not guess in which zone an application wrote a wall-clock time: the session's
/// `TimeZone` says nothing about it (connect-pg-simple writes the app connection's zone,
/// Flask-Session and Rails write UTC), and a wrong guess deletes live sessions.
fn time_zone_needed(info: &TableInfo, naive_rules: &[&policy::Rule]) -> GcError {
    let columns: Vec<String> = naive_rules
        .iter()
        .map(|r| format!("column \"{}\" ({})", r.column, r.column_kind.type_name()))
        .collect();
    GcError::invalid_parameter(format!(
        "time_zone is needed for {} of relation \"{}\"",
        columns.join(" and "),
        info.display_name
    ))
    .detail(format!(
        "Such a column holds a wall-clock time without its zone; session_gc reads it in the zone \
         the application wrote it in, which this session's TimeZone ({}) does not tell.",
        sql::shown_setting("TimeZone").unwrap_or_else(|| "unknown".into())
    ))
    .hint(
        "Pass time_zone => 'UTC' if the application's library writes UTC (Flask-Session, Rails, \
         Prisma, Phoenix). If it writes local time (connect-pg-simple: its connections' \
         TimeZone; Better Auth before 1.3.11 and other node-postgres apps: the Node.js process's \
         zone), read that zone where the app runs (SHOW TimeZone through the app's own pool, or \
         the process's TZ) and pass it: no zone is guessed, since a wrong one deletes live sessions.",
    )
}

/// time_zone given for a policy none of whose rule columns is naive: it would say nothing, and
/// the caller most likely believes a column is naive that is not.
fn time_zone_without_naive_column() -> GcError {
    GcError::invalid_parameter("time_zone given but no rule column is a timestamp or date")
        .detail(
            "time_zone only says how naive timestamp and date columns are read; timestamptz \
             values carry their moment and epoch columns count from UTC.",
        )
        .hint("Leave time_zone out for timestamptz and epoch columns.")
}

/// Removes the policies of a table, or the one named. Its history stays until trimmed. The
/// policy of a table that no longer exists can be removed by its OID (`unregister(16384)`) by
/// a superuser or a member of the role that registered it.
/// (`_v4`: the C symbol of 0.4.0's signature; 0.3.0's lives on in `legacy`.)
#[pg_extern(name = "unregister", volatile, parallel_unsafe)]
fn unregister_v4(tbl: Option<RegClass>, policy_name: default!(Option<String>, "NULL")) -> bool {
    schema::require_current().or_raise();
    let relid = required_table(tbl).or_raise();
    let display_name = match policy::table_info(relid) {
        Ok(info) => {
            identity::require_owner(&info).or_raise();
            info.display_name
        }
        Err(error) if error.code == PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE => {
            if !may_remove_orphan(relid).or_raise() {
                error.raise();
            }
            format!("with OID {}", relid.to_u32())
        }
        Err(error) => error.raise(),
    };
    let removed = identity::as_extension_owner(|| {
        sql::write_one::<i64>(
            "WITH gone AS (DELETE FROM session_gc.policies
                            WHERE table_name::oid = $1 AND policy_name = coalesce($2, policy_name)
                            RETURNING 1)
             SELECT count(*)::int8 FROM gone",
            &[relid.into(), policy_name.clone().into()],
        )
    })
    .or_raise()
    .unwrap_or(0);
    if removed == 0 {
        match policy_name {
            Some(name) => GcError::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!(
                    "table {display_name} has no session_gc policy named {}",
                    quote_literal(&name)
                ),
            )
            .detail("policy_name picks one of the table's policies.")
            .hint("SELECT policy_name FROM session_gc.policies lists them; leave policy_name out to remove them all."),
            None => no_policy(&display_name),
        }
        .raise();
    }
    true
}

/// The table argument of register() and unregister(), which must not be NULL.
fn required_table(tbl: Option<RegClass>) -> GcResult<pg_sys::Oid> {
    match tbl {
        Some(RegClass(relid)) if relid != pg_sys::InvalidOid => Ok(relid),
        _ => Err(GcError::new(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "the table must not be NULL",
        )
        .detail("register() and unregister() act on one table.")
        .hint("Pass the table, e.g. 'public.sessions'.")),
    }
}

/// Purges now and returns one row per table. By default in committed batches, from a
/// background worker the call waits for (`background`): the caller's transaction holds no
/// purge locks, whatever it is. `in_transaction => true` purges in the caller's transaction
/// instead (everything commits or rolls back with it).
/// (`_v3`: the C symbol of 0.3.0's signature; 0.2.0's and 0.1.0's live on in `legacy`.)
#[allow(clippy::type_complexity)] // pgrx needs the row type spelled out
#[pg_extern(name = "cleanup", volatile, parallel_unsafe)]
fn cleanup_v3(
    tbl: default!(Option<RegClass>, "NULL"),
    dry_run: default!(Option<bool>, "false"),
    batch_size: default!(Option<i32>, "NULL"),
    max_runtime: default!(Option<Interval>, "NULL"),
    in_transaction: default!(Option<bool>, "false"),
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
    if dry_run.unwrap_or(false) {
        let rows = targets
            .into_iter()
            .map(|relid| {
                let started = Instant::now();
                let policy = load_owned(relid).or_raise();
                let census = engine::census(&policy, engine::Counting::Exact).or_raise();
                let progress = Progress {
                    deleted_by_rule: census.expired_by_rule,
                    ..Progress::default()
                };
                cleanup_row(relid, &progress, started.elapsed(), "dry_run", None)
            })
            .collect::<Vec<_>>();
        return TableIterator::new(rows);
    }
    require_writable("cleanup()").or_raise();
    let in_transaction = in_transaction.unwrap_or(false)
        || holds_locks_a_worker_needs(&targets).or_raise()
        || changed_in_this_transaction(&targets).or_raise();
    if targets.is_empty() {
        return TableIterator::new(Vec::new());
    }
    let outcomes = if in_transaction {
        let mut tx = ProcedureTransactions {
            commit_each_batch: false,
        };
        let options = crate::pass::PassOptions {
            trigger: Trigger::Manual,
            tables: Some(targets.clone()),
            batch_size,
            deadline,
            named: tbl.is_some(),
        };
        crate::pass::run(&mut tx, &options).or_raise().tables
    } else {
        crate::background::purge(&targets, batch_size, deadline, tbl.is_some()).or_raise()
    };
    let mut rows = Vec::with_capacity(targets.len());
    for relid in targets {
        let Some(outcome) = outcomes.iter().find(|o| o.relid == relid) else {
            continue;
        };
        if let (Some(_), RunStatus::Error, Some(error)) = (tbl, outcome.status, &outcome.error) {
            error.raise();
        }
        rows.push(cleanup_row(
            relid,
            &outcome.progress,
            outcome.duration,
            outcome.status.as_str(),
            outcome.error.as_ref().map(GcError::to_string),
        ));
    }
    TableIterator::new(rows)
}

/// Refuses with 25006 to purge on a standby or in a read-only transaction (a background
/// worker would otherwise write for a caller that asked not to).
fn require_writable(what: &str) -> GcResult<()> {
    let standby = unsafe { pg_sys::RecoveryInProgress() };
    if standby || unsafe { pg_sys::XactReadOnly } {
        return Err(GcError::new(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!(
                "cannot run {what} in a read-only transaction{}",
                if standby {
                    " (the server is a standby)"
                } else {
                    ""
                }
            ),
        )
        .detail("A purge deletes rows.")
        .hint("Purge on the primary; stats() and cleanup(dry_run => true) work anywhere."));
    }
    Ok(())
}

/// Whether the caller's transaction holds a lock (beyond reading) on a target table, one of its
/// partitions or children, or one of session_gc's tables: a worker would wait for it, unseen
/// by the deadlock detector. Such a call purges in the caller's transaction, and says so.
fn holds_locks_a_worker_needs(targets: &[pg_sys::Oid]) -> GcResult<bool> {
    let held = sql::one::<String>(
        "WITH RECURSIVE tree(relid) AS (
             SELECT pg_catalog.unnest($1::oid[])
             UNION
             SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree t ON i.inhparent = t.relid)
         SELECT pg_catalog.string_agg(DISTINCT l.relation::pg_catalog.regclass::text, ', ')
           FROM pg_catalog.pg_locks l
          WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'relation'
            AND l.mode <> 'AccessShareLock' AND l.granted
            AND (l.relation IN (SELECT relid FROM tree)
                 OR l.relation IN (SELECT c.oid FROM pg_catalog.pg_class c
                                    WHERE c.relnamespace = 'session_gc'::pg_catalog.regnamespace))",
        &[targets.to_vec().into()],
    )?;
    if let Some(tables) = &held {
        pgrx::notice!(
            "session_gc: cleanup() purges in this transaction, which holds locks on {tables}"
        );
    }
    Ok(held.is_some())
}

/// Whether a target's policy or table was created or changed by the caller's own transaction,
/// which a background worker could not see yet: such a call purges in the caller's transaction.
fn changed_in_this_transaction(targets: &[pg_sys::Oid]) -> GcResult<bool> {
    let xmins = identity::as_extension_owner(|| {
        sql::rows(
            "SELECT p.xmin::text, c.xmin::text FROM session_gc.policies p
               JOIN pg_catalog.pg_class c ON c.oid = p.table_name::oid
              WHERE p.table_name::oid = ANY ($1)",
            &[targets.to_vec().into()],
            |row| Ok((row.get::<String>(1)?, row.get::<String>(2)?)),
        )
    })?;
    Ok(xmins.into_iter().any(|(policy, table)| {
        [policy, table].into_iter().flatten().any(|xmin| {
            xmin.parse::<u32>()
                .is_ok_and(|xid| unsafe { pg_sys::TransactionIdIsCurrentTransactionId(xid.into()) })
        })
    }))
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
        // One table that cannot be counted (altered, locked) is reported, not the end of all.
        let collected = txn::in_subtransaction(|| {
            let policy = load_owned(relid)?;
            stats::collect(&policy, counting)
        });
        let s = match collected {
            Ok(s) => s,
            Err(error) if tbl.is_some() => error.raise(),
            Err(error) => {
                GcError::new(
                    PgSqlErrorCode::ERRCODE_WARNING,
                    format!(
                        "session_gc: stats of table {} failed: {}",
                        RegClassName(relid),
                        error.message
                    ),
                )
                .detail(error.detail.unwrap_or_default())
                .hint("The other tables are listed; see the error for this one.")
                .warn();
                continue;
            }
        };
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
/// (`_v4`: the C symbol of 0.4.0's result type; 0.3.0's lives on in `legacy`.)
#[allow(clippy::type_complexity)] // pgrx needs the row type spelled out
#[pg_extern(name = "metrics", volatile, parallel_unsafe)]
fn metrics_v4() -> TableIterator<
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
        name!(replica_wait_seconds_total, f64),
    ),
> {
    schema::require_current().or_raise();
    let database = sql::one::<String>("SELECT pg_catalog.current_database()::text", &[])
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
                m.replica_wait_seconds_total,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// What the background worker is doing for this database, and when it comes next. Granted to
/// `pg_monitor`; grantable to applications. What a purge is busy with (its table) and the last
/// pass's volumes concern every table of the database, so only roles that may read every
/// session's activity (`pg_read_all_stats`, which `pg_monitor` includes) see them; others see
/// that a pass is running and when, and NULL for those columns.
#[allow(clippy::type_complexity)] // pgrx needs the row type spelled out
#[pg_extern(volatile, parallel_unsafe)]
fn worker_status() -> TableIterator<
    'static,
    (
        name!(database, Name),
        name!(worker_running, bool),
        name!(enabled, Option<bool>),
        name!(in_recovery, bool),
        name!(launcher_pid, Option<i32>),
        name!(worker_pid, Option<i32>),
        name!(worker_activity, Option<String>),
        name!(interval, Option<Interval>),
        name!(last_pass_started, Option<TimestampWithTimeZone>),
        name!(last_pass_finished, Option<TimestampWithTimeZone>),
        name!(last_pass_tables, Option<i32>),
        name!(last_pass_deleted, Option<i64>),
        name!(last_pass_errors, Option<i64>),
        name!(next_pass, Option<TimestampWithTimeZone>),
    ),
> {
    schema::require_current().or_raise();
    let caller = identity::current_user();
    let row = identity::as_extension_owner(|| {
        sql::rows(
            "SELECT current_database()::text,
                    launcher.pid IS NOT NULL,
                    current_setting('session_gc.enabled', true)::boolean,
                    pg_is_in_recovery(),
                    launcher.pid, worker.pid, worker.query,
                    coalesce(current_setting('session_gc.interval', true), '60s')::interval,
                    w.last_pass_started, w.last_pass_finished, w.last_pass_tables,
                    w.last_pass_deleted, w.last_pass_errors,
                    CASE WHEN launcher.pid IS NULL OR pg_is_in_recovery()
                              OR NOT coalesce(current_setting('session_gc.enabled', true)::boolean, false)
                         THEN NULL
                         WHEN worker.pid IS NOT NULL THEN now()
                         ELSE greatest(now(), coalesce(w.last_pass_started, now())
                               + coalesce(current_setting('session_gc.interval', true), '60s')::interval)
                    END,
                    superuser_role.is OR pg_has_role($1, 'pg_read_all_stats', 'USAGE')
               FROM (SELECT 1) one
               LEFT JOIN session_gc.worker_state w ON true
               LEFT JOIN LATERAL (SELECT a.pid FROM pg_stat_activity a
                                   WHERE a.backend_type = 'session_gc launcher' LIMIT 1) launcher ON true
               LEFT JOIN LATERAL (SELECT a.pid, a.query FROM pg_stat_activity a
                                   WHERE a.backend_type = 'session_gc worker'
                                     AND a.datname = current_database() LIMIT 1) worker ON true
               CROSS JOIN LATERAL (SELECT r.rolsuper AS is FROM pg_roles r WHERE r.oid = $1) superuser_role",
            &[caller.into()],
            |row| {
                let privileged = row.get::<bool>(15)?.unwrap_or(false);
                let (activity, tables, deleted, errors) = if privileged {
                    (row.get(7)?, row.get(11)?, row.get(12)?, row.get(13)?)
                } else {
                    let running = row.get::<i32>(6)?.is_some();
                    (running.then(|| "session_gc: purging".to_string()), None, None, None)
                };
                Ok((
                    Name(row.get::<String>(1)?.unwrap_or_default()),
                    row.get::<bool>(2)?.unwrap_or(false),
                    row.get::<bool>(3)?,
                    row.get::<bool>(4)?.unwrap_or(false),
                    row.get::<i32>(5)?,
                    row.get::<i32>(6)?,
                    activity,
                    row.get::<Interval>(8)?,
                    row.get::<TimestampWithTimeZone>(9)?,
                    row.get::<TimestampWithTimeZone>(10)?,
                    tables,
                    deleted,
                    errors,
                    row.get::<TimestampWithTimeZone>(14)?,
                ))
            },
        )
    })
    .or_raise();
    TableIterator::new(row)
}

/// One run of `session_gc.history`, for a listener of `NOTIFY session_gc` (whose payload has
/// only the run's id): empty unless the caller acts as the table's owner.
#[allow(clippy::type_complexity)] // pgrx needs the row type spelled out
#[pg_extern(volatile, parallel_unsafe)]
fn run(
    run_id: i64,
) -> TableIterator<
    'static,
    (
        name!(table_name, RegClass),
        name!(trigger, String),
        name!(status, String),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(finished_at, Option<TimestampWithTimeZone>),
        name!(deleted, i64),
        name!(partitions_dropped, i32),
        name!(error, Option<String>),
    ),
> {
    schema::require_current().or_raise();
    let rows = identity::as_extension_owner(|| {
        sql::rows(
            "SELECT h.relid, h.trigger, h.status, h.started_at, h.finished_at, h.deleted,
                    h.partitions_dropped, h.error, c.relowner
               FROM session_gc.history h JOIN pg_catalog.pg_class c ON c.oid = h.relid
              WHERE h.id = $1",
            &[run_id.into()],
            |row| {
                Ok((
                    row.get::<pg_sys::Oid>(9)?.unwrap_or(pg_sys::InvalidOid),
                    (
                        RegClass(row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid)),
                        row.get::<String>(2)?.unwrap_or_default(),
                        row.get::<String>(3)?.unwrap_or_default(),
                        row.get::<TimestampWithTimeZone>(4)?,
                        row.get::<TimestampWithTimeZone>(5)?,
                        row.get::<i64>(6)?.unwrap_or(0),
                        row.get::<i32>(7)?.unwrap_or(0),
                        row.get::<String>(8)?,
                    ),
                ))
            },
        )
    })
    .or_raise();
    let visible: Vec<_> = rows
        .into_iter()
        .filter(|(owner, _)| identity::acts_as(*owner))
        .map(|(_, row)| row)
        .collect();
    TableIterator::new(visible)
}

/// A table's name for messages, schema-qualified; its OID when it is gone.
struct RegClassName(pg_sys::Oid);

impl std::fmt::Display for RegClassName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match policy::table_info(self.0) {
            Ok(info) => f.write_str(&info.display_name),
            Err(_) => write!(f, "with OID {}", self.0.to_u32()),
        }
    }
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
    took: Duration,
    status: &str,
    error: Option<String>,
) -> CleanupRow {
    let [expired, idle, aged, inactive, over_cap] = progress.deleted_by_rule;
    let micros = i64::try_from(took.as_micros()).unwrap_or(i64::MAX);
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

/// Registered tables whose owner the caller acts as; superusers see all. A policy whose table
/// is gone (dropped while the event trigger could not fire) is left out, with a WARNING for
/// those who may remove it.
fn visible_policies(only_enabled: bool) -> GcResult<Vec<pg_sys::Oid>> {
    let mut visible = Vec::new();
    for relid in Policy::registered_tables(only_enabled)? {
        match policy::table_info(relid) {
            Ok(info) if identity::acts_as(info.owner) => visible.push(relid),
            Ok(_) => {}
            Err(error) if error.code == PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE => {
                if may_remove_orphan(relid)? {
                    GcError::new(
                        PgSqlErrorCode::ERRCODE_WARNING,
                        format!(
                            "session_gc: the table of policy {} no longer exists; skipped",
                            relid.to_u32()
                        ),
                    )
                    .detail("It was dropped without session_gc being told (for instance with session_replication_role = replica).")
                    .hint(format!("SELECT session_gc.unregister({});", relid.to_u32()))
                    .warn();
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(visible)
}

/// Whether the caller may remove the policy of a table that no longer exists: a superuser, or
/// a member of the role that registered it.
fn may_remove_orphan(relid: pg_sys::Oid) -> GcResult<bool> {
    let registered_by = identity::as_extension_owner(|| {
        sql::rows(
            "SELECT r.oid FROM session_gc.policies p JOIN pg_catalog.pg_roles r
                 ON r.rolname = p.registered_by
              WHERE p.table_name::oid = $1",
            &[relid.into()],
            |row| Ok(row.get::<pg_sys::Oid>(1)?),
        )
    })?;
    Ok(
        unsafe { pg_sys::superuser() }
            || registered_by.into_iter().flatten().any(identity::acts_as),
    )
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

pub fn check_batch_size(size: i32) -> GcResult<()> {
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
        refuse_negative_fields(parameter, value, &text)?;
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
    let negative = sql::one::<bool>(
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
    refuse_negative_fields("grace", value, &text)?;
    Ok(text)
}

/// Refuses an interval with a negative field ('1 month -29 days'): months, days and time are
/// applied to now() one after the other, so such a cutoff can lie in the future (in February)
/// and make every session expired.
fn refuse_negative_fields(parameter: &str, value: Interval, text: &str) -> GcResult<()> {
    if value.months() >= 0 && value.days() >= 0 && value.micros() >= 0 {
        return Ok(());
    }
    Err(GcError::invalid_parameter(format!(
        "{parameter} has a negative part: '{text}'"
    ))
    .detail("Months, days and time are counted back from now() one after the other; a negative part can put the cutoff in the future and expire every session.")
    .hint("Write the interval with positive parts only, such as '1 day' or '36 hours'."))
}

fn interval_sign(value: Interval) -> GcResult<(String, bool)> {
    let (text, positive) =
        sql::two::<String, bool>("SELECT $1::text, $1 > interval '0'", &[value.into()])?;
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
    let micros = sql::one::<f64>(
        "SELECT extract(epoch FROM $1::interval)::float8 * 1e6",
        &[text.as_str().into()],
    )?
    .unwrap_or(0.0);
    Ok(Some(
        Instant::now() + Duration::from_micros(micros.max(0.0) as u64),
    ))
}

/// The time zone a policy stores, or 22023. A zone name is stored in its canonical spelling.
/// An abbreviation ('EST') means what the caller's `timezone_abbreviations` says, which another
/// caller's, or the worker's, may say differently: it is stored as the fixed UTC offset it
/// stands for here (a POSIX zone such as '<-05>+05'), which reads the same for everyone.
fn known_time_zone(zone: &str) -> GcResult<String> {
    // Read as the caller reads it: its abbreviation file and zone (PostgreSQL 16 on also
    // knows the abbreviations of the session's zone).
    let callers: Vec<(&str, String)> = ["timezone_abbreviations", "TimeZone"]
        .into_iter()
        .filter_map(|name| Some((name, sql::current_setting(name)?)))
        .collect();
    let (offset_seconds, name) = sql::two_as_caller_reads::<i64, String>(
        &callers,
        "SELECT (SELECT extract(epoch FROM a.utc_offset)::int8
                   FROM pg_catalog.pg_timezone_abbrevs a WHERE lower(a.abbrev) = lower($1)
                  LIMIT 1),
                (SELECT min(n.name) FROM pg_catalog.pg_timezone_names n
                  WHERE lower(n.name) = lower($1))",
        &[zone.into()],
    )?;
    match (offset_seconds, name) {
        (Some(offset), _) => Ok(fixed_offset_zone(offset)),
        (None, Some(name)) => Ok(name),
        // A POSIX zone ('<+05:30>-05:30', what SET TIME ZONE INTERVAL leaves) reads the same
        // for everyone: kept as given when PostgreSQL takes it.
        (None, None) if accepted_zone(zone) => Ok(zone.to_string()),
        (None, None) => Err(GcError::invalid_parameter(format!(
            "time zone \"{zone}\" not recognized"
        ))
        .detail("time_zone says how naive timestamp and date columns are read.")
        .hint("Use a name from pg_timezone_names, such as 'UTC' or 'Europe/Berlin'.")),
    }
}

/// Whether PostgreSQL reads `zone` as a time zone (a POSIX specification, say).
fn accepted_zone(zone: &str) -> bool {
    zone.starts_with('<')
        && txn::in_subtransaction(|| {
            sql::one::<bool>(
                "SELECT (pg_catalog.now() AT TIME ZONE $1) IS NOT NULL",
                &[zone.into()],
            )
        })
        .is_ok_and(|ok| ok == Some(true))
}

/// A POSIX zone for a fixed offset east of UTC, in seconds: '<+0530>-05:30'. POSIX counts
/// hours west of Greenwich, hence the sign turned round; the name in brackets is ISO's.
fn fixed_offset_zone(offset_seconds: i64) -> String {
    if offset_seconds == 0 {
        return "UTC".into();
    }
    let east = offset_seconds > 0;
    let total = offset_seconds.unsigned_abs();
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    let name = if minutes == 0 && seconds == 0 {
        format!("{}{hours:02}", if east { '+' } else { '-' })
    } else {
        format!("{}{hours:02}{minutes:02}", if east { '+' } else { '-' })
    };
    format!(
        "<{name}>{}{hours}:{minutes:02}:{seconds:02}",
        if east { '-' } else { '+' }
    )
}

/// Warns when no btree or BRIN index starts with `column` (or names it in its predicate);
/// `partial` is the predicate of the suggested index, for boolean rules.
fn warn_if_unindexed(
    info: &policy::TableInfo,
    column: &str,
    partial: Option<String>,
    purpose: &str,
) -> GcResult<()> {
    let served = sql::one::<bool>(
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
        // A cancel is raised by the subtransaction itself, not returned.
        let outcome = txn::in_subtransaction(work);
        if self.commit_each_batch {
            sql::commit();
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
            self.sleep(delay);
        }
        pgrx::check_for_interrupts!();
    }

    fn sleep(&mut self, duration: Duration) {
        // On the backend's latch, which a cancel or termination sets: the wait ends at once.
        // Other wake-ups (a notification, catch-up) go back to waiting until the end.
        let until = std::time::Instant::now() + duration;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let timeout = std::ffi::c_long::try_from(left.as_millis().max(1))
                .unwrap_or(std::ffi::c_long::MAX);
            // SAFETY: MyLatch is this backend's own latch, set up before any statement runs.
            unsafe {
                pg_sys::WaitLatch(
                    pg_sys::MyLatch,
                    (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH)
                        as i32,
                    timeout,
                    pg_sys::PG_WAIT_EXTENSION,
                );
                pg_sys::ResetLatch(pg_sys::MyLatch);
            }
            pgrx::check_for_interrupts!();
        }
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
    require_writable("purge()").or_raise();
    // The caller's tables only: the one named, or every enabled policy on a table it owns.
    let tables = targets(tbl).or_raise();
    let nonatomic = unsafe { called_nonatomic(fcinfo) };
    if nonatomic {
        sql::connect_nonatomic().or_raise();
    }
    let mut tx = ProcedureTransactions {
        commit_each_batch: nonatomic,
    };
    let options = crate::pass::PassOptions {
        trigger: Trigger::Manual,
        tables: Some(tables),
        batch_size,
        deadline,
        named: tbl.is_some(),
    };
    let summary = crate::pass::run(&mut tx, &options);
    if nonatomic {
        sql::finish_nonatomic();
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
                .as_ref()
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
