//! The background workers.
//!
//! A static launcher, registered when the library is preloaded, wakes every
//! `session_gc.interval` and starts one short-lived worker per connectable database (at most
//! one at a time per database). A worker connects, returns at once where the extension is not
//! installed, otherwise runs one pass over the database's enabled policies with every batch in
//! its own committed transaction, and exits. Short-lived workers pick up `CREATE EXTENSION`,
//! `DROP EXTENSION` and configuration changes by themselves and never keep a database busy
//! between passes (so `DROP DATABASE` is not blocked by an idle worker).
//! Neither runs on a standby: both start when recovery has finished, i.e. after promotion.

use crate::error::{GcError, GcResult};
use crate::gucs;
use crate::history::Trigger;
use crate::pass::{self, PassOptions, Transactions};
use crate::txn;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::HashMap;
use std::ffi::CString;
use std::time::{Duration, Instant};

pub const LAUNCHER_NAME: &str = "session_gc launcher";
pub const WORKER_NAME: &str = "session_gc worker";

/// Registers the launcher; called from `_PG_init` during preload only.
pub fn register_launcher() {
    BackgroundWorkerBuilder::new(LAUNCHER_NAME)
        .set_type(LAUNCHER_NAME)
        .set_library("session_gc")
        .set_function("session_gc_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

fn shutdown_requested() -> bool {
    unsafe { pg_sys::ShutdownRequestPending != 0 }
}

fn reload_config_if_asked() {
    unsafe {
        if pg_sys::ConfigReloadPending != 0 {
            pg_sys::ConfigReloadPending = 0;
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
        }
    }
}

/// Sets the `application_name` setting, not only what pg_stat_activity shows: triggers fired
/// by the purge's deletes (an audit trigger) read it to tell session_gc from the application.
pub fn set_application_name(name: &str) {
    let (Ok(setting), Ok(value)) = (CString::new("application_name"), CString::new(name)) else {
        return;
    };
    // Its assign hook reports the name to pg_stat_activity as well.
    unsafe {
        pg_sys::SetConfigOption(
            setting.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        )
    };
}

fn report_activity(activity: &str) {
    if let Ok(text) = CString::new(activity) {
        unsafe {
            pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr())
        };
    }
}

fn report_idle() {
    unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null()) };
}

fn log(message: &str) {
    pgrx::log!("{message}");
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn session_gc_launcher_main(_arg: pg_sys::Datum) {
    // Handlers first, then configuration: a SIGHUP that arrives in between is not lost.
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // No database: the launcher reads only the shared catalog pg_database.
    BackgroundWorker::connect_worker_to_spi(None, None);
    set_application_name(LAUNCHER_NAME);
    log("session_gc launcher started");

    let mut workers: HashMap<pg_sys::Oid, StartedWorker> = HashMap::new();
    let mut last_round: Option<Instant> = None;
    let mut refused_last_round = false;
    while !shutdown_requested() {
        reload_config_if_asked();
        let due = last_round.is_none_or(|at| at.elapsed() >= gucs::interval());
        if due && gucs::enabled() {
            last_round = Some(Instant::now());
            workers.retain(|_, started| {
                started.worker.pid().is_ok() || still_starting(&started.worker)
            });
            match databases() {
                Ok(databases) => {
                    let refused = start_workers(&databases, &mut workers);
                    if refused && !refused_last_round {
                        GcError::new(
                            pgrx::PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                            "session_gc: could not start a worker for every database",
                        )
                        .detail("All background worker slots (max_worker_processes) are in use.")
                        .hint("Raise max_worker_processes, or limit session_gc.databases; the launcher retries every interval.")
                        .warn();
                    }
                    refused_last_round = refused;
                }
                Err(error) => GcError::new(
                    error.code,
                    format!("session_gc launcher: {}", error.message),
                )
                .warn(),
            }
        } else if !gucs::enabled() {
            last_round = None;
        }
        let wait = match last_round {
            Some(at) => gucs::interval().saturating_sub(at.elapsed()),
            None => gucs::interval(),
        };
        BackgroundWorker::wait_latch(Some(wait.max(Duration::from_millis(10))));
    }
    log("session_gc launcher stopped");
}

fn still_starting(worker: &DynamicBackgroundWorker) -> bool {
    matches!(
        worker.pid(),
        Err(pgrx::bgworkers::BackgroundWorkerStatus::NotYetStarted)
    )
}

/// A worker the launcher started. PostgreSQL allocates a worker's handle in the memory context
/// current when it is registered, and pgrx never frees it; the launcher lives as long as the
/// server, so each worker is registered in a small context of its own, deleted with it.
struct StartedWorker {
    worker: DynamicBackgroundWorker,
    memory: pg_sys::MemoryContext,
}

impl StartedWorker {
    fn start(builder: BackgroundWorkerBuilder) -> Option<Self> {
        unsafe {
            let memory = pg_sys::AllocSetContextCreateExtended(
                pg_sys::TopMemoryContext,
                c"session_gc worker handle".as_ptr(),
                0,
                1024,
                8192,
            );
            let previous = pg_sys::MemoryContextSwitchTo(memory);
            let started = builder.load_dynamic();
            pg_sys::MemoryContextSwitchTo(previous);
            match started {
                Ok(worker) => Some(StartedWorker { worker, memory }),
                Err(_) => {
                    pg_sys::MemoryContextDelete(memory);
                    None
                }
            }
        }
    }
}

impl Drop for StartedWorker {
    fn drop(&mut self) {
        // The handle is not used after this: `worker` has no drop of its own.
        unsafe { pg_sys::MemoryContextDelete(self.memory) };
    }
}

/// Starts a worker for each database that has none running. True if any start was refused.
fn start_workers(
    databases: &[(pg_sys::Oid, String)],
    workers: &mut HashMap<pg_sys::Oid, StartedWorker>,
) -> bool {
    let mut refused = false;
    for (oid, name) in databases {
        if workers.contains_key(oid) {
            continue;
        }
        let builder = BackgroundWorkerBuilder::new(&format!("{WORKER_NAME} {name}"))
            .set_type(WORKER_NAME)
            .set_library("session_gc")
            .set_function("session_gc_worker_main")
            .set_argument(oid.into_datum())
            .set_extra(name)
            .enable_spi_access()
            .set_restart_time(None)
            .set_notify_pid(unsafe { pg_sys::MyProcPid });
        match StartedWorker::start(builder) {
            Some(started) => {
                workers.insert(*oid, started);
            }
            None => refused = true,
        }
    }
    refused
}

/// Connectable databases allowed by `session_gc.databases`, read from the shared catalog.
fn databases() -> GcResult<Vec<(pg_sys::Oid, String)>> {
    let allowed = gucs::databases();
    let all = txn::in_worker_transaction(|| Ok(unsafe { scan_pg_database() }))?;
    Ok(all
        .into_iter()
        .filter(|(_, name)| allowed.is_empty() || allowed.iter().any(|a| a == name))
        .collect())
}

unsafe fn scan_pg_database() -> Vec<(pg_sys::Oid, String)> {
    let mut found = Vec::new();
    unsafe {
        let relation =
            pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as i32);
        let scan = pg_sys::table_beginscan_catalog(relation, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            if (*form).datallowconn && !(*form).datistemplate {
                let name = std::ffi::CStr::from_ptr((*form).datname.data.as_ptr());
                found.push(((*form).oid, name.to_string_lossy().into_owned()));
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(relation, pg_sys::AccessShareLock as i32);
    }
    found
}

/// A worker's batches: one committed transaction each, under the batch statement timeout.
/// `caller_pid`: the backend waiting for this worker (`cleanup()`); the pass stops when it is gone.
pub struct WorkerTransactions {
    pub caller_pid: Option<i32>,
    /// The postmaster died (or SIGTERM came) during a sleep: the pass ends.
    pub stopping: bool,
}

impl Transactions for WorkerTransactions {
    fn run<R>(&mut self, work: impl FnOnce() -> GcResult<R>) -> GcResult<R> {
        txn::in_worker_transaction(work)
    }

    fn run_batch<R>(&mut self, work: impl FnOnce() -> GcResult<R>) -> GcResult<R> {
        txn::in_worker_transaction(|| txn::with_statement_timeout(gucs::batch_timeout_ms(), work))
    }

    fn stop_requested(&mut self) -> bool {
        self.stopping
            || shutdown_requested()
            || self
                .caller_pid
                .is_some_and(|pid| unsafe { pg_sys::BackendPidGetProc(pid).is_null() })
    }

    fn pause(&mut self) {
        reload_config_if_asked();
        let delay = gucs::batch_delay();
        if !delay.is_zero() && !shutdown_requested() {
            BackgroundWorker::wait_latch(Some(delay));
        }
        pgrx::check_for_interrupts!();
    }

    fn sleep(&mut self, duration: Duration) {
        reload_config_if_asked();
        if !shutdown_requested() && !BackgroundWorker::wait_latch(Some(duration)) {
            self.stopping = true;
        }
        pgrx::check_for_interrupts!();
    }

    fn report(&mut self, activity: &str) {
        report_activity(activity);
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn session_gc_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = BackgroundWorker::get_extra().to_string();
    let role = gucs::role();
    BackgroundWorker::connect_worker_to_spi(Some(&database), role.as_deref());
    set_application_name(WORKER_NAME);
    if !gucs::enabled() || unsafe { pg_sys::RecoveryInProgress() } {
        return;
    }
    let mut tx = WorkerTransactions {
        caller_pid: None,
        stopping: false,
    };
    match tx.run(crate::schema::installed_version) {
        Ok(Some(version)) if version == crate::schema::LIBRARY_VERSION => {}
        Ok(Some(version)) => {
            // The package was upgraded but this database was not: purging with this library's
            // SQL would fail on every table, so say once per interval what to do instead.
            let refusal = crate::schema::update_needed(&version);
            GcError::new(
                refusal.code,
                format!("session_gc worker in {database}: {}", refusal.message),
            )
            .hint(refusal.hint.unwrap_or_default())
            .warn();
            return;
        }
        Ok(None) => return,
        Err(error) => {
            GcError::new(
                error.code,
                format!("session_gc worker in {database}: {}", error.message),
            )
            .warn();
            return;
        }
    }
    if let Err(error) = tx.run(crate::history::fail_orphaned_runs) {
        GcError::new(
            error.code,
            format!("session_gc worker in {database}: {}", error.message),
        )
        .warn();
    }
    let started = Instant::now();
    let options = PassOptions {
        trigger: Trigger::Worker,
        tables: None,
        batch_size: None,
        deadline: Some(started + gucs::max_runtime()),
        named: false,
    };
    match pass::run(&mut tx, &options) {
        Ok(summary) => {
            if gucs::log_runs() {
                for table in summary.tables.iter().filter(|t| t.progress.deleted() > 0) {
                    log(&format!(
                        "session_gc: {} rows deleted from {} in {} batches ({})",
                        table.progress.deleted(),
                        table.table,
                        table.progress.batches,
                        table.status.as_str()
                    ));
                }
            }
            let recorded = tx.run(|| crate::history::record_pass(started.elapsed(), &summary));
            if let Err(error) = recorded {
                GcError::new(
                    error.code,
                    format!("session_gc worker in {database}: {}", error.message),
                )
                .warn();
            }
        }
        Err(error) => {
            GcError::new(
                error.code,
                format!("session_gc worker in {database}: {}", error.message),
            )
            .warn();
        }
    }
    report_idle();
}
