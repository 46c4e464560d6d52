//! Standbys: how far the furthest connected one is behind, so that purges can wait for it
//! (`session_gc.max_replica_lag`) instead of running it further behind.

use pgrx::pg_sys;

/// Bytes of WAL inserted here and not yet replayed by the connected physical standby furthest
/// behind (what `pg_current_wal_insert_lsn()` against `replay_lsn` of `pg_stat_replication`
/// says), read from the walsenders' shared memory so that every batch can afford a look (no
/// statement, no catalog access). Logical walsenders (subscribers, CDC clients) are left out on
/// PostgreSQL 16 and later, which tell them apart; 15 cannot, so there they count as they
/// report replay. A walsender that has reported no replay yet (a base backup's never does) is
/// left out. None with no standby connected: one that disconnects frees its slot, so it holds
/// no purge. Only on a primary (purges never run in recovery).
pub fn replay_lag_bytes() -> Option<i64> {
    // SAFETY: WalSndCtl is set up in shared memory at server start and lives as long as the
    // server; its array has max_wal_senders entries (fixed at start). Each entry is read under
    // its spinlock, as pg_stat_get_wal_senders does.
    unsafe {
        let control = pg_sys::WalSndCtl;
        if control.is_null() {
            return None;
        }
        let inserted = pg_sys::GetXLogInsertRecPtr();
        let senders = (*control).walsnds.as_ptr() as *mut pg_sys::WalSnd;
        let mut furthest: Option<i64> = None;
        for index in 0..usize::try_from(pg_sys::max_wal_senders).unwrap_or(0) {
            let sender = senders.add(index);
            pg_sys::SpinLockAcquire(&raw mut (*sender).mutex);
            let pid = (*sender).pid;
            let replayed = (*sender).apply;
            #[cfg(not(feature = "pg15"))]
            let physical = (*sender).kind == pg_sys::ReplicationKind::REPLICATION_KIND_PHYSICAL;
            #[cfg(feature = "pg15")]
            let physical = true;
            pg_sys::SpinLockRelease(&raw mut (*sender).mutex);
            // InvalidXLogRecPtr (0): nothing reported yet.
            if pid == 0 || replayed == 0 || !physical {
                continue;
            }
            let behind = i64::try_from(inserted.saturating_sub(replayed)).unwrap_or(i64::MAX);
            furthest = Some(furthest.map_or(behind, |f| f.max(behind)));
        }
        furthest
    }
}
