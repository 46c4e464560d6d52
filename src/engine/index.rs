//! The walk along the rules' indexes, one rule after the other, for few expired rows among
//! many: only their index ranges and heap pages are visited.
//!
//! Each rule is walked in its column's key order, each batch starting after the last key of the
//! previous one (so no batch rescans the index entries earlier batches left dead). A batch first
//! tries the fast path: a plain DELETE of the key range holding the next `batch size` expired
//! rows, under a very short lock timeout. When it meets a row the application holds, it is rolled
//! back and redone with `FOR UPDATE SKIP LOCKED`: held rows are left for the next run. Either way
//! the DELETE itself checks the rule again, so a session extended a moment ago is never deleted.

use super::{is_contention, retrying_moved_rows, Batch, ROW_LOCK_WAIT_MS};
use crate::error::{GcError, GcResult};
use crate::identity;
use crate::policy::{Policy, Rule};
use crate::sql;
use crate::txn;

/// The batch statements of one rule.
///
/// Parameters of every statement: `$1` cutoff, `$2` the key the batch starts at, `$3` batch
/// size. Each deletes at most `$3` rows and returns the rows deleted, the key the next batch
/// starts at, and whether rows may be left.
#[derive(Debug, Clone)]
struct RuleStatements {
    /// Key-range delete: find the key `$3` rows on, delete everything expired before it in one
    /// plain DELETE. As fast as a single DELETE, per batch. Waits for locks. Also says whether
    /// the batch stalled: the first `$3 + 1` rows share one key, so the range before the bound
    /// is empty and the batch must be taken by count instead (`skip`).
    range: Option<String>,
    /// Lock-skipping delete: select the next `$3` rows in key order `FOR UPDATE SKIP LOCKED`
    /// and delete those. Never waits for an application's row locks; slower.
    skip: String,
}

impl RuleStatements {
    pub(super) fn new(table: &str, rule: &Rule) -> Self {
        RuleStatements {
            range: rule.is_ordered().then(|| key_range_statement(table, rule)),
            skip: skip_locked_statement(table, rule),
        }
    }
}

fn key_range_statement(table: &str, rule: &Rule) -> String {
    let column = rule.quoted_column();
    let ty = rule.column_kind.key_type();
    // The bound is the first row past the batch; only rows before its key are deleted, so rows
    // sharing a key (one bulk insert's timestamp) never make a batch larger than `$3`.
    // The DELETE's own WHERE re-checks the rule on each row it deletes, after any wait.
    format!(
        "WITH bound AS MATERIALIZED (
             SELECT s.{column} AS upper FROM {table} s
              WHERE s.{column} OPERATOR(pg_catalog.>=) $2::{ty} AND {expired_s}
              ORDER BY s.{column} OFFSET $3 LIMIT 1),
         gone AS (
             DELETE FROM {table} t
              WHERE t.{column} OPERATOR(pg_catalog.>=) $2::{ty} AND {expired_t}
                AND t.{column} OPERATOR(pg_catalog.<) coalesce((SELECT upper FROM bound), $1::{ty})
              RETURNING 1)
         SELECT (SELECT count(*) FROM gone)::int8, (SELECT upper::text FROM bound),
                EXISTS (SELECT 1 FROM bound),
                coalesce((SELECT upper OPERATOR(pg_catalog.=) $2::{ty} FROM bound), false)",
        expired_s = rule.predicate("s", 1),
        expired_t = rule.predicate("t", 1),
    )
}

fn skip_locked_statement(table: &str, rule: &Rule) -> String {
    let column = rule.quoted_column();
    let (walk, last_key) = if rule.is_ordered() {
        (
            format!(
                "AND s.{column} OPERATOR(pg_catalog.>=) $2::{ty} ORDER BY s.{column}",
                ty = rule.column_kind.key_type()
            ),
            "max(key)::text",
        )
    } else {
        (String::new(), "NULL::text")
    };
    // tableoid pairs with ctid: in a partitioned table a ctid alone is not unique.
    format!(
        "WITH batch AS MATERIALIZED (
             SELECT s.tableoid AS rel, s.ctid AS tid FROM {table} s
              WHERE {selected} {walk}
              LIMIT $3 FOR UPDATE OF s SKIP LOCKED),
         gone AS (
             DELETE FROM {table} t USING batch b
              WHERE t.tableoid OPERATOR(pg_catalog.=) b.rel AND t.ctid OPERATOR(pg_catalog.=) b.tid
                AND {rechecked}
              RETURNING t.{column} AS key)
         SELECT count(*)::int8, {last_key}, count(*) OPERATOR(pg_catalog.>=) $3, false FROM gone",
        selected = rule.predicate("s", 1),
        rechecked = rule.predicate("t", 1),
    )
}

/// The walk along the rules' indexes, one rule after the other, in key order.
#[derive(Debug, Clone)]
pub struct IndexWalk {
    statements: Vec<RuleStatements>,
    rule: usize,
    /// The key the next batch starts at; None: the rule's first batch (no lower bound).
    start_key: Option<String>,
}

impl IndexWalk {
    pub(super) fn new(policy: &Policy) -> Self {
        let statements = policy
            .rules
            .iter()
            .map(|rule| RuleStatements::new(&policy.quoted_table, rule))
            .collect();
        IndexWalk {
            statements,
            rule: 0,
            start_key: None,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.rule >= self.statements.len()
    }

    /// The walk again from where an earlier one stood: at rule `rule`, at `start_key`.
    pub(super) fn resume(policy: &Policy, rule: usize, start_key: Option<String>) -> Self {
        IndexWalk {
            rule,
            start_key,
            ..Self::new(policy)
        }
    }

    /// Where the walk stands: the rule, and the key its next batch starts at.
    pub(super) fn position(&self) -> (usize, Option<&str>) {
        (self.rule, self.start_key.as_deref())
    }

    pub(super) fn next_batch(
        &mut self,
        policy: &Policy,
        batch_size: i64,
    ) -> GcResult<Option<Batch>> {
        let (Some(rule), Some(statements)) =
            (policy.rules.get(self.rule), self.statements.get(self.rule))
        else {
            return Ok(None);
        };
        let start_key = self
            .start_key
            .clone()
            .unwrap_or_else(|| rule.column_kind.lowest_key().to_string());
        let run = |statement: &str, lock_timeout_ms: i32| {
            identity::as_table_owner_waiting(policy.owner, lock_timeout_ms, || {
                let cutoff = rule.cutoff()?;
                let rows = sql::rows_written(
                    statement,
                    &[cutoff.arg(), start_key.as_str().into(), batch_size.into()],
                    |row| {
                        Ok(StatementOutcome {
                            deleted: row.get::<i64>(1)?.unwrap_or(0),
                            next_key: row.get::<String>(2)?,
                            more: row.get::<bool>(3)?.unwrap_or(false),
                            stalled: row.get::<bool>(4)?.unwrap_or(false),
                        })
                    },
                )?;
                Ok::<_, GcError>(rows.into_iter().next().unwrap_or_default())
            })
        };
        // The fast path runs in a subtransaction: when it meets a row the application holds,
        // it gives up after a short wait and the batch is redone skipping locked rows. When the
        // batch's rows all share one key it deletes nothing and the batch is taken by count.
        let fast = match &statements.range {
            Some(statement) => {
                let wait = ROW_LOCK_WAIT_MS.min(crate::gucs::lock_timeout_ms());
                match txn::in_subtransaction(|| run(statement, wait)) {
                    Ok(outcome) if !outcome.stalled => Some(outcome),
                    Ok(_) => None,
                    Err(error) if is_contention(&error) => None,
                    Err(error) => return Err(error),
                }
            }
            None => None,
        };
        let outcome = match fast {
            Some(done) => done,
            None => retrying_moved_rows(|| run(&statements.skip, crate::gucs::lock_timeout_ms()))?,
        };
        if !outcome.more {
            self.rule += 1;
            self.start_key = None;
        } else if rule.is_ordered() {
            // Rows at the next key itself may remain (a bound's key, a skipped locked row).
            match outcome.next_key {
                Some(key) => self.start_key = Some(key),
                None => {
                    self.rule += 1;
                    self.start_key = None;
                }
            }
        }
        // An unordered (boolean) rule has no key: its next batch takes the next rows.
        Ok(Some(Batch::of_rule(rule.kind, outcome.deleted)))
    }
}

/// What one batch statement of a rule returned.
#[derive(Debug, Clone, Default)]
struct StatementOutcome {
    deleted: i64,
    next_key: Option<String>,
    more: bool,
    stalled: bool,
}
