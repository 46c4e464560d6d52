//! Run history: one row per run and table in `session_gc.history`, running totals in
//! `session_gc.totals`, and the trim that keeps history inside its retention.

use crate::engine::Progress;
use crate::error::{GcError, GcResult};
use crate::gucs;
use crate::identity;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Who started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Manual,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
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
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Error => "error",
        }
    }

    pub fn of(progress: &Progress) -> Self {
        if progress.finished {
            RunStatus::Ok
        } else {
            RunStatus::Partial
        }
    }
}

/// Opens a history row (status `running`) and returns its id.
pub fn start(relid: pg_sys::Oid, table_name: &str, trigger: Trigger) -> GcResult<i64> {
    identity::as_extension_owner(|| {
        let id = Spi::get_one_with_args::<i64>(
            "INSERT INTO session_gc.history (relid, table_name, trigger)
             VALUES ($1, $2, $3) RETURNING id",
            &[relid.into(), table_name.into(), trigger.as_str().into()],
        )?;
        id.ok_or_else(|| GcError::invalid_parameter("history row was not created"))
    })
}

/// Closes a history row and adds the run to the table's totals.
pub fn finish(
    id: i64,
    relid: pg_sys::Oid,
    progress: &Progress,
    status: RunStatus,
    error: Option<&str>,
) -> GcResult<()> {
    let [expired, idle, aged, inactive] = progress.deleted_by_rule;
    identity::as_extension_owner(|| {
        Spi::run_with_args(
            "UPDATE session_gc.history
                SET finished_at = clock_timestamp(), status = $2, deleted = $3, expired = $4,
                    idle = $5, aged = $6, inactive = $7, batches = $8, error = $9
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
            ],
        )?;
        // The policy may be gone (unregistered, table dropped): then there is nothing to total.
        Spi::run_with_args(
            "INSERT INTO session_gc.totals AS t (table_name, runs, deleted_total, last_run, last_deleted, last_status)
             SELECT p.table_name, 1, $2, now(), $2, $3 FROM session_gc.policies p
              WHERE p.table_name = $1::oid::regclass
             ON CONFLICT (table_name) DO UPDATE
                SET runs = t.runs + 1, deleted_total = t.deleted_total + $2,
                    last_run = now(), last_deleted = $2, last_status = $3",
            &[relid.into(), progress.deleted().into(), status.as_str().into()],
        )?;
        Ok(())
    })
}

/// Deletes history older than `session_gc.history_retention`.
pub fn trim() -> GcResult<i64> {
    identity::as_extension_owner(|| {
        let trimmed = Spi::get_one_with_args::<i64>(
            "WITH gone AS (
                 DELETE FROM session_gc.history
                  WHERE started_at < now() - make_interval(secs => $1) RETURNING 1)
             SELECT count(*)::int8 FROM gone",
            &[gucs::history_retention_s().into()],
        )?;
        Ok(trimmed.unwrap_or(0))
    })
}
