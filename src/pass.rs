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
use std::time::Instant;

/// How a pass's units of work are made durable, and how the pass learns it must stop.
pub trait Transactions {
    /// Runs `work` in a transaction of its own: committed on success, rolled back on error.
    fn run<R>(&mut self, work: impl FnOnce() -> GcResult<R>) -> GcResult<R>;

    /// True once the pass must end now (shutdown); checked between batches.
    fn stop_requested(&mut self) -> bool;

    /// Called between batches, to throttle (`session_gc.batch_delay`).
    fn pause(&mut self);

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
}

/// What a pass did, per table.
#[derive(Debug, Default)]
pub struct PassSummary {
    pub tables: Vec<TableOutcome>,
}

#[derive(Debug)]
pub struct TableOutcome {
    pub table: String,
    pub progress: Progress,
    pub status: RunStatus,
    pub error: Option<String>,
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
}

/// Runs one pass. Never raises for a table's failure: those end up in history and the summary.
pub fn run(tx: &mut impl Transactions, options: &PassOptions) -> GcResult<PassSummary> {
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
        match tx.run(|| open_run(relid, options)) {
            Ok(run) => active.push(run),
            Err(error) => {
                let table = tx
                    .run(|| Ok(policy::table_info(relid)?.display_name))
                    .unwrap_or_else(|_| format!("OID {}", relid.to_u32()));
                record_failure_without_run(tx, relid, &table, options.trigger, &error);
                summary.tables.push(TableOutcome {
                    table,
                    progress: Progress::default(),
                    status: RunStatus::Error,
                    error: Some(error.to_string()),
                });
            }
        }
    }

    while !active.is_empty() {
        let mut still_active = Vec::with_capacity(active.len());
        for mut run in active.drain(..) {
            if tx.stop_requested() {
                close(tx, run, RunStatus::Cancelled, None, &mut summary);
                continue;
            }
            if options
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                close(tx, run, RunStatus::Partial, None, &mut summary);
                continue;
            }
            tx.report(&format!(
                "session_gc: purging {} (batch {}, {} rows so far)",
                run.table,
                run.progress.batches + 1,
                run.progress.deleted()
            ));
            let (policy, batch_size) = (&run.policy, run.batch_size);
            let cursor = &mut run.cursor;
            let commits_alone = tx.batch_commits_alone();
            let batch = tx.run(|| {
                // Only a batch's own commit may skip the flush, never the caller's transaction.
                if commits_alone {
                    crate::txn::commit_without_waiting_for_flush();
                }
                crate::txn::compress_wal_of_batch();
                cursor.next_batch(policy, batch_size)
            });
            match batch {
                Ok(Some(batch)) => {
                    run.progress.add(&batch);
                    if run.cursor.is_done() {
                        close(tx, run, RunStatus::Ok, None, &mut summary);
                    } else {
                        still_active.push(run);
                    }
                }
                Ok(None) => close(tx, run, RunStatus::Ok, None, &mut summary),
                Err(error) => {
                    let message = error.to_string();
                    close(tx, run, RunStatus::Error, Some(message), &mut summary);
                }
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
    let history_id = history::start(relid, &info.display_name, options.trigger)?;
    let batch_size = options
        .batch_size
        .or(policy.batch_size)
        .unwrap_or_else(gucs::batch_size);
    let cursor = Cursor::new(&policy, i64::from(batch_size))?;
    Ok(TableRun {
        relid,
        table: info.display_name,
        history_id,
        cursor,
        policy,
        batch_size: i64::from(batch_size),
        progress: Progress::default(),
    })
}

fn close(
    tx: &mut impl Transactions,
    run: TableRun,
    status: RunStatus,
    error: Option<String>,
    summary: &mut PassSummary,
) {
    let recorded = tx.run(|| {
        history::finish(
            run.history_id,
            run.relid,
            &run.progress,
            status,
            error.as_deref(),
        )
    });
    if let Err(e) = recorded {
        warn_about(&format!(
            "session_gc: could not record the run of {}: {e}",
            run.table
        ));
    }
    if let Some(message) = &error {
        warn_about(&format!(
            "session_gc: purge of {} failed after {} rows: {message}",
            run.table,
            run.progress.deleted()
        ));
    }
    summary.tables.push(TableOutcome {
        table: run.table,
        progress: run.progress,
        status,
        error,
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
