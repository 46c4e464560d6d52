//! `cleanup()`'s purge in committed batches.
//!
//! A function cannot commit, and `cleanup()` is what applications call, often as a plain
//! `SELECT` or inside their own transaction: purged there, every batch's row locks would last
//! until the caller commits, and the application would queue behind them. So the caller starts
//! a dynamic background worker in its database, hands it the tables (already checked: the
//! caller's own), its identity and settings in a small shared-memory segment, and waits. The
//! worker runs the same pass as `purge()`, one committed transaction per batch, and writes each
//! table's outcome back into the segment. A cancelled caller (or one whose session ends) stops
//! the worker before its next batch.

use crate::engine::Progress;
use crate::error::{GcError, GcResult};
use crate::history::{RunStatus, Trigger};
use crate::pass::{self, PassOptions, TableOutcome};
use crate::policy::RULE_KINDS;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::Cell;
use std::time::{Duration, Instant};

pub const CLEANUP_WORKER_NAME: &str = "session_gc cleanup";

/// Longest error text handed back per table (longer ones are cut at a character boundary).
const ERROR_BYTES: usize = 480;

/// The caller's settings the worker purges with, as the caller's own purge would.
const CARRIED_SETTINGS: [&str; 8] = [
    "session_gc.batch_size",
    "session_gc.max_replica_lag",
    "session_gc.max_duty_cycle",
    "session_gc.lock_timeout",
    "session_gc.notify",
    "session_gc.wal_compression",
    "session_gc.history_retention",
    "lock_timeout",
];
const SETTINGS_BYTES: usize = 1024;

/// What the caller hands the worker, followed by one `TableSlot` per table.
#[repr(C)]
struct Request {
    database: pg_sys::Oid,
    /// The role the caller logged in as (the worker connects as it) and the role it acts as.
    login_role: pg_sys::Oid,
    acting_role: pg_sys::Oid,
    caller_pid: i32,
    /// The call's batch size (0: none).
    batch_size: i32,
    /// Whether the caller named the table (1): purged even when its policy is disabled.
    named: u32,
    /// The caller's values of `CARRIED_SETTINGS`, as `name=value` lines.
    settings: [u8; SETTINGS_BYTES],
    /// How long the worker may keep starting batches (µs); negative: no limit.
    runtime_micros: i64,
    table_count: u32,
    /// Set by the worker once every slot holds its table's outcome.
    finished: u32,
    /// The worker's own failure, when it could not run the pass.
    error: [u8; ERROR_BYTES],
}

/// One table's outcome.
#[repr(C)]
struct TableSlot {
    relid: pg_sys::Oid,
    status: u32,
    deleted_by_rule: [i64; RULE_KINDS],
    partitions_dropped: i32,
    batches: i32,
    duration_micros: i64,
    /// The failure's SQLSTATE (packed as PostgreSQL does), message, detail and hint; 0: none.
    error_code: i32,
    error: [u8; ERROR_BYTES],
    error_detail: [u8; ERROR_BYTES],
    error_hint: [u8; ERROR_BYTES],
}

fn status_code(status: RunStatus) -> u32 {
    match status {
        RunStatus::Ok => 1,
        RunStatus::Partial => 2,
        RunStatus::Error => 3,
        RunStatus::Cancelled => 4,
    }
}

fn status_of(code: u32) -> Option<RunStatus> {
    match code {
        1 => Some(RunStatus::Ok),
        2 => Some(RunStatus::Partial),
        3 => Some(RunStatus::Error),
        4 => Some(RunStatus::Cancelled),
        _ => None,
    }
}

fn write_text(target: &mut [u8; ERROR_BYTES], text: &str) {
    let mut end = text.len().min(ERROR_BYTES - 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    target.fill(0);
    target[..end].copy_from_slice(&text.as_bytes()[..end]);
}

fn read_text(source: &[u8; ERROR_BYTES]) -> String {
    let end = source.iter().position(|b| *b == 0).unwrap_or(ERROR_BYTES);
    String::from_utf8_lossy(&source[..end]).into_owned()
}

/// The segment's layout: the request, then the slots.
struct Segment {
    base: *mut u8,
}

impl Segment {
    fn size(tables: usize) -> usize {
        std::mem::size_of::<Request>() + tables * std::mem::size_of::<TableSlot>()
    }

    fn request(&self) -> *mut Request {
        self.base.cast::<Request>()
    }

    /// Slot `index`; the caller knows `index < table_count`.
    fn slot(&self, index: usize) -> *mut TableSlot {
        unsafe {
            self.base
                .add(std::mem::size_of::<Request>() + index * std::mem::size_of::<TableSlot>())
                .cast::<TableSlot>()
        }
    }
}

/// Purges `tables` (the caller's, checked) in committed batches in a background worker and
/// waits for it. Raises 53400 when no worker slot is free.
pub fn purge(
    tables: &[pg_sys::Oid],
    batch_size: Option<i32>,
    deadline: Option<Instant>,
    named: bool,
) -> GcResult<Vec<TableOutcome>> {
    let size = Segment::size(tables.len());
    let (segment_ptr, handle) = unsafe {
        let segment = pg_sys::dsm_create(size, 0);
        let base = pg_sys::dsm_segment_address(segment).cast::<u8>();
        std::ptr::write_bytes(base, 0, size);
        (segment, pg_sys::dsm_segment_handle(segment))
    };
    let segment = Segment {
        base: unsafe { pg_sys::dsm_segment_address(segment_ptr).cast::<u8>() },
    };
    unsafe {
        let request = &mut *segment.request();
        request.database = pg_sys::MyDatabaseId;
        request.login_role = pg_sys::GetAuthenticatedUserId();
        request.acting_role = pg_sys::GetUserId();
        request.caller_pid = pg_sys::MyProcPid;
        request.batch_size = batch_size.unwrap_or(0);
        request.named = u32::from(named);
        let settings: String = CARRIED_SETTINGS
            .iter()
            .filter_map(|name| Some(format!("{name}={}\n", crate::sql::current_setting(name)?)))
            .collect();
        let length = settings.len().min(SETTINGS_BYTES);
        request.settings[..length].copy_from_slice(&settings.as_bytes()[..length]);
        request.runtime_micros = deadline
            .map(|at| {
                i64::try_from(at.saturating_duration_since(Instant::now()).as_micros())
                    .unwrap_or(i64::MAX)
            })
            .unwrap_or(-1);
        request.table_count = u32::try_from(tables.len()).unwrap_or(u32::MAX);
        for (index, relid) in tables.iter().enumerate() {
            (*segment.slot(index)).relid = *relid;
        }
    }
    let builder = BackgroundWorkerBuilder::new(CLEANUP_WORKER_NAME)
        .set_type(CLEANUP_WORKER_NAME)
        .set_library("session_gc")
        .set_function("session_gc_cleanup_main")
        .set_argument(Some(pg_sys::Datum::from(handle)))
        .enable_spi_access()
        .set_restart_time(None)
        .set_notify_pid(unsafe { pg_sys::MyProcPid });
    let mut worker = pg_sys::BackgroundWorker::from(&builder);
    let mut worker_handle: *mut pg_sys::BackgroundWorkerHandle = std::ptr::null_mut();
    let registered =
        unsafe { pg_sys::RegisterDynamicBackgroundWorker(&mut worker, &mut worker_handle) };
    if !registered {
        unsafe { pg_sys::dsm_detach(segment_ptr) };
        return Err(GcError::new(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            "session_gc: no background worker slot is free for cleanup()",
        )
        .detail("cleanup() purges in committed batches from a background worker, and every slot (max_worker_processes) is in use.")
        .hint("Try again later, raise max_worker_processes, or call cleanup(in_transaction => true) to purge inside your own transaction."));
    }
    // A cancel (or statement_timeout) of the caller raises while waiting: the worker is told
    // to stop before its next batch, and the error goes on to the caller.
    let stopped = Cell::new(false);
    PgTryBuilder::new(std::panic::AssertUnwindSafe(|| unsafe {
        pg_sys::WaitForBackgroundWorkerShutdown(worker_handle);
        stopped.set(true);
    }))
    .finally(|| {
        if !stopped.get() {
            unsafe { pg_sys::TerminateBackgroundWorker(worker_handle) };
        }
    })
    .execute();
    let outcome = read_outcomes(&segment, tables.len());
    unsafe { pg_sys::dsm_detach(segment_ptr) };
    outcome
}

fn read_error(slot: &TableSlot) -> GcError {
    let mut error = GcError::new(
        PgSqlErrorCode::from(slot.error_code),
        read_text(&slot.error),
    );
    let (detail, hint) = (read_text(&slot.error_detail), read_text(&slot.error_hint));
    if !detail.is_empty() {
        error = error.detail(detail);
    }
    if !hint.is_empty() {
        error = error.hint(hint);
    }
    error
}

fn read_outcomes(segment: &Segment, count: usize) -> GcResult<Vec<TableOutcome>> {
    let request = unsafe { &*segment.request() };
    if request.finished == 0 {
        let why = read_text(&request.error);
        return Err(GcError::new(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "session_gc: the cleanup worker stopped before it finished",
        )
        .detail(if why.is_empty() {
            "The worker ended without a result (see the server log); batches it committed stay purged and are in session_gc.history.".to_string()
        } else {
            why
        })
        .hint("Run cleanup() again."));
    }
    let mut outcomes = Vec::with_capacity(count);
    for index in 0..count {
        let slot = unsafe { &*segment.slot(index) };
        let Some(status) = status_of(slot.status) else {
            continue;
        };
        outcomes.push(TableOutcome {
            relid: slot.relid,
            table: String::new(),
            progress: Progress {
                deleted_by_rule: slot.deleted_by_rule,
                partitions_dropped: slot.partitions_dropped,
                batches: slot.batches,
                // Recorded in history by the worker; cleanup()'s rows do not show it.
                ..Progress::default()
            },
            status,
            error: (slot.error_code != 0).then(|| read_error(slot)),
            duration: Duration::from_micros(u64::try_from(slot.duration_micros).unwrap_or(0)),
        });
    }
    Ok(outcomes)
}

/// The cleanup worker's entry point.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn session_gc_cleanup_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let handle = arg.value() as pg_sys::dsm_handle;
    let segment_ptr = unsafe { pg_sys::dsm_attach(handle) };
    if segment_ptr.is_null() {
        // The caller is gone already.
        return;
    }
    unsafe { pg_sys::dsm_pin_mapping(segment_ptr) };
    let segment = Segment {
        base: unsafe { pg_sys::dsm_segment_address(segment_ptr).cast::<u8>() },
    };
    let (database, login_role, acting_role, caller_pid) = unsafe {
        let request = &*segment.request();
        (
            request.database,
            request.login_role,
            request.acting_role,
            request.caller_pid,
        )
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), Some(login_role));
    crate::worker::set_application_name(CLEANUP_WORKER_NAME);
    let outcome = run_requested_pass(&segment, acting_role, caller_pid);
    unsafe {
        let request = &mut *segment.request();
        match outcome {
            Ok(()) => request.finished = 1,
            Err(error) => write_text(&mut request.error, &error.to_string()),
        }
        pg_sys::dsm_detach(segment_ptr);
    }
}

fn run_requested_pass(
    segment: &Segment,
    acting_role: pg_sys::Oid,
    caller_pid: i32,
) -> GcResult<()> {
    let (tables, options, settings) = unsafe {
        let request = &*segment.request();
        let count = request.table_count as usize;
        let tables: Vec<pg_sys::Oid> = (0..count).map(|i| (*segment.slot(i)).relid).collect();
        let options = PassOptions {
            trigger: Trigger::Manual,
            tables: Some(tables.clone()),
            batch_size: (request.batch_size > 0).then_some(request.batch_size),
            deadline: (request.runtime_micros >= 0).then(|| {
                Instant::now() + Duration::from_micros(request.runtime_micros.unsigned_abs())
            }),
            named: request.named == 1,
        };
        let end = request
            .settings
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(SETTINGS_BYTES);
        let settings: Vec<(String, String)> = String::from_utf8_lossy(&request.settings[..end])
            .lines()
            .filter_map(|line| line.split_once('='))
            .filter(|(name, _)| CARRIED_SETTINGS.contains(name))
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        (tables, options, settings)
    };
    let mut tx = crate::worker::WorkerTransactions {
        caller_pid: Some(caller_pid),
        stopping: false,
    };
    // The caller's settings, for the whole session; then its identity, as a SECURITY DEFINER
    // function would switch (the worker connected as the role the caller logged in as).
    pass::Transactions::run(&mut tx, || {
        for (name, value) in &settings {
            crate::txn::set_guc(name, value, pg_sys::GucAction::GUC_ACTION_SET);
        }
        Ok(())
    })?;
    unsafe {
        pg_sys::SetUserIdAndSecContext(acting_role, pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32)
    };
    let summary = pass::run(&mut tx, &options)?;
    for (index, relid) in tables.iter().enumerate() {
        let Some(outcome) = summary.tables.iter().find(|t| t.relid == *relid) else {
            continue;
        };
        unsafe {
            let slot = &mut *segment.slot(index);
            slot.status = status_code(outcome.status);
            slot.deleted_by_rule = outcome.progress.deleted_by_rule;
            slot.partitions_dropped = outcome.progress.partitions_dropped;
            slot.batches = outcome.progress.batches;
            slot.duration_micros = i64::try_from(outcome.duration.as_micros()).unwrap_or(0);
            if let Some(error) = &outcome.error {
                slot.error_code = error.code as i32;
                write_text(&mut slot.error, &error.message);
                write_text(
                    &mut slot.error_detail,
                    error.detail.as_deref().unwrap_or(""),
                );
                write_text(&mut slot.error_hint, error.hint.as_deref().unwrap_or(""));
            }
        }
    }
    Ok(())
}
