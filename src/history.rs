//! Run history: one row per run and table in `session_gc.history`, running totals in
//! `session_gc.totals`, and the trim that keeps history inside its retention.

use crate::engine::Progress;
use crate::error::{GcError, GcResult};
use crate::gucs;
use crate::identity;
use crate::sql;
use pgrx::pg_sys;

/// Who started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Manual,
    Worker,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Worker => "worker",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Everything expired at the start was handled.
    Ok,
    /// The time budget ran out; expired rows may be left for the next run.
    Partial,
    Error,
    /// Stopped by shutdown or cancel before it finished.
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Error => "error",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// Opens a history row (status `running`) and returns its id.
pub fn start(relid: pg_sys::Oid, table_name: &str, trigger: Trigger) -> GcResult<i64> {
    identity::as_extension_owner(|| {
        let id = sql::write_one::<i64>(
            "INSERT INTO session_gc.history (relid, table_name, trigger, pid)
             VALUES ($1, $2, $3, pg_catalog.pg_backend_pid()) RETURNING id",
            &[relid.into(), table_name.into(), trigger.as_str().into()],
        )?;
        id.ok_or_else(|| GcError::invalid_parameter("history row was not created"))
    })
}

/// Whether the worker should leave a table alone this pass because its last worker runs
/// failed: after two failures in a row it waits two intervals, then four, and so on, at most an
/// hour (or one interval, if longer). A broken policy (a column dropped, a table locked for
/// hours) then costs a history row and a WARNING now and then, not at every interval. Failures
/// before the policy was last registered do not count, so `register()` ends the backoff;
/// `cleanup()` and `purge()` never back off.
pub fn backing_off(relid: pg_sys::Oid, interval: std::time::Duration) -> GcResult<bool> {
    identity::as_extension_owner(|| {
        let waiting = sql::one::<bool>(
            "WITH last_success AS (
                 SELECT coalesce(max(h.id), 0) AS id FROM session_gc.history h
                  WHERE h.relid = $1 AND h.trigger = 'worker' AND h.status <> 'error'),
             failures AS (
                 SELECT count(*) AS n, max(h.finished_at) AS latest
                   FROM session_gc.history h, last_success s
                  WHERE h.relid = $1 AND h.trigger = 'worker' AND h.status = 'error'
                    AND h.id > s.id
                    AND h.started_at >= (SELECT max(p.updated_at) FROM session_gc.policies p
                                          WHERE p.table_name = $1::oid::regclass))
             SELECT f.n >= 2 AND pg_catalog.now() < f.latest + LEAST(
                        pg_catalog.make_interval(secs => $2) * pg_catalog.power(2, LEAST(f.n - 1, 20)),
                        GREATEST(pg_catalog.make_interval(secs => $2), interval '1 hour'))
               FROM failures f",
            &[relid.into(), interval.as_secs_f64().into()],
        )?;
        Ok(waiting == Some(true))
    })
}

/// Closes a history row and adds the run to the table's totals. A worker run that found
/// nothing to do leaves no history row (only the totals and the pass record move), so an idle
/// table does not add a row per interval.
pub fn finish(
    id: i64,
    relid: pg_sys::Oid,
    progress: &Progress,
    status: RunStatus,
    error: Option<&str>,
) -> GcResult<()> {
    let [expired, idle, aged, inactive, over_cap] = progress.deleted_by_rule;
    let did_something = progress.deleted() > 0 || progress.partitions_dropped > 0;
    let replica_wait = progress.replica_wait.as_secs_f64();
    // A run that waited for standbys keeps its history row: the wait is worth seeing.
    let keep_row = did_something || replica_wait > 0.0;
    identity::as_extension_owner(|| {
        // Kept all the same after a failed worker run: it shows the table recovered, and ends
        // the failures' backoff.
        sql::run(
            "DELETE FROM session_gc.history h
              WHERE h.id = $1 AND h.trigger = 'worker' AND $2 = 'ok' AND NOT $3
                AND (SELECT p.status FROM session_gc.history p
                      WHERE p.relid = h.relid AND p.trigger = 'worker' AND p.id < h.id
                      ORDER BY p.id DESC LIMIT 1) IS DISTINCT FROM 'error'",
            &[id.into(), status.as_str().into(), keep_row.into()],
        )?;
        sql::run(
            "UPDATE session_gc.history
                SET finished_at = clock_timestamp(), status = $2, deleted = $3, expired = $4,
                    idle = $5, aged = $6, inactive = $7, batches = $8, error = $9,
                    over_cap = $10, partitions_dropped = $11,
                    replica_wait = pg_catalog.make_interval(secs => $12)
              WHERE id = $1",
            &[
                id.into(),
                status.as_str().into(),
                progress.deleted().into(),
                expired.into(),
                idle.into(),
                aged.into(),
                inactive.into(),
                progress.batches.into(),
                error.into(),
                over_cap.into(),
                progress.partitions_dropped.into(),
                replica_wait.into(),
            ],
        )?;
        // The policy may be gone (unregistered, table dropped): then there is nothing to total.
        sql::run(
            "INSERT INTO session_gc.totals AS t (table_name, runs, deleted_total, last_run, last_deleted,
                                                 last_status, partitions_dropped_total, errors_total,
                                                 replica_wait_total)
             SELECT $1::oid::regclass, 1, $2, now(), $2, $3, $4,
                    (CASE WHEN $3 = 'error' THEN 1 ELSE 0 END), pg_catalog.make_interval(secs => $5)
              WHERE EXISTS (SELECT FROM session_gc.policies p WHERE p.table_name = $1::oid::regclass)
             ON CONFLICT (table_name) DO UPDATE
                SET runs = t.runs + 1, deleted_total = t.deleted_total + $2,
                    last_run = now(), last_deleted = $2, last_status = $3,
                    partitions_dropped_total = t.partitions_dropped_total + $4,
                    errors_total = t.errors_total + (CASE WHEN $3 = 'error' THEN 1 ELSE 0 END),
                    replica_wait_total = t.replica_wait_total + EXCLUDED.replica_wait_total",
            &[
                relid.into(),
                progress.deleted().into(),
                status.as_str().into(),
                i64::from(progress.partitions_dropped).into(),
                replica_wait.into(),
            ],
        )?;
        if did_something && gucs::notify() {
            // Delivered when the run's transaction commits, like any NOTIFY. Anyone who can
            // connect may LISTEN, so the payload names no table and no row count: a listener
            // reads its own runs with session_gc.run(run_id).
            sql::run(
                "SELECT pg_catalog.pg_notify('session_gc', pg_catalog.json_build_object(
                     'database', pg_catalog.current_database(), 'run_id', $1::int8)::text)",
                &[id.into()],
            )?;
        }
        Ok(())
    })
}

/// Adds one committed batch to its run's history row, in the batch's own transaction.
pub fn add_batch(id: i64, batch: &crate::engine::Batch) -> GcResult<()> {
    let deleted: i64 = batch.deleted_by_rule.iter().sum();
    if deleted == 0 && batch.partitions_dropped == 0 {
        return Ok(());
    }
    let [expired, idle, aged, inactive, over_cap] = batch.deleted_by_rule;
    identity::as_extension_owner(|| {
        sql::run(
            "UPDATE session_gc.history
                SET deleted = deleted + $2, expired = expired + $3, idle = idle + $4,
                    aged = aged + $5, inactive = inactive + $6, over_cap = over_cap + $7,
                    partitions_dropped = partitions_dropped + $8, batches = batches + 1
              WHERE id = $1",
            &[
                id.into(),
                deleted.into(),
                expired.into(),
                idle.into(),
                aged.into(),
                inactive.into(),
                over_cap.into(),
                batch.partitions_dropped.into(),
            ],
        )
    })
}

/// Deletes history older than `session_gc.history_retention`.
pub fn trim() -> GcResult<i64> {
    identity::as_extension_owner(|| {
        let trimmed = sql::write_one::<i64>(
            "WITH gone AS (
                 DELETE FROM session_gc.history
                  WHERE started_at < now() - make_interval(secs => $1) RETURNING 1)
             SELECT count(*)::int8 FROM gone",
            &[gucs::history_retention_s().into()],
        )?;
        Ok(trimmed.unwrap_or(0))
    })
}

/// Marks runs left `running` by a process that is gone (a crash, a kill) as failed, and adds
/// what their committed batches deleted (`add_batch`) to the totals.
pub fn fail_orphaned_runs() -> GcResult<i64> {
    identity::as_extension_owner(|| {
        let failed = sql::write_one::<i64>(
            "WITH gone AS (
                 UPDATE session_gc.history h
                    SET status = 'error', finished_at = pg_catalog.clock_timestamp(),
                        error = 'the process running this purge stopped before it finished'
                  WHERE h.status = 'running'
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = h.pid)
                 RETURNING h.relid, h.deleted, h.partitions_dropped),
             per_table AS (
                 SELECT g.relid, sum(g.deleted)::int8 AS deleted,
                        sum(g.partitions_dropped)::int8 AS dropped, count(*)::int8 AS runs
                   FROM gone g GROUP BY g.relid),
             counted AS (
                 INSERT INTO session_gc.totals AS t (table_name, runs, deleted_total, last_run,
                                                     last_deleted, last_status,
                                                     partitions_dropped_total, errors_total)
                 SELECT p.table_name, r.runs, r.deleted, pg_catalog.now(), r.deleted, 'error',
                        r.dropped, r.runs
                   FROM per_table r
                   JOIN (SELECT DISTINCT q.table_name FROM session_gc.policies q) p
                     ON p.table_name OPERATOR(pg_catalog.=) r.relid::pg_catalog.regclass
                 ON CONFLICT (table_name) DO UPDATE
                    SET runs = t.runs + EXCLUDED.runs,
                        deleted_total = t.deleted_total + EXCLUDED.deleted_total,
                        last_run = EXCLUDED.last_run, last_deleted = EXCLUDED.last_deleted,
                        last_status = 'error',
                        partitions_dropped_total = t.partitions_dropped_total
                                                   + EXCLUDED.partitions_dropped_total,
                        errors_total = t.errors_total + EXCLUDED.errors_total
                 RETURNING 1)
             SELECT count(*)::int8 FROM gone",
            &[],
        )?;
        Ok(failed.unwrap_or(0))
    })
}

/// Remembers the worker's last pass in this database, for `session_gc.worker_status()`.
pub fn record_pass(took: std::time::Duration, summary: &crate::pass::PassSummary) -> GcResult<()> {
    let errors = summary
        .tables
        .iter()
        .filter(|t| t.status == RunStatus::Error)
        .count() as i64;
    identity::as_extension_owner(|| {
        sql::run(
            "INSERT INTO session_gc.worker_state AS w
                    (id, last_pass_started, last_pass_finished, last_pass_tables, last_pass_deleted, last_pass_errors, passes)
             VALUES (true, clock_timestamp() - make_interval(secs => $1), clock_timestamp(), $2, $3, $4, 1)
             ON CONFLICT (id) DO UPDATE SET
                 last_pass_started = EXCLUDED.last_pass_started, last_pass_finished = EXCLUDED.last_pass_finished,
                 last_pass_tables = EXCLUDED.last_pass_tables, last_pass_deleted = EXCLUDED.last_pass_deleted,
                 last_pass_errors = EXCLUDED.last_pass_errors, passes = w.passes + 1",
            &[
                took.as_secs_f64().into(),
                (summary.tables.len() as i32).into(),
                summary.deleted().into(),
                errors.into(),
            ],
        )?;
        Ok(())
    })
}
