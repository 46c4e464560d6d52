//! The walk along the heap: for a large backlog in a table without partitions or inheritance
//! children, every page visited once, in physical order, as a single DELETE's sequential scan
//! would, with all rules applied in the same pass. (A table with children is walked along its
//! rules' indexes, which partition pruning keeps to the partitions concerned.)
//!
//! The table is walked in ctid order. A batch is one DELETE of the expired rows after where the
//! previous batch stopped, scanned in physical order (a TID range scan, which no index can
//! serve) and run with the batch size as the executor's row limit: the scan stops at the row
//! that fills the batch, and the next batch starts after it. So each page is read once and each
//! row checked once, by the statement that deletes it, and a batch holds at most `batch size`
//! rows however densely they lie and whatever the planner believes. Nothing in the statement
//! changes how the queries of the table's triggers and foreign keys are planned. A batch that
//! meets a row the application holds is redone lock-skipping: the range's next `batch size`
//! expired rows found first, those not locked deleted by ctid. A table with an AFTER ... FOR
//! EACH STATEMENT trigger on DELETE is always walked that way: a statement stopped at its row
//! limit never finishes, and never fires its statement-level AFTER triggers.

use super::{
    any_expired_sql, cutoff_args, is_contention, retrying_moved_rows, rule_of_sql, Batch,
    ROW_LOCK_WAIT_MS,
};
use crate::error::{GcError, GcResult};
use crate::identity;
use crate::policy::{Policy, RULE_KINDS};
use crate::sql;
use crate::txn;
use pgrx::itemptr::item_pointer_get_both;
use pgrx::pg_sys::ItemPointerData;

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
    /// The ctid the next batch starts after, as text (`(0,0)` is before every row).
    after: String,
    /// Where the walk ends: the table's size when the run started (rows written later are new).
    end: String,
    done: bool,
    /// The table has statement-level AFTER DELETE triggers: every batch must be a statement that
    /// runs to its end, so batches take the lock-skipping path.
    whole_statements: bool,
}

/// Whether the table has an enabled statement-level AFTER DELETE trigger (tgtype: not ROW (1),
/// not BEFORE (2), DELETE (8)).
fn has_after_statement_delete_triggers(policy: &Policy) -> GcResult<bool> {
    identity::as_table_owner(policy.owner, || {
        Ok(sql::one::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                             WHERE t.tgrelid OPERATOR(pg_catalog.=) $1 AND NOT t.tgisinternal
                               AND t.tgenabled OPERATOR(pg_catalog.<>) 'D'
                               AND (t.tgtype::int4 OPERATOR(pg_catalog.&) 11) OPERATOR(pg_catalog.=) 8)",
            &[policy.relid.into()],
        )?
        .unwrap_or(true))
    })
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
        Self::between(policy, "(0,0)".into(), format!("({blocks},0)")).map(Some)
    }

    /// The walk of `policy`'s table from after the ctid `after` to before `end`.
    fn between(policy: &Policy, after: String, end: String) -> GcResult<Self> {
        let (range_delete, skip_delete) = statements(policy);
        Ok(HeapWalk {
            range_delete,
            skip_delete,
            after,
            end,
            done: false,
            whole_statements: has_after_statement_delete_triggers(policy)?,
        })
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The walk again from where `position` says an earlier one stood (a shard's walk,
    /// carried between calls).
    pub(super) fn resume(policy: &Policy, after: String, end: String) -> GcResult<Self> {
        for tid in [&after, &end] {
            if parse_tid(tid).is_none() {
                return Err(crate::error::GcError::invalid_parameter(format!(
                    "{tid} is not a position in a table"
                )));
            }
        }
        Self::between(policy, after, end)
    }

    /// Where the walk stands: the ctid the next batch starts after, the one it ends before.
    pub(super) fn position(&self) -> (&str, &str) {
        (&self.after, &self.end)
    }

    pub fn next_batch(&mut self, policy: &Policy, batch_size: i64) -> GcResult<Option<Batch>> {
        if self.done {
            return Ok(None);
        }
        let wait = ROW_LOCK_WAIT_MS.min(crate::gucs::lock_timeout_ms());
        let step = if self.whole_statements {
            retrying_moved_rows(|| self.delete_skipping_locked(policy, batch_size))?
        } else {
            self.fast_or_skipping(policy, batch_size, wait)?
        };
        match step.last_visited {
            Some(last) => self.after = last,
            None => self.done = true,
        }
        Ok(Some(step.batch))
    }

    /// The fast path, redone lock-skipping when it meets a row the application holds.
    fn fast_or_skipping(&self, policy: &Policy, batch_size: i64, wait: i32) -> GcResult<Step> {
        Ok(
            match txn::in_subtransaction(|| self.delete_in_range(policy, batch_size, wait)) {
                Ok(step) => step,
                Err(error) if is_contention(&error) => {
                    retrying_moved_rows(|| self.delete_skipping_locked(policy, batch_size))?
                }
                Err(error) => return Err(error),
            },
        )
    }

    /// The fast path: one DELETE scanning the range after the last batch in physical order,
    /// stopped by the executor once it has deleted `batch_size` rows. Each page is visited
    /// once, and each row checked once, by the statement that deletes it.
    fn delete_in_range(&self, policy: &Policy, batch_size: i64, wait_ms: i32) -> GcResult<Step> {
        let args = self.args(policy, None)?;
        // With one rule every row deleted is its: no need to read a rule per row.
        let several_rules = policy.rules.len() > 1;
        let deleted =
            identity::as_table_owner_with(policy.owner, wait_ms, &PHYSICAL_ORDER, || {
                sql::delete_up_to(
                    &self.range_delete,
                    &args,
                    batch_size,
                    several_rules.then_some(RULE_KINDS),
                )
            })?;
        let mut batch = Batch::default();
        match policy.rules.as_slice() {
            [rule] => batch.deleted_by_rule[rule.kind.index()] = deleted.rows as i64,
            _ => {
                for (total, count) in batch.deleted_by_rule.iter_mut().zip(&deleted.per_rule) {
                    *total = *count;
                }
            }
        }
        // Fewer rows than asked for: the scan reached the end of the range. Otherwise the next
        // batch starts after the last row deleted, where the scan stopped. (A row updated while
        // being deleted comes back with its new version's ctid, wherever the update put it: of
        // the last two rows, the smaller ctid is taken, and one that is not after where the
        // batch started is no position: the next batch scans again from the same place, which
        // finds only rows not deleted yet.)
        let full = i64::try_from(deleted.rows).unwrap_or(i64::MAX) >= batch_size;
        let last_visited = if full {
            let last = deleted
                .last_tids
                .iter()
                .copied()
                .min_by_key(|tid| item_pointer_get_both(*tid))
                .map(tid_text);
            Some(match last {
                Some(last) if self.is_ahead(&last) => last,
                _ => self.after.clone(),
            })
        } else {
            None
        };
        Ok(Step {
            batch,
            last_visited,
        })
    }

    /// The path around rows the application holds: the range's first `batch_size` expired rows,
    /// those not locked deleted, the next batch starting after the last of them.
    fn delete_skipping_locked(&self, policy: &Policy, batch_size: i64) -> GcResult<Step> {
        let args = self.args(policy, Some(batch_size))?;
        let rows = identity::as_table_owner_with(
            policy.owner,
            crate::gucs::lock_timeout_ms(),
            &PHYSICAL_ORDER,
            || {
                sql::rows_written(&self.skip_delete, &args, |row| {
                    Ok((row.get::<String>(1)?, row.get::<String>(2)?))
                })
            },
        )?;
        let (counts, last) = rows.into_iter().next().unwrap_or((None, None));
        let mut batch = Batch::default();
        for (slot, count) in batch
            .deleted_by_rule
            .iter_mut()
            .zip(counts.unwrap_or_default().split(','))
        {
            *slot = count.trim().parse().unwrap_or(0);
        }
        Ok(Step {
            batch,
            last_visited: last,
        })
    }

    /// The rules' cutoffs, the ctid the batch starts after, the one the walk ends before, and
    /// for the lock-skipping statement the batch size.
    fn args(
        &self,
        policy: &Policy,
        batch_size: Option<i64>,
    ) -> GcResult<Vec<pgrx::datum::DatumWithOid<'static>>> {
        let mut args = cutoff_args(policy)?;
        args.push(self.after.clone().into());
        args.push(self.end.clone().into());
        if let Some(size) = batch_size {
            args.push(size.into());
        }
        Ok(args)
    }

    /// Whether a ctid lies after where this batch started and before the walk's end.
    fn is_ahead(&self, tid: &str) -> bool {
        let (Some(tid), Some(after), Some(end)) =
            (parse_tid(tid), parse_tid(&self.after), parse_tid(&self.end))
        else {
            return false;
        };
        tid > after && tid < end
    }
}

/// What one batch did, and the last ctid it visited (None: the walk reached its end).
struct Step {
    batch: Batch,
    last_visited: Option<String>,
}

/// A ctid as its text form, `(block,offset)`.
fn tid_text(tid: ItemPointerData) -> String {
    let (block, offset) = item_pointer_get_both(tid);
    format!("({block},{offset})")
}

/// `(block,offset)` back to numbers, which order as ctids do.
fn parse_tid(text: &str) -> Option<(u64, u64)> {
    let (block, offset) = text
        .trim()
        .strip_prefix('(')?
        .strip_suffix(')')?
        .split_once(',')?;
    Some((block.trim().parse().ok()?, offset.trim().parse().ok()?))
}

/// The fast and the lock-skipping statement of a batch. Parameters: `$1..$n` the rules'
/// cutoffs, then the ctid the batch starts after, the ctid the walk ends before, and for the
/// lock-skipping one the batch size.
fn statements(policy: &Policy) -> (String, String) {
    let n = policy.rules.len();
    let (after, end, size) = (n + 1, n + 2, n + 3);
    let name = &policy.quoted_table;
    // The coalesce of each predicate (any_expired_sql) is load-bearing: the scans below come
    // in physical order (a TID range scan) and never in an index's key order, which would make
    // the batch's last row no position in the table.
    let any_expired = |alias: &str| any_expired_sql(policy, alias);
    let classify = |alias: &str| rule_of_sql(policy, alias);
    // Run with the batch size as the executor's row limit: the scan stops at the row that
    // fills the batch. The DELETE's own WHERE is the check of the rules, on each row as it is
    // deleted (and again on its new version if an update got there first).
    let range_delete = format!(
        "DELETE FROM ONLY {name} t
          WHERE t.ctid > ${after}::tid AND t.ctid < ${end}::tid AND {expired}
          RETURNING t.ctid, {rule}",
        expired = any_expired("t"),
        rule = classify("t"),
    );
    let counts = "pg_catalog.concat_ws(',', count(*) FILTER (WHERE rule = 0), count(*) FILTER (WHERE rule = 1),
                      count(*) FILTER (WHERE rule = 2), count(*) FILTER (WHERE rule = 3))";
    // The range's first `batch size` expired rows in physical order (read only as far as that,
    // a CTE being evaluated as its reader asks), those not locked then deleted by ctid with the
    // rules checked again; the last of them is where the next batch starts after.
    let skip_delete = format!(
        "WITH scanned AS MATERIALIZED (
             SELECT s.ctid AS tid FROM ONLY {name} s
              WHERE s.ctid > ${after}::tid AND s.ctid < ${end}::tid AND {expired_s}
              LIMIT ${size}),
         batch AS MATERIALIZED (
             SELECT s.ctid AS tid FROM ONLY {name} s
              WHERE s.ctid = ANY (ARRAY(SELECT r.tid FROM scanned r)) AND {expired_s}
                FOR UPDATE OF s SKIP LOCKED),
         gone AS (
             DELETE FROM ONLY {name} t USING batch b
              WHERE t.ctid = b.tid AND {expired}
              RETURNING {rule} AS rule)
         SELECT {counts},
                (SELECT r.tid::text FROM scanned r OFFSET ${size} - 1 LIMIT 1)
           FROM gone",
        expired_s = any_expired("s"),
        expired = any_expired("t"),
        rule = classify("t"),
    );
    (range_delete, skip_delete)
}
