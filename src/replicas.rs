//! Standbys: how far the furthest connected one is behind, so that purges can wait for it
//! (`session_gc.max_replica_lag`) instead of running it further behind.

use pgrx::pg_sys;

/// Bytes of WAL written here and not yet replayed by the connected standby furthest behind:
/// what `pg_current_wal_lsn()` against `replay_lsn` of `pg_stat_replication` says, read from the
/// walsenders' shared memory so that every batch can afford a look (no statement, no catalog
/// access). Logical walsenders count as they report replay. None with no standby connected: one
/// that disconnects leaves its slot, so it holds no purge. Only on a primary (purges never run
/// in recovery).
pub fn replay_lag_bytes() -> Option<i64> {
    // SAFETY: WalSndCtl is set up in shared memory at server start and lives as long as the
    // server; its array has max_wal_senders entries. Each entry is read without its spinlock, as
    // a glance: `pid` and the 64-bit `apply` are each read whole, and a value a moment stale is
    // corrected at the next look.
    unsafe {
        let control = pg_sys::WalSndCtl;
        if control.is_null() {
            return None;
        }
        let written = pg_sys::GetXLogWriteRecPtr();
        let senders = (*control).walsnds.as_ptr();
        let mut furthest: Option<i64> = None;
        for index in 0..usize::try_from(pg_sys::max_wal_senders).unwrap_or(0) {
            let sender = senders.add(index);
            if std::ptr::read_volatile(&raw const (*sender).pid) == 0 {
                continue;
            }
            let replayed = std::ptr::read_volatile(&raw const (*sender).apply);
            // InvalidXLogRecPtr: nothing reported yet (a base backup's walsender never does).
            if replayed == 0 {
                continue;
            }
            let behind = i64::try_from(written.saturating_sub(replayed)).unwrap_or(i64::MAX);
            furthest = Some(furthest.map_or(behind, |f| f.max(behind)));
        }
        furthest
    }
}
