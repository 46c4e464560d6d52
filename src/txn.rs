//! Transaction plumbing: running a unit of work in a subtransaction so that its failure is
//! rolled back and reported without aborting the caller's transaction.

use crate::error::{GcError, GcResult};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::panic::AssertUnwindSafe;

/// Turns an error PostgreSQL (or pgrx) raised into our error type.
pub fn from_caught(caught: CaughtError) -> GcError {
    match caught {
        CaughtError::PostgresError(report)
        | CaughtError::ErrorReport(report)
        | CaughtError::RustPanic {
            ereport: report, ..
        } => {
            let mut error = GcError::new(report.sql_error_code(), report.message());
            if let Some(detail) = report.detail() {
                error = error.detail(detail);
            }
            if let Some(hint) = report.hint() {
                error = error.hint(hint);
            }
            error
        }
    }
}

/// Whether an error means "stop everything" (cancel, shutdown) rather than "this table failed".
pub fn is_cancel(error: &GcError) -> bool {
    matches!(
        error.code,
        PgSqlErrorCode::ERRCODE_QUERY_CANCELED
            | PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN
            | PgSqlErrorCode::ERRCODE_CRASH_SHUTDOWN
    )
}

/// Runs `work` in an internal subtransaction: on success its effects stay in the current
/// transaction; on any error (returned or raised) they are rolled back and the error returned,
/// except a cancel (`statement_timeout`, `pg_cancel_backend`, shutdown), which is raised again:
/// nothing that catches a table's failure may swallow the caller's request to stop.
pub fn in_subtransaction<R>(work: impl FnOnce() -> GcResult<R>) -> GcResult<R> {
    let (old_context, old_owner) =
        unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(old_context);
    }
    let outcome = PgTryBuilder::new(AssertUnwindSafe(work))
        .catch_others(|caught| Err(from_caught(caught)))
        .execute();
    unsafe {
        pg_sys::MemoryContextSwitchTo(old_context);
        if outcome.is_ok() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(old_context);
        pg_sys::CurrentResourceOwner = old_owner;
    }
    match outcome {
        Err(error) if is_cancel(&error) => error.raise(),
        outcome => outcome,
    }
}

/// Runs `work` as one top-level transaction of a background worker: committed on success,
/// aborted on any error, which is returned instead of ending the worker.
pub fn in_worker_transaction<R>(work: impl FnOnce() -> GcResult<R>) -> GcResult<R> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let outcome = PgTryBuilder::new(AssertUnwindSafe(work))
        .catch_others(|caught| Err(from_caught(caught)))
        .execute();
    unsafe {
        if outcome.is_ok() {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
    }
    outcome
}

// timeout.h is not in pgrx's bindings. STATEMENT_TIMEOUT is the fourth TimeoutId in every
// supported major (15 to 18).
const STATEMENT_TIMEOUT: u32 = 3;

unsafe extern "C-unwind" {
    fn enable_timeout_after(id: u32, delay_ms: i32);
    fn disable_timeout(id: u32, keep_indicator: bool);
    fn get_timeout_indicator(id: u32, reset_indicator: bool) -> bool;
}

/// Disarms the statement timer however the batch ends. A timer that fired after the batch's
/// last check for interrupts leaves a cancel pending; it is withdrawn here, or it would cancel
/// whatever the worker does next (its bookkeeping, the next batch).
struct StatementTimer;

impl Drop for StatementTimer {
    fn drop(&mut self) {
        unsafe {
            pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| {
                disable_timeout(STATEMENT_TIMEOUT, false);
                if get_timeout_indicator(STATEMENT_TIMEOUT, true) {
                    pg_sys::QueryCancelPending = 0;
                }
            })
        };
    }
}

/// Runs `work` under a statement timeout. Background workers get no timer from the
/// client protocol loop, so it is armed here.
pub fn with_statement_timeout<R>(timeout_ms: i32, work: impl FnOnce() -> R) -> R {
    unsafe {
        pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| {
            enable_timeout_after(STATEMENT_TIMEOUT, timeout_ms)
        })
    };
    let _timer = StatementTimer;
    work()
}

/// Lets the current transaction commit without waiting for its WAL to reach disk
/// (`SET LOCAL synchronous_commit = off`). For purge batches only: a batch lost in a crash is
/// just purged again by the next run, and not flushing WAL at every one of many small commits
/// is what lets committed batches keep up with a single DELETE.
pub fn commit_without_waiting_for_flush() {
    set_guc(
        "synchronous_commit",
        "off",
        pg_sys::GucAction::GUC_ACTION_LOCAL,
    );
}

/// Compresses the full-page images the current (sub)transaction writes to WAL with
/// `session_gc.wal_compression`, unless the server compresses them already (the DBA's method
/// stands). Undone when the (sub)transaction ends, so nothing else the session writes is affected.
pub fn compress_wal_of_batch() {
    let Some((method, explicit)) = crate::gucs::wal_compression() else {
        return;
    };
    let server_compresses = unsafe {
        let value = pg_sys::GetConfigOption(c"wal_compression".as_ptr(), true, false);
        value.is_null() || std::ffi::CStr::from_ptr(value) != c"off"
    };
    if server_compresses || REFUSED_METHOD.get() == Some(method) {
        return;
    }
    if try_set_guc(
        "wal_compression",
        method,
        pg_sys::GucAction::GUC_ACTION_SAVE,
    ) {
        return;
    }
    // Not built into this server: remembered, so later batches do not ask again.
    REFUSED_METHOD.set(Some(method));
    if explicit {
        GcError::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("session_gc.wal_compression = {method} is not supported by this server"),
        )
        .detail("Purge batches write their full-page images to WAL uncompressed.")
        .hint("Choose a method this server was built with (pglz always is), auto or off.")
        .warn();
    }
}

thread_local! {
    /// The `session_gc.wal_compression` method this server refused (reported once).
    static REFUSED_METHOD: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Sets a GUC for the current nest level (`GUC_ACTION_SAVE`, undone by `AtEOXact_GUC`) or
/// for the rest of the transaction (`GUC_ACTION_LOCAL`).
pub fn set_guc(name: &str, value: &str, action: pg_sys::GucAction::Type) {
    set_config(name, value, action, pgrx::PgLogLevel::ERROR);
}

/// Like `set_guc`, but a value the server refuses is reported back (false) rather than raised.
pub fn try_set_guc(name: &str, value: &str, action: pg_sys::GucAction::Type) -> bool {
    set_config(name, value, action, pgrx::PgLogLevel::DEBUG1)
}

fn set_config(
    name: &str,
    value: &str,
    action: pg_sys::GucAction::Type,
    refusal_level: pgrx::PgLogLevel,
) -> bool {
    let (Ok(name), Ok(value)) = (std::ffi::CString::new(name), std::ffi::CString::new(value))
    else {
        return false;
    };
    let applied = unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            action,
            true,
            refusal_level as i32,
            false,
        )
    };
    applied > 0
}
