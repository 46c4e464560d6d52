//! One purge budget for the whole server: `session_gc.max_rows_per_second`, shared by every
//! worker of every database and by `purge()` and `cleanup()`, so that a server with many
//! tenant databases purges at the DBA's rate in total. A token bucket in shared memory, which
//! exists only when the library is preloaded (without it, nothing is limited).
//!
//! A batch takes its batch size from the bucket before it runs, and gives back what it did not
//! delete after (a Citus round that deleted more owes the rest; a cancelled or failed batch
//! gives back all). The bucket may go below zero by one batch: a batch waits only while it is
//! below zero, looking again at least every 100 ms, so the rows deleted never run ahead of the
//! rate by more than the bucket's small burst and one batch per purging process.

use crate::gucs;
use pgrx::{pg_guard, pg_shmem_init, pg_sys, PGRXSharedMemory, PgLwLock};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Copy, Clone, Default)]
pub struct Bucket {
    /// Rows that may be deleted now; below zero, what batches already run owe.
    tokens: f64,
    /// When the bucket was last filled (µs, PostgreSQL's clock); 0: never.
    filled_at_us: i64,
}

// SAFETY: plain numbers, no pointers: the same in every process.
unsafe impl PGRXSharedMemory for Bucket {}

// SAFETY: the only shared-memory structure of this name.
static BUCKET: PgLwLock<Bucket> = unsafe { PgLwLock::new(c"session_gc_budget") };

/// Set in the postmaster's `_PG_init` while preloading; every process it forks inherits it.
static IN_SHARED_MEMORY: AtomicBool = AtomicBool::new(false);

/// How much the bucket holds at most: a tenth of a second's rows. Small, so that a burst
/// after an idle spell stays small too.
fn burst(rate: f64) -> f64 {
    rate / 10.0
}

/// Asks for the bucket's shared memory; from `_PG_init` while preloading.
// pgrx's macro names majors this crate has no features for (13, 14).
#[allow(unexpected_cfgs)]
pub fn init_in_shared_memory() {
    pg_shmem_init!(BUCKET);
    IN_SHARED_MEMORY.store(true, Ordering::Relaxed);
}

/// The rows per second allowed now; None: no budget (not set, or not preloaded).
fn rate() -> Option<f64> {
    let rate = gucs::max_rows_per_second()?;
    IN_SHARED_MEMORY
        .load(Ordering::Relaxed)
        .then_some(f64::from(rate))
}

fn fill(bucket: &mut Bucket, rate: f64) {
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let elapsed_s = if bucket.filled_at_us == 0 {
        f64::INFINITY
    } else {
        (now - bucket.filled_at_us).max(0) as f64 / 1e6
    };
    bucket.tokens = (bucket.tokens + elapsed_s * rate).min(burst(rate));
    bucket.filled_at_us = now;
}

/// Rows a batch took from the budget before it ran. Settled with what it deleted; dropped
/// unsettled (the batch failed or was cancelled, its deletes rolled back) it gives them all back.
pub struct Reservation {
    taken: i64,
}

impl Reservation {
    /// Nothing taken: a batch that may not wait (inside the caller's transaction) is charged
    /// what it deleted afterwards.
    pub fn none() -> Self {
        Reservation { taken: 0 }
    }

    pub fn settle(mut self, deleted: i64) {
        settle(self.taken, deleted);
        self.taken = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.taken > 0 {
            settle(self.taken, 0);
        }
    }
}

/// What the budget says to a batch about to run.
pub enum Turn {
    /// Run, with the rows taken.
    Go(Reservation),
    /// The budget is spent: wait this long (at most a tenth of a second, so that rows given
    /// back meanwhile are seen), then ask again. Nothing was taken.
    Wait(Duration),
}

/// The longest single wait: rows other batches give back are seen within it.
const LONGEST_WAIT: Duration = Duration::from_millis(100);

/// Takes `rows` for a batch about to run, or says how long to wait for them.
pub fn take(rows: i64) -> Turn {
    let Some(rate) = rate() else {
        return Turn::Go(Reservation::none());
    };
    let mut bucket = BUCKET.exclusive();
    fill(&mut bucket, rate);
    if bucket.tokens < 0.0 {
        let owed = Duration::from_secs_f64(-bucket.tokens / rate).min(LONGEST_WAIT);
        // Whole milliseconds, rounded up: a latch waits no less than one.
        let millis = u64::try_from(owed.as_millis()).unwrap_or(0) + 1;
        return Turn::Wait(Duration::from_millis(millis));
    }
    bucket.tokens -= rows as f64;
    Turn::Go(Reservation { taken: rows })
}

/// Gives back what a batch took and did not delete, or takes what it deleted beyond (a Citus
/// round; a batch that took nothing).
fn settle(taken: i64, deleted: i64) {
    if taken == deleted || !IN_SHARED_MEMORY.load(Ordering::Relaxed) {
        return;
    }
    if taken == 0 && rate().is_none() {
        return;
    }
    let mut bucket = BUCKET.exclusive();
    bucket.tokens += (taken - deleted) as f64;
}
