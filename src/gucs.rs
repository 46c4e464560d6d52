//! Every `session_gc.*` setting: private statics, one typed getter each, one `init()`.
//! Contexts are chosen on purpose; the README's settings table mirrors them.

use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting};

/// Rows per batch when neither the call nor the policy says. 5,000 keeps one batch's
/// transaction well under a quarter second on small machines while amortising per-batch cost.
static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(5_000);

/// How long a batch may wait for a lock before giving up (ms). Short, so that the
/// application never queues behind a purge for long; the rows are retried next pass.
static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(1_000);

/// How long run history is kept (s). 14 days answers "what happened last week" and keeps the
/// table small; pg_cron's never-trimmed job_run_details is what we avoid.
static HISTORY_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(14 * 24 * 3600);

pub const MAX_BATCH_SIZE: i32 = 1_000_000;

pub fn batch_size() -> i32 {
    BATCH_SIZE.get()
}

pub fn lock_timeout_ms() -> i32 {
    LOCK_TIMEOUT_MS.get()
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
    unsafe { pg_sys::MarkGUCPrefixReserved(c"session_gc".as_ptr()) };
}
