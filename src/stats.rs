//! What is in a registered table: size, rows, how many are expired now, and what the last
//! runs did. Counts go through the same rules as the purge (`engine::census`).

use crate::engine;
use crate::error::GcResult;
use crate::identity;
use crate::policy::Policy;
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

pub fn collect(policy: &Policy) -> GcResult<TableStats> {
    let census = engine::census(policy)?;
    let total_rows = identity::as_table_owner(policy.owner, || planner_row_estimate(policy))?;
    let (table_bytes, dead_rows) = Spi::get_two_with_args::<i64, i64>(
        "SELECT sum(pg_catalog.pg_total_relation_size(t.relid))::int8,
                sum(pg_catalog.pg_stat_get_dead_tuples(t.relid))::int8
           FROM (SELECT p.relid FROM pg_catalog.pg_partition_tree($1::oid::regclass) p WHERE p.isleaf
                 UNION
                 SELECT c.oid::regclass FROM pg_catalog.pg_class c WHERE c.oid = $1 AND c.relkind <> 'p') t",
        &[policy.relid.into()],
    )?;
    let (last_run, last_deleted, deleted_total) = identity::as_extension_owner(|| {
        Spi::get_three_with_args::<TimestampWithTimeZone, i64, i64>(
            "SELECT max(last_run), max(last_deleted), max(deleted_total) FROM session_gc.totals
              WHERE table_name = $1::oid::regclass",
            &[policy.relid.into()],
        )
    })?;
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

/// The planner's row estimate for the whole table: what `EXPLAIN SELECT * FROM t` says.
/// It reads pg_class statistics (scaled to the table's current size), never the rows.
fn planner_row_estimate(policy: &Policy) -> GcResult<Option<i64>> {
    let plan = Spi::get_one::<pgrx::datum::Json>(&format!(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM {}",
        policy.quoted_table
    ))?;
    let rows = plan
        .as_ref()
        .and_then(|plan| plan.0.get(0))
        .and_then(|entry| entry.get("Plan"))
        .and_then(|node| node.get("Plan Rows"))
        .and_then(|rows| rows.as_f64());
    Ok(rows.map(|rows| rows.round() as i64))
}
