//! One pass over the enabled policies of a database with committed batches: what the
//! background worker does every interval and what `CALL session_gc.purge()` does by hand.
//!
//! Tables are visited round-robin, one batch each per turn, so a huge backlog in one table
//! cannot starve the others. Every batch runs in a transaction of its own, so row locks and the
//! snapshot never outlive one batch. A table that fails is recorded and left for the next pass;
//! the others go on.

use crate::engine::{Cursor, Progress};
use crate::error::{GcError, GcResult};
use crate::gucs;
use crate::history::{self, RunStatus, Trigger};
use crate::policy::{self, Policy};
use pgrx::pg_sys;
use std::time::{Duration, Instant};

/// How a pass's units of work are made durable, and how the pass learns it must stop.
pub trait Transactions {
    /// Runs `work` in a transaction of its own: committed on success, rolled back on error.
    fn run<R>(&mut self, work: impl FnOnce() -> GcResult<R>) -> GcResult<R>;

    /// Runs one purge batch like `run`; the worker bounds it with `session_gc.batch_timeout`,
    /// which its bookkeeping must not be subject to.
    fn run_batch<R>(&mut self, work: impl FnOnce() -> GcResult<R>) -> GcResult<R> {
        self.run(work)
    }

    /// True once the pass must end now (shutdown); checked between batches.
    fn stop_requested(&mut self) -> bool;

    /// Called between batches, to throttle (`session_gc.batch_delay`).
    fn pause(&mut self);

    /// Sleeps `duration` between batches (waiting for standbys), waking for a cancel.
    fn sleep(&mut self, duration: Duration);

    /// Whether each batch's transaction commits on its own (rather than with the caller's).
    fn batch_commits_alone(&self) -> bool {
        true
    }

    /// Shows what is being done (pg_stat_activity for the worker).
    fn report(&mut self, _activity: &str) {}
}

/// What a pass is limited to.
pub struct PassOptions {
    pub trigger: Trigger,
    /// The tables to visit; None: every enabled policy.
    pub tables: Option<Vec<pg_sys::Oid>>,
    pub batch_size: Option<i32>,
    pub deadline: Option<Instant>,
    /// The caller named the table: its policy is purged even when disabled.
    pub named: bool,
}

/// What a pass did, per table.
#[derive(Debug, Default)]
pub struct PassSummary {
    pub tables: Vec<TableOutcome>,
}

#[derive(Debug)]
pub struct TableOutcome {
    pub relid: pg_sys::Oid,
    pub table: String,
    pub progress: Progress,
    pub status: RunStatus,
    pub error: Option<GcError>,
    pub duration: std::time::Duration,
}

impl PassSummary {
    pub fn deleted(&self) -> i64 {
        self.tables.iter().map(|t| t.progress.deleted()).sum()
    }
}

struct TableRun {
    relid: pg_sys::Oid,
    table: String,
    history_id: i64,
    policy: Policy,
    cursor: Cursor,
    batch_size: i64,
    progress: Progress,
    started: Instant,
}

/// What one turn of a table did.
enum Turn {
    Batch(crate::engine::Batch),
    /// Nothing left to do.
    Finished,
    /// The policy was removed or disabled since the run started: stop without deleting.
    PolicyWithdrawn(&'static str),
}

/// Runs one pass. Never raises for a table's failure: those end up in history and the summary.
pub fn run(tx: &mut impl Transactions, options: &PassOptions) -> GcResult<PassSummary> {
    if window_closed(tx, options) {
        return Ok(PassSummary::default());
    }
    let relids = match &options.tables {
        Some(tables) => tables.clone(),
        None => tx.run(|| Policy::registered_tables(true))?,
    };
    let mut summary = PassSummary::default();
    let mut active: Vec<TableRun> = Vec::new();
    for relid in relids {
        if options.trigger == Trigger::Worker
            && tx
                .run(|| history::backing_off(relid, gucs::interval()))
                .unwrap_or(false)
        {
            continue;
        }
        let opened_at = Instant::now();
        match tx.run(|| open_run(relid, options)) {
            Ok(run) => active.push(run),
            Err(error) => {
                let table = tx
                    .run(|| Ok(policy::table_info(relid)?.display_name))
                    .unwrap_or_else(|_| format!("OID {}", relid.to_u32()));
                record_failure_without_run(tx, relid, &table, options.trigger, &error);
                summary.tables.push(TableOutcome {
                    relid,
                    table,
                    progress: Progress::default(),
                    status: RunStatus::Error,
                    error: Some(error),
                    duration: opened_at.elapsed(),
                });
            }
        }
    }

    // The rest the batches so far have earned under session_gc.max_duty_cycle, taken before
    // the next batch (so a pass's last batch is followed by none).
    let mut rest_owed = Duration::ZERO;
    while !active.is_empty() {
        let mut still_active = Vec::with_capacity(active.len());
        for mut run in active.drain(..) {
            if tx.stop_requested() {
                close(tx, run, RunStatus::Cancelled, None, &mut summary);
                continue;
            }
            if past(options.deadline) {
                close(tx, run, RunStatus::Partial, None, &mut summary);
                continue;
            }
            tx.report(&format!(
                "session_gc: purging {} (batch {}, {} rows so far)",
                run.table,
                run.progress.batches + 1,
                run.progress.deleted()
            ));
            let commits_alone = tx.batch_commits_alone();
            // Outside the caller's transaction only: waiting there would hold its locks. A run's
            // first batch does not look: a table with nothing to purge never waits.
            if commits_alone && run.progress.batches > 0 && standby_behind() {
                let (waited, gave_up) = wait_for_standbys(tx, options);
                run.progress.replica_wait += waited;
                if gave_up {
                    let reason = GcError::new(
                        pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                        format!(
                            "a standby stayed more than session_gc.max_replica_lag behind for {} s; the rest waits for the next run",
                            waited.as_secs()
                        ),
                    );
                    close(tx, run, RunStatus::Partial, Some(reason), &mut summary);
                } else {
                    still_active.push(run);
                }
                tx.pause();
                continue;
            }
            if commits_alone {
                // Waits count whole milliseconds (a latch's timeout): the rest of a millisecond
                // stays owed, or batches under a millisecond would never rest at all.
                let (payable, carried) = whole_milliseconds(rest_owed);
                rest(tx, payable, options.deadline, "session_gc.max_duty_cycle");
                rest_owed = carried;
            }
            // Outside the caller's transaction only, like every wait.
            let reservation = if commits_alone {
                wait_for_budget(tx, run.batch_size, options.deadline)
            } else {
                crate::budget::Reservation::none()
            };
            // A shutdown, a cancel or the deadline may have come during the waits: the next
            // turn ends the run (the reservation goes back unused).
            if tx.stop_requested() || past(options.deadline) {
                still_active.push(run);
                continue;
            }
            // So may the purge window's end, checked before every batch.
            if window_closed(tx, options) {
                let reason = GcError::new(
                    pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    "the purge window closed (session_gc.purge_window); the rest waits for the next window",
                );
                close(tx, run, RunStatus::Partial, Some(reason), &mut summary);
                continue;
            }
            let batch_started = Instant::now();
            let turn = tx.run_batch(|| {
                // Only a batch's own commit may skip the flush, never the caller's transaction.
                if commits_alone {
                    crate::txn::commit_without_waiting_for_flush();
                }
                if let Some(withdrawn) = follow_policy(&mut run, options)? {
                    return Ok(Turn::PolicyWithdrawn(withdrawn));
                }
                crate::txn::compress_wal_of_batch();
                Ok(match run.cursor.next_batch(&run.policy, run.batch_size)? {
                    Some(batch) => {
                        // Counted with the rows it deleted, so a run that dies keeps its count.
                        history::add_batch(run.history_id, &batch)?;
                        Turn::Batch(batch)
                    }
                    None => Turn::Finished,
                })
            });
            rest_owed += duty_cycle_rest(batch_started.elapsed(), gucs::max_duty_cycle());
            // Rows removed with whole partitions cost little: only deleted rows count.
            let deleted = match &turn {
                Ok(Turn::Batch(batch)) if batch.partitions_dropped == 0 => {
                    batch.deleted_by_rule.iter().sum()
                }
                _ => 0,
            };
            reservation.settle(deleted);
            match turn {
                Ok(Turn::Batch(batch)) => {
                    run.progress.add(&batch);
                    if run.cursor.is_done() {
                        close(tx, run, RunStatus::Ok, None, &mut summary);
                    } else {
                        still_active.push(run);
                    }
                }
                Ok(Turn::Finished) => close(tx, run, RunStatus::Ok, None, &mut summary),
                Ok(Turn::PolicyWithdrawn(why)) => {
                    let reason = GcError::new(
                        pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                        why,
                    );
                    close(tx, run, RunStatus::Cancelled, Some(reason), &mut summary)
                }
                Err(error) => close(tx, run, RunStatus::Error, Some(error), &mut summary),
            }
            tx.pause();
        }
        active = still_active;
    }
    if let Err(error) = tx.run(history::trim) {
        warn_about(&format!("session_gc: could not trim history: {error}"));
    }
    Ok(summary)
}

/// Whether the worker is outside its purge windows (`session_gc.purge_window`, read again every
/// round: a reload may change it). Never for `cleanup()` and `purge()`.
fn window_closed(tx: &mut impl Transactions, options: &PassOptions) -> bool {
    if options.trigger != Trigger::Worker {
        return false;
    }
    let window = gucs::window();
    // A failed look (it never should) purges rather than lets sessions pile up.
    !window.is_empty() && !tx.run(|| crate::window::open_now(&window)).unwrap_or(true)
}

/// The rest due after a batch that took `spent` when purges may spend `duty_percent` of the
/// wall time in batches: spent x (100 - d) / d.
pub fn duty_cycle_rest(spent: Duration, duty_percent: i32) -> Duration {
    let duty = u32::try_from(duty_percent.clamp(1, 100)).unwrap_or(100);
    spent * (100 - duty) / duty
}

/// `owed` as the whole milliseconds a wait can take now, and the rest of a millisecond.
pub fn whole_milliseconds(owed: Duration) -> (Duration, Duration) {
    let whole = Duration::from_millis(u64::try_from(owed.as_millis()).unwrap_or(u64::MAX));
    (whole, owed.saturating_sub(whole))
}

/// Rests between batches, holding no transaction, for `owed` (never past the run's deadline),
/// as `setting` says; a shutdown or cancel ends it early.
fn rest(tx: &mut impl Transactions, owed: Duration, deadline: Option<Instant>, setting: &str) {
    let owed = deadline.map_or(owed, |deadline| {
        owed.min(deadline.saturating_duration_since(Instant::now()))
    });
    if owed.is_zero() || tx.stop_requested() {
        return;
    }
    tx.report(&format!(
        "session_gc: resting {} ms ({setting})",
        owed.as_millis()
    ));
    tx.sleep(owed);
}

/// Whether the run's deadline, if it has one, has come.
fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|deadline| Instant::now() >= deadline)
}

/// Takes the coming batch's rows from the server's budget (`session_gc.max_rows_per_second`),
/// resting while it is spent. Returns what was taken; nothing when the pass must stop or the
/// run's deadline came first (the caller looks at both before the batch).
fn wait_for_budget(
    tx: &mut impl Transactions,
    batch_size: i64,
    deadline: Option<Instant>,
) -> crate::budget::Reservation {
    loop {
        match crate::budget::take(batch_size) {
            crate::budget::Turn::Go(reservation) => return reservation,
            crate::budget::Turn::Wait(wait) => {
                if tx.stop_requested() || past(deadline) {
                    return crate::budget::Reservation::none();
                }
                rest(tx, wait, deadline, "session_gc.max_rows_per_second");
            }
        }
    }
}

/// How often a purge held back by a standby looks again.
const STANDBY_POLL: Duration = Duration::from_millis(100);

/// Whether a connected standby has more WAL left to replay than `session_gc.max_replica_lag`:
/// looked at before every batch but a run's first (shared memory: no transaction needed).
fn standby_behind() -> bool {
    gucs::max_replica_lag_bytes().is_some_and(|limit| {
        crate::replicas::replay_lag_bytes().is_some_and(|behind| behind > limit)
    })
}

/// Waits, between batches and holding no transaction, while a connected standby has more WAL
/// left to replay than `session_gc.max_replica_lag` (read again at every look: the workers take
/// a reload meanwhile), until it catches up or the pass must stop; at most until the run's
/// deadline, or `session_gc.max_runtime` for a call without one (a `cleanup()` caller waits
/// meanwhile, holding its snapshot). Returns the time spent waiting, and whether it gave up
/// with the standby still behind.
fn wait_for_standbys(tx: &mut impl Transactions, options: &PassOptions) -> (Duration, bool) {
    let started = Instant::now();
    let until = options
        .deadline
        .unwrap_or_else(|| started + gucs::max_runtime());
    loop {
        if tx.stop_requested() {
            return (started.elapsed(), false);
        }
        let Some(limit) = gucs::max_replica_lag_bytes() else {
            return (started.elapsed(), false);
        };
        let behind = match crate::replicas::replay_lag_bytes() {
            Some(behind) if behind > limit => behind,
            _ => return (started.elapsed(), false),
        };
        if Instant::now() >= until {
            return (started.elapsed(), true);
        }
        tx.report(&format!(
            "session_gc: waiting for a standby to replay {} kB of WAL (session_gc.max_replica_lag is {} kB)",
            behind / 1024,
            limit / 1024
        ));
        tx.sleep(STANDBY_POLL);
    }
}

/// Makes the coming batch act on the policy and table as committed now (and keeps them so until
/// the batch ends: `policy::lock_committed_version`). A policy replaced, or a table renamed,
/// retyped or given away, since the last batch is loaded again and its walk starts over; a
/// policy removed, or disabled after the run started, ends the run. Some(reason) when the run
/// must end.
fn follow_policy(run: &mut TableRun, options: &PassOptions) -> GcResult<Option<&'static str>> {
    const REMOVED: &str = "the policy was removed during the run; nothing more was deleted";
    let Some(committed) = policy::lock_committed_version(run.relid, run.policy.owner)? else {
        return Ok(Some(REMOVED));
    };
    if run.policy.version.enabled && !committed.enabled {
        return Ok(Some(
            "the policy was disabled during the run; nothing more was deleted",
        ));
    }
    if committed != run.policy.version {
        let Some(policy) = Policy::load(run.relid)? else {
            return Ok(Some(REMOVED));
        };
        run.batch_size = effective_batch_size(options, &policy);
        run.cursor = Cursor::new(&policy)?;
        run.policy = policy;
    }
    Ok(None)
}

fn effective_batch_size(options: &PassOptions, policy: &Policy) -> i64 {
    i64::from(
        options
            .batch_size
            .or(policy.batch_size)
            .unwrap_or_else(gucs::batch_size),
    )
}

fn open_run(relid: pg_sys::Oid, options: &PassOptions) -> GcResult<TableRun> {
    let info = policy::table_info(relid)?;
    let policy = Policy::load(relid)?.ok_or_else(|| {
        GcError::new(
            pgrx::PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("table {} has no session_gc policy", info.display_name),
        )
        .detail("The policy was removed after the pass started.")
        .hint("Nothing to do; it will not be visited again.")
    })?;
    if !policy.version.enabled && !options.named {
        // Disabled since the tables were listed.
        return Err(GcError::new(
            pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("the policy of {} was disabled", info.display_name),
        )
        .detail("The policy was disabled after the pass listed its tables.")
        .hint("Nothing was deleted; name the table to purge it anyway."));
    }
    let history_id = history::start(relid, &info.display_name, options.trigger)?;
    let batch_size = effective_batch_size(options, &policy);
    let cursor = Cursor::new(&policy)?;
    Ok(TableRun {
        relid,
        table: info.display_name,
        history_id,
        cursor,
        policy,
        batch_size,
        progress: Progress::default(),
        started: Instant::now(),
    })
}

fn close(
    tx: &mut impl Transactions,
    run: TableRun,
    status: RunStatus,
    error: Option<GcError>,
    summary: &mut PassSummary,
) {
    let message = error.as_ref().map(GcError::to_string);
    let recorded = tx.run(|| {
        history::finish(
            run.history_id,
            run.relid,
            &run.progress,
            status,
            message.as_deref(),
        )
    });
    if let Err(e) = recorded {
        warn_about(&format!(
            "session_gc: could not record the run of {}: {e}",
            run.table
        ));
    }
    if let (RunStatus::Error, Some(message)) = (status, &message) {
        warn_about(&format!(
            "session_gc: purge of {} failed after {} rows: {message}",
            run.table,
            run.progress.deleted()
        ));
    }
    summary.tables.push(TableOutcome {
        relid: run.relid,
        table: run.table,
        progress: run.progress,
        status,
        error,
        duration: run.started.elapsed(),
    });
}

fn record_failure_without_run(
    tx: &mut impl Transactions,
    relid: pg_sys::Oid,
    table: &str,
    trigger: Trigger,
    error: &GcError,
) {
    let message = error.to_string();
    let recorded = tx.run(|| {
        let id = history::start(relid, table, trigger)?;
        history::finish(
            id,
            relid,
            &Progress::default(),
            RunStatus::Error,
            Some(&message),
        )
    });
    if let Err(e) = recorded {
        warn_about(&format!(
            "session_gc: could not record a failure for {table}: {e}"
        ));
    }
    warn_about(&format!("session_gc: skipping {table}: {message}"));
}

fn warn_about(message: &str) {
    GcError::new(pgrx::PgSqlErrorCode::ERRCODE_WARNING, message).warn();
}

#[cfg(test)]
mod duty_cycle_tests {
    use super::{duty_cycle_rest, whole_milliseconds};
    use std::time::Duration;

    #[test]
    fn the_rest_leaves_the_purge_its_share_of_the_wall_time() {
        let batch = Duration::from_millis(10);
        assert_eq!(duty_cycle_rest(batch, 100), Duration::ZERO);
        assert_eq!(duty_cycle_rest(batch, 50), Duration::from_millis(10));
        assert_eq!(duty_cycle_rest(batch, 25), Duration::from_millis(30));
        assert_eq!(duty_cycle_rest(batch, 10), Duration::from_millis(90));
        assert_eq!(duty_cycle_rest(batch, 1), Duration::from_millis(990));
        // Out of range values are clamped as the setting is.
        assert_eq!(duty_cycle_rest(batch, 0), Duration::from_millis(990));
        assert_eq!(duty_cycle_rest(batch, 250), Duration::ZERO);
    }

    /// Batches of 0.65 ms at 50% owe 0.65 ms each: paid once a whole millisecond is owed, the
    /// fraction carried (a latch waits whole milliseconds; 0.65 ms would be no wait at all).
    #[test]
    fn fractions_of_a_millisecond_are_carried_not_dropped() {
        let owed = Duration::from_micros(650);
        assert_eq!(whole_milliseconds(owed), (Duration::ZERO, owed));
        assert_eq!(
            whole_milliseconds(owed * 2),
            (Duration::from_millis(1), Duration::from_micros(300))
        );
        assert_eq!(
            whole_milliseconds(Duration::from_millis(5)),
            (Duration::from_millis(5), Duration::ZERO)
        );
    }
}
