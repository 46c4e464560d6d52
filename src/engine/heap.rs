//! The walk along the heap: for a large backlog in a table without partitions or inheritance
//! children, every page visited once, in physical order, as a single DELETE's sequential scan
//! would, with all rules applied in the same pass. (A table with children is walked along its
//! rules' indexes, which partition pruning keeps to the partitions concerned.)
//!
//! The table is walked in ctid order. A batch reads the expired rows from where the previous
//! batch stopped, in physical order, through a materialized scan of the TID range (which no
//! index can serve) read only as far as needed: the first `batch size` of them are deleted by
//! their ctids (a TID scan, rules re-checked), the next one is the bound where the next batch
//! starts. At most `batch size` rows, however densely rows lie and whatever the planner
//! believes; nothing in the statements changes how the queries of the table's triggers and
//! foreign keys are planned.

use super::{cutoff_args, is_contention, retrying_moved_rows, Batch, ROW_LOCK_WAIT_MS};
use crate::error::{GcError, GcResult};
use crate::identity;
use crate::policy::{Policy, RULE_KINDS};
use crate::sql;
use crate::txn;

/// The share of a table's rows (by the planner's estimates) expired from which a purge walks the
/// heap rather than the rules' indexes.
const HEAP_WALK_SHARE: f64 = 0.2;

/// Settings of every heap-walk statement, so that the range is scanned from its start: a
/// synchronized sequential scan could start in the middle of the table.
const PHYSICAL_ORDER: [(&str, &str); 2] =
    [("synchronize_seqscans", "off"), ("enable_tidscan", "on")];

#[derive(Debug, Clone)]
pub struct HeapWalk {
    range_delete: String,
    skip_delete: String,
    /// Where the next batch starts (a ctid, as text).
    from: String,
    /// Where the walk ends: the table's size when the run started (rows written later are new).
    end: String,
    done: bool,
}

impl HeapWalk {
    /// Some(walk) when the planner expects a large share of a table without children to be
    /// expired.
    pub fn plan(policy: &Policy) -> GcResult<Option<Self>> {
        if policy.rules.is_empty() {
            return Ok(None);
        }
        let predicates = |alias: &str| -> Vec<String> {
            policy
                .rules
                .iter()
                .enumerate()
                .map(|(position, rule)| rule.predicate(alias, position + 1))
                .collect()
        };
        let walked = identity::as_table_owner(policy.owner, || {
            let (blocks, children) = sql::two::<i64, bool>(
                "SELECT (pg_catalog.pg_relation_size(c.oid)
                         / pg_catalog.current_setting('block_size')::int8)::int8,
                        c.relkind <> 'r' OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i
                                                     WHERE i.inhparent = c.oid)
                   FROM pg_catalog.pg_class c WHERE c.oid = $1",
                &[policy.relid.into()],
            )?;
            let blocks = blocks.unwrap_or(0);
            if children != Some(false) || blocks == 0 {
                return Ok::<_, GcError>(None);
            }
            let args = cutoff_args(policy)?;
            // The bare predicates (NULL is not true in a WHERE), so the planner sees each
            // rule's selectivity from its column's statistics.
            let expected = sql::planned_rows(
                &format!(
                    "SELECT 1 FROM {} s WHERE {}",
                    policy.quoted_table,
                    predicates("s").join(" OR ")
                ),
                &args,
            )?;
            let total = sql::planned_rows(&format!("SELECT 1 FROM {}", policy.quoted_table), &[])?;
            Ok(Some((expected, total, blocks)))
        })?;
        let Some((expected_rows, table_rows, blocks)) = walked else {
            return Ok(None);
        };
        // Reading every page once in physical order beats visiting the rows through an index
        // once a large share of the table is expired, as the planner's own choice of a
        // sequential scan would say for a single DELETE.
        if expected_rows < HEAP_WALK_SHARE * table_rows || expected_rows < 1.0 {
            return Ok(None);
        }
        let (range_delete, skip_delete) = statements(policy);
        Ok(Some(HeapWalk {
            range_delete,
            skip_delete,
            from: "(0,0)".into(),
            end: format!("({blocks},0)"),
            done: false,
        }))
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn next_batch(&mut self, policy: &Policy, batch_size: i64) -> GcResult<Option<Batch>> {
        if self.done {
            return Ok(None);
        }
        let (from, end) = (self.from.clone(), self.end.clone());
        let run = |statement: &str, lock_timeout_ms: i32| {
            identity::as_table_owner_with(policy.owner, lock_timeout_ms, &PHYSICAL_ORDER, || {
                let mut args = cutoff_args(policy)?;
                args.push(from.as_str().into());
                args.push(end.as_str().into());
                args.push(batch_size.into());
                let rows = sql::rows_written(statement, &args, |row| {
                    Ok((row.get::<String>(1)?, row.get::<String>(2)?))
                })?;
                let (counts, bound) = rows.into_iter().next().unwrap_or((None, None));
                let mut deleted_by_rule = [0i64; RULE_KINDS];
                for (slot, count) in deleted_by_rule
                    .iter_mut()
                    .zip(counts.unwrap_or_default().split(','))
                {
                    *slot = count.trim().parse().unwrap_or(0);
                }
                Ok::<_, GcError>((
                    Batch {
                        deleted_by_rule,
                        partitions_dropped: 0,
                    },
                    bound,
                ))
            })
        };
        let wait = ROW_LOCK_WAIT_MS.min(crate::gucs::lock_timeout_ms());
        let (batch, bound) = match txn::in_subtransaction(|| run(&self.range_delete, wait)) {
            Ok(done) => done,
            Err(error) if is_contention(&error) => {
                retrying_moved_rows(|| run(&self.skip_delete, crate::gucs::lock_timeout_ms()))?
            }
            Err(error) => return Err(error),
        };
        match bound {
            Some(bound) => self.from = bound,
            None => self.done = true,
        }
        Ok(Some(batch))
    }
}

/// The fast and the lock-skipping statement of a batch. Parameters: `$1..$n` the rules'
/// cutoffs, then the ctid the batch starts at, the ctid the walk ends before, the batch size.
fn statements(policy: &Policy) -> (String, String) {
    let n = policy.rules.len();
    let (from, end, size) = (n + 1, n + 2, n + 3);
    let name = &policy.quoted_table;
    // The coalesce is load-bearing: no index matches a predicate so wrapped, so the scan below
    // comes in physical order (a TID range scan) and never in an index's key order, which would
    // make the bound skip rows before it.
    let any_expired = |alias: &str| {
        let each: Vec<String> = policy
            .rules
            .iter()
            .enumerate()
            .map(|(position, rule)| {
                format!("coalesce({}, false)", rule.predicate(alias, position + 1))
            })
            .collect();
        format!("({})", each.join(" OR "))
    };
    let classify: Vec<String> = policy
        .rules
        .iter()
        .enumerate()
        .map(|(position, rule)| {
            format!(
                "WHEN coalesce({}, false) THEN {}",
                rule.predicate("t", position + 1),
                rule.kind.index()
            )
        })
        .collect();
    let counts = "pg_catalog.concat_ws(',', count(*) FILTER (WHERE rule = 0), count(*) FILTER (WHERE rule = 1),
                      count(*) FILTER (WHERE rule = 2), count(*) FILTER (WHERE rule = 3))";
    // The range's expired rows in physical order, read only as far as the bound needs (a CTE
    // is evaluated as its reader asks): the first `batch size` of them are the batch, the next
    // one is the bound, where the next batch starts. Only expired rows are kept.
    let scan = format!(
        "scanned AS MATERIALIZED (
             SELECT s.ctid AS tid FROM {name} s
              WHERE s.ctid >= ${from}::tid AND s.ctid < ${end}::tid AND {expired_s}),
         bound AS MATERIALIZED (
             SELECT r.tid AS upper FROM scanned r OFFSET ${size} LIMIT 1)",
        expired_s = any_expired("s"),
    );
    // The batch's rows are fetched again by their ctids (a TID scan), not by scanning the range
    // again with the live rows in it.
    let batch_tids = format!("ARRAY(SELECT r.tid FROM scanned r LIMIT ${size})");
    // The DELETE's own WHERE re-checks the rules on each row, after any wait.
    let range_delete = format!(
        "WITH {scan},
         gone AS (
             DELETE FROM {name} t WHERE t.ctid = ANY ({batch_tids}) AND {expired}
             RETURNING CASE {classify} END AS rule)
         SELECT {counts}, (SELECT upper::text FROM bound) FROM gone",
        expired = any_expired("t"),
        classify = classify.join(" "),
    );
    let skip_delete = format!(
        "WITH {scan},
         batch AS MATERIALIZED (
             SELECT s.ctid AS tid FROM {name} s
              WHERE s.ctid = ANY ({batch_tids}) AND {expired_s} FOR UPDATE OF s SKIP LOCKED),
         gone AS (
             DELETE FROM {name} t USING batch b
              WHERE t.ctid = b.tid AND {expired}
              RETURNING CASE {classify} END AS rule)
         SELECT {counts}, (SELECT upper::text FROM bound) FROM gone",
        expired_s = any_expired("s"),
        expired = any_expired("t"),
        classify = classify.join(" "),
    );
    (range_delete, skip_delete)
}
