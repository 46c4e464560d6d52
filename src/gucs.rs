//! Every `session_gc.*` setting: private statics, one typed getter each, one `init()`.
//! Contexts are chosen on purpose; the README's settings table mirrors them.

use pgrx::{pg_guard, pg_sys, GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use std::ffi::CString;
use std::time::Duration;

/// Rows per batch when neither the call nor the policy says. An application touching a row of
/// the batch being deleted waits for that batch's commit, so a batch is kept to a few
/// milliseconds (about 2.5 ms with the benchmark's cascading foreign key); purging 500,000 rows
/// took the same time in batches of 250, 1,000 and 5,000 rows.
static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(500);

/// How long a batch may wait for a lock before giving up (ms). Short, so that the
/// application never queues behind a purge for long; the rows are retried next pass.
static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(1_000);

/// How long run history is kept (s). 14 days answers "what happened last week" and keeps the
/// table small; pg_cron's never-trimmed job_run_details is what we avoid.
static HISTORY_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(14 * 24 * 3600);

/// Whether the background worker purges at all. On by default: preloading the library is
/// the opt-in.
static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Seconds between the starts of two passes in a database. A minute keeps the backlog small
/// (like MongoDB's TTL monitor) while an idle database costs one short process start.
static INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(60);

/// Pause after each batch (ms), to leave I/O and WAL bandwidth to the application. None by
/// default: batches are short transactions already, and a backlog should clear at the speed of
/// a single DELETE; raise it on I/O-bound servers.
static BATCH_DELAY_MS: GucSetting<i32> = GucSetting::<i32>::new(0);
static MAX_REPLICA_LAG_KB: GucSetting<i32> = GucSetting::<i32>::new(0);

/// Percent of wall time a purge may spend in its batches (per worker or call). 100 by default:
/// a backlog clears at full speed in batches of a few milliseconds; lower it where the
/// application's latency matters more than how soon the backlog is gone.
static MAX_DUTY_CYCLE: GucSetting<i32> = GucSetting::<i32>::new(100);

/// Rows per second all purges of the server may delete together (0: no limit). One budget for
/// every database, which a per-table or per-database rate cannot give a server of many tenants.
static MAX_ROWS_PER_SECOND: GucSetting<i32> = GucSetting::<i32>::new(0);

/// Longest pass (s): a huge backlog is worked off over several passes instead of one endless one.
static MAX_RUNTIME_S: GucSetting<i32> = GucSetting::<i32>::new(300);

/// Statement timeout of one worker batch (ms). A batch of a few thousand rows takes well under a
/// second; anything far longer means a plan or lock problem, better abandoned and retried.
static BATCH_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);

/// Databases the worker may visit (comma-separated); empty means every connectable database.
static DATABASES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// The times of day the worker may purge ('02:00-05:00,22:00-23:00'); empty means always.
static WINDOW: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// The role workers connect as; empty means the bootstrap superuser. Purges still run as each
/// table's owner.
static ROLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Log a line for every worker run that deleted rows or failed.
static LOG_RUNS: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Send `NOTIFY session_gc` with a JSON payload after each run that deleted something. Off by
/// default: a notification costs a little and only matters to applications that listen.
static NOTIFY: GucSetting<bool> = GucSetting::<bool>::new(false);

/// How purge batches compress the full-page images they write to WAL when the server's own
/// `wal_compression` is off. A purge dirties every page holding an expired row, and the first
/// change to a page after a checkpoint logs the whole page: about 90% of a purge's WAL. lz4
/// cut the benchmark's purge WAL 3.4–3.6x in the same time (pglz and zstd took 2.1x and 1.7x as
/// long); every application commit flushes that WAL too, and standbys and archives receive it.
static WAL_COMPRESSION: GucSetting<WalCompression> =
    GucSetting::<WalCompression>::new(WalCompression::Auto);

/// The values of `session_gc.wal_compression`: `auto` (lz4 where this server has it, else
/// none), `off`, or a method of `wal_compression`.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum WalCompression {
    #[name = c"auto"]
    Auto,
    #[name = c"off"]
    Off,
    #[name = c"pglz"]
    Pglz,
    #[name = c"lz4"]
    Lz4,
    #[name = c"zstd"]
    Zstd,
}

pub const MAX_BATCH_SIZE: i32 = 1_000_000;

pub fn enabled() -> bool {
    ENABLED.get()
}

pub fn interval() -> Duration {
    Duration::from_secs(INTERVAL_S.get().max(1) as u64)
}

pub fn batch_delay() -> Duration {
    Duration::from_millis(BATCH_DELAY_MS.get().max(0) as u64)
}

/// How much WAL a standby may have left to replay before purges wait; None: no limit.
pub fn max_replica_lag_bytes() -> Option<i64> {
    let kb = MAX_REPLICA_LAG_KB.get();
    (kb > 0).then(|| i64::from(kb) * 1024)
}

/// Percent of wall time a purge may spend in batches, 1 to 100.
pub fn max_duty_cycle() -> i32 {
    MAX_DUTY_CYCLE.get().clamp(1, 100)
}

/// The server's purge budget in rows per second; None: no limit.
pub fn max_rows_per_second() -> Option<i32> {
    let rate = MAX_ROWS_PER_SECOND.get();
    (rate > 0).then_some(rate)
}

pub fn max_runtime() -> Duration {
    Duration::from_secs(MAX_RUNTIME_S.get().max(1) as u64)
}

pub fn batch_timeout_ms() -> i32 {
    BATCH_TIMEOUT_MS.get()
}

fn list(setting: &GucSetting<Option<CString>>) -> Vec<String> {
    setting
        .get()
        .map(|text| text.to_string_lossy().into_owned())
        .unwrap_or_default()
        .split(',')
        .map(|part| part.trim().to_string())
        .filter(|part| !part.is_empty())
        .collect()
}

/// The databases the worker is limited to; empty: no limit.
pub fn databases() -> Vec<String> {
    list(&DATABASES)
}

/// The worker's purge windows; empty: always open (the check hook refuses a bad value).
pub fn window() -> Vec<crate::window::Range> {
    WINDOW
        .get()
        .and_then(|text| crate::window::parse(&text.to_string_lossy()).ok())
        .unwrap_or_default()
}

/// Refuses a `session_gc.purge_window` that does not parse, saying why (the old value stays).
#[pg_guard]
unsafe extern "C-unwind" fn check_window(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL hands the proposed value, a C string or NULL.
    let text = unsafe {
        if newval.is_null() || (*newval).is_null() {
            return true;
        }
        std::ffi::CStr::from_ptr(*newval)
            .to_string_lossy()
            .into_owned()
    };
    match crate::window::parse(&text) {
        Ok(_) => true,
        Err(reason) => {
            let detail = CString::new(reason).unwrap_or_default();
            // SAFETY: GUC_check_errdetail: a palloc'd string PostgreSQL reports with the error.
            unsafe { pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr()) };
            false
        }
    }
}

pub fn role() -> Option<String> {
    list(&ROLE).into_iter().next()
}

pub fn log_runs() -> bool {
    LOG_RUNS.get()
}

pub fn notify() -> bool {
    NOTIFY.get()
}

pub fn batch_size() -> i32 {
    BATCH_SIZE.get()
}

pub fn lock_timeout_ms() -> i32 {
    LOCK_TIMEOUT_MS.get()
}

/// The `wal_compression` method purge batches use (None for off), and whether it was chosen
/// explicitly (`auto` quietly goes without where the server lacks lz4).
pub fn wal_compression() -> Option<(&'static str, bool)> {
    match WAL_COMPRESSION.get() {
        WalCompression::Auto => Some(("lz4", false)),
        WalCompression::Off => None,
        WalCompression::Pglz => Some(("pglz", true)),
        WalCompression::Lz4 => Some(("lz4", true)),
        WalCompression::Zstd => Some(("zstd", true)),
    }
}

pub fn history_retention_s() -> i32 {
    HISTORY_RETENTION_S.get()
}

pub fn init() {
    GucRegistry::define_int_guc(
        c"session_gc.batch_size",
        c"Rows deleted per batch when the call and the policy give no batch size.",
        c"Each batch is one statement; in the worker and purge() each batch is also its own transaction.",
        &BATCH_SIZE,
        1,
        MAX_BATCH_SIZE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"session_gc.lock_timeout",
        c"Longest wait for a lock in one purge batch.",
        c"A batch that cannot get its lock in time gives up; the rows are retried on the next run.",
        &LOCK_TIMEOUT_MS,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"session_gc.history_retention",
        c"How long rows of session_gc.history are kept.",
        c"Older rows are deleted after each run.",
        &HISTORY_RETENTION_S,
        60,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"session_gc.enabled",
        c"Whether the background worker purges registered tables.",
        c"Off: the launcher starts no new passes; cleanup() and purge() still work.",
        &ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"session_gc.interval",
        c"Time between the starts of two worker passes in a database.",
        c"Takes effect on reload.",
        &INTERVAL_S,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"session_gc.max_replica_lag",
        c"WAL a standby may have left to replay before purges wait for it; 0: no limit.",
        c"The worker, purge() and cleanup() wait between batches while a connected physical standby has more than this to replay, up to the run's max_runtime.",
        &MAX_REPLICA_LAG_KB,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"session_gc.max_duty_cycle",
        c"Percent of wall time a purge may spend in its batches; 100: no rest.",
        c"After a batch of t ms the worker, purge() and cleanup() rest t x (100 - d) / d ms before their next batch, holding no transaction.",
        &MAX_DUTY_CYCLE,
        1,
        100,
        // A database owner must not lift the DBA's budget for the worker in its database
        // (ALTER DATABASE ... SET applies to the worker's connection).
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"session_gc.max_rows_per_second",
        c"Rows per second every purge of the server may delete together; 0: no limit.",
        c"One budget in shared memory for the workers of all databases, purge() and cleanup() (preloaded library only); a batch waits, holding no transaction, while it is spent.",
        &MAX_ROWS_PER_SECOND,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"session_gc.batch_delay",
        c"Pause after each batch of the worker and of purge().",
        c"Throttles the purge's I/O and WAL in favour of the application.",
        &BATCH_DELAY_MS,
        0,
        60_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"session_gc.max_runtime",
        c"Longest worker pass; what is left waits for the next pass.",
        c"Tables are visited round-robin, so every table gets its share before the pass ends.",
        &MAX_RUNTIME_S,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"session_gc.batch_timeout",
        c"Statement timeout of one worker batch.",
        c"A batch that runs longer is cancelled and its table retried on the next pass.",
        &BATCH_TIMEOUT_MS,
        1,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_string_guc(
        c"session_gc.databases",
        c"Databases the worker visits (comma-separated); empty: all.",
        c"Only databases where the extension is installed are purged either way.",
        &DATABASES,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: the check hook is guarded.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"session_gc.purge_window",
            c"Times of day the worker may purge, such as '02:00-05:00'; empty: always.",
            c"Several ranges separated by commas; a range may pass midnight ('22:00-02:00'). Read in the server's log_timezone, which no database or role can set. cleanup() and purge() are never held back.",
            &WINDOW,
            GucContext::Sighup,
            GucFlags::default(),
            Some(check_window),
            None,
            None,
        );
    }
    GucRegistry::define_string_guc(
        c"session_gc.role",
        c"Role the workers connect as; empty: the bootstrap superuser.",
        c"Purges always run as each table's owner.",
        &ROLE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"session_gc.log_runs",
        c"Log every worker run that deleted rows or failed.",
        c"Failures are logged as WARNING whatever this says.",
        &LOG_RUNS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"session_gc.notify",
        c"Send NOTIFY session_gc after each run that deleted rows or dropped partitions.",
        c"The payload is JSON: database, table, run_id, deleted, partitions_dropped, status, trigger.",
        &NOTIFY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"session_gc.wal_compression",
        c"How purge batches compress full-page images in WAL when wal_compression is off.",
        c"auto: lz4 where the server was built with it, else none. Applies to purge batches only; standbys must support the method too.",
        &WAL_COMPRESSION,
        GucContext::Suset,
        GucFlags::default(),
    );
    unsafe { pg_sys::MarkGUCPrefixReserved(c"session_gc".as_ptr()) };
}
