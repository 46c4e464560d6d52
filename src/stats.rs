//! What is in a registered table: size, rows, how many are expired now, and what the last
//! runs did. Counts go through the same rules as the purge (`engine::census`).

use crate::engine;
use crate::error::GcResult;
use crate::identity;
use crate::policy::{Policy, LEAF_RELATIONS};
use crate::sql;
use pgrx::prelude::*;

#[derive(Debug, Clone, Default)]
pub struct TableStats {
    /// The planner's estimate of live rows (no scan).
    pub total_rows: Option<i64>,
    pub census: engine::Census,
    /// Heap, indexes and TOAST, summed over all partitions.
    pub table_bytes: Option<i64>,
    /// Dead tuples not yet vacuumed, from the statistics collector.
    pub dead_rows: Option<i64>,
    pub last_run: Option<TimestampWithTimeZone>,
    pub last_deleted: Option<i64>,
    pub deleted_total: Option<i64>,
}

pub fn collect(policy: &Policy, counting: engine::Counting) -> GcResult<TableStats> {
    let census = engine::census(policy, counting)?;
    let total_rows = identity::as_table_owner(policy.owner, || planner_row_estimate(policy))?;
    if policy.location.is_citus() {
        return sharded_stats(policy, census, total_rows);
    }
    let (table_bytes, dead_rows) = sql::two::<i64, i64>(
        &format!(
            "SELECT sum(pg_catalog.pg_total_relation_size(t.relid))::int8,
                    sum(pg_catalog.pg_stat_get_dead_tuples(t.relid))::int8
               FROM {LEAF_RELATIONS} t"
        ),
        &[policy.relid.into()],
    )?;
    let (last_run, last_deleted, deleted_total) = totals(policy)?;
    Ok(TableStats {
        total_rows,
        census,
        table_bytes,
        dead_rows,
        last_run,
        last_deleted,
        deleted_total: Some(deleted_total.unwrap_or(0)),
    })
}

/// When the table was last purged, how many rows that run deleted, and how many all runs did.
#[allow(clippy::type_complexity)]
fn totals(policy: &Policy) -> GcResult<(Option<TimestampWithTimeZone>, Option<i64>, Option<i64>)> {
    identity::as_extension_owner(|| {
        sql::three::<TimestampWithTimeZone, i64, i64>(
            "SELECT max(last_run), max(last_deleted), max(deleted_total) FROM session_gc.totals
              WHERE table_name = $1::oid::regclass",
            &[policy.relid.into()],
        )
    })
}

/// A Citus table's figures: its size over all its shards (Citus's own sum); dead rows are not
/// summed over the nodes.
fn sharded_stats(
    policy: &Policy,
    census: engine::Census,
    total_rows: Option<i64>,
) -> GcResult<TableStats> {
    let table_bytes = identity::as_table_owner(policy.owner, || {
        sql::one::<i64>(
            "SELECT pg_catalog.citus_total_relation_size($1::oid::regclass)::int8",
            &[policy.relid.into()],
        )
    })?;
    let (last_run, last_deleted, deleted_total) = totals(policy)?;
    Ok(TableStats {
        total_rows,
        census,
        table_bytes,
        dead_rows: None,
        last_run,
        last_deleted,
        deleted_total: Some(deleted_total.unwrap_or(0)),
    })
}

/// The rows in the whole table without a full scan. The planner's estimate scales pg_class
/// statistics to the table's current size; but a table never vacuumed or analyzed (freshly
/// copied or filled) has none, and the planner then guesses from column widths (1,339 rows for
/// 3,000 sessions with large payloads). Such a table is counted, up to `EXACT_COUNT_LIMIT` rows.
fn planner_row_estimate(policy: &Policy) -> GcResult<Option<i64>> {
    // The planner knows nothing of a Citus table's rows; its shards count them in parallel.
    if policy.location.is_citus() {
        return sql::one::<i64>(
            &format!("SELECT count(*)::int8 FROM {}", policy.quoted_table),
            &[],
        );
    }
    let without_statistics = sql::one::<bool>(
        &format!(
            "SELECT bool_or(c.reltuples < 0) FROM {LEAF_RELATIONS} t
               JOIN pg_catalog.pg_class c ON c.oid = t.relid"
        ),
        &[policy.relid.into()],
    )?
    .unwrap_or(false);
    if without_statistics {
        let limit = engine::EXACT_COUNT_LIMIT as i64;
        let counted = sql::one::<i64>(
            &format!(
                "SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {}) t",
                policy.quoted_table,
                limit + 1
            ),
            &[],
        )?
        .unwrap_or(0);
        if counted <= limit {
            return Ok(Some(counted));
        }
    }
    let rows = sql::planned_rows(&format!("SELECT 1 FROM {}", policy.quoted_table), &[])?;
    Ok(Some(rows.round() as i64))
}

/// One table's figures for monitoring: counters since registration, the backlog now, and how
/// long ago the last run was. `backlog` is None when the policy no longer matches the table.
pub struct TableMetrics {
    pub table_name: String,
    pub enabled: bool,
    pub strategy: String,
    pub runs_total: i64,
    pub deleted_total: i64,
    pub partitions_dropped_total: i64,
    pub errors_total: i64,
    pub backlog: Option<engine::Census>,
    pub last_run_age_seconds: Option<f64>,
    pub last_status: Option<String>,
    pub table_bytes: Option<i64>,
    pub replica_wait_seconds_total: f64,
}

/// Every registered table's metrics. Counts only, so no ownership is required; a policy that
/// cannot be loaded shows up with no backlog rather than failing the whole scrape.
pub fn metrics() -> GcResult<Vec<TableMetrics>> {
    let mut all = Vec::new();
    for relid in Policy::registered_tables(false)? {
        let counters = identity::as_extension_owner(|| {
            let found = sql::rows(
                &format!(
                    "SELECT p.table_name::text, p.enabled, p.strategy, coalesce(t.runs, 0),
                            coalesce(t.deleted_total, 0), coalesce(t.partitions_dropped_total, 0),
                            coalesce(t.errors_total, 0),
                            extract(epoch FROM now() - t.last_run)::float8, t.last_status,
                            (SELECT sum(pg_catalog.pg_total_relation_size(x.relid))::int8
                               FROM {LEAF_RELATIONS} x),
                            extract(epoch FROM t.replica_wait_total)::float8
                       FROM (SELECT q.table_name, bool_or(q.enabled) AS enabled,
                                    max(q.strategy) AS strategy
                               FROM session_gc.policies q
                              WHERE q.table_name = $1::oid::regclass GROUP BY q.table_name) p
                       LEFT JOIN session_gc.totals t USING (table_name)"
                ),
                &[relid.into()],
                |row| {
                    Ok(TableMetrics {
                        table_name: row.get(1)?.unwrap_or_default(),
                        enabled: row.get(2)?.unwrap_or(false),
                        strategy: row.get(3)?.unwrap_or_default(),
                        runs_total: row.get(4)?.unwrap_or(0),
                        deleted_total: row.get(5)?.unwrap_or(0),
                        partitions_dropped_total: row.get(6)?.unwrap_or(0),
                        errors_total: row.get(7)?.unwrap_or(0),
                        backlog: None,
                        last_run_age_seconds: row.get(8)?,
                        last_status: row.get(9)?,
                        table_bytes: row.get(10)?,
                        replica_wait_seconds_total: row.get(11)?.unwrap_or(0.0),
                    })
                },
            )?;
            Ok::<_, crate::error::GcError>(found.into_iter().next())
        })?;
        let Some(mut counters) = counters else {
            continue;
        };
        counters.backlog = crate::txn::in_subtransaction(|| {
            let policy = Policy::load(relid)?;
            policy
                .map(|p| engine::census(&p, engine::Counting::Auto))
                .transpose()
        })
        .ok()
        .flatten();
        all.push(counters);
    }
    Ok(all)
}
