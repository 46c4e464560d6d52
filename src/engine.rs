//! The purge engine: how expired rows are removed.
//!
//! Rules come from the policy; this module only walks them in batches. Each batch of a
//! time rule takes the next `limit` expired rows in the column's index order, starting at the
//! last key of the previous batch (so no batch rescans what earlier batches left dead), locks
//! them with `FOR UPDATE SKIP LOCKED` (rows the application holds are left for the next run),
//! and deletes them with the rule checked again by the DELETE itself.

use crate::error::GcResult;
use crate::identity;
use crate::policy::{Policy, Rule, RuleKind, Strategy};
use pgrx::prelude::*;
use std::time::Instant;

/// Limits of one run over one table.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub batch_size: i64,
    /// Stop starting new batches after this moment.
    pub deadline: Option<Instant>,
}

/// What a run did so far.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Rows deleted per rule, indexed by `RuleKind::index()`.
    pub deleted_by_rule: [i64; 4],
    pub batches: i32,
    /// False when the budget ran out with expired rows possibly left.
    pub finished: bool,
}

impl Progress {
    pub fn deleted(&self) -> i64 {
        self.deleted_by_rule.iter().sum()
    }
}

/// Where a batch runs: inside the caller's transaction, or in a committed transaction of its own.
pub trait BatchScope {
    fn run_batch<R>(&mut self, batch: impl FnOnce() -> GcResult<R>) -> GcResult<R>;

    /// Called after each batch; false stops the run (e.g. on shutdown).
    fn keep_going(&mut self) -> bool {
        true
    }
}

/// All batches in the transaction of the calling statement (`cleanup()`).
pub struct CallerTransaction;

impl BatchScope for CallerTransaction {
    fn run_batch<R>(&mut self, batch: impl FnOnce() -> GcResult<R>) -> GcResult<R> {
        batch()
    }
}

/// The statement that deletes one batch under one rule.
/// Parameters: `$1` cutoff, `$2` lowest key of this batch, `$3` batch size.
/// Returns the number of rows deleted and the largest key among them.
fn batch_statement(table: &str, rule: &Rule) -> String {
    let column = rule.quoted_column();
    let expired = |alias: &str| rule.predicate(alias, 1);
    let (walk, last_key) = if rule.is_ordered() {
        (
            format!(
                "AND s.{column} >= $2::{ty} ORDER BY s.{column}",
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
              WHERE t.tableoid = b.rel AND t.ctid = b.tid AND {rechecked}
              RETURNING t.{column} AS key)
         SELECT count(*)::int8, {last_key} FROM gone",
        selected = expired("s"),
        rechecked = expired("t"),
    )
}

/// Runs one table's purge within `budget` with the policy's strategy, batch after batch.
pub fn purge(policy: &Policy, budget: &Budget, scope: &mut impl BatchScope) -> GcResult<Progress> {
    let mut cursor = Cursor::new(policy);
    let mut progress = Progress::default();
    loop {
        if budget
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
            || !scope.keep_going()
        {
            return Ok(progress);
        }
        pgrx::check_for_interrupts!();
        match scope.run_batch(|| cursor.next_batch(policy, budget.batch_size))? {
            Some(batch) => progress.add(&batch),
            None => break,
        }
        if cursor.is_done() {
            break;
        }
    }
    progress.finished = true;
    Ok(progress)
}

/// What one batch did.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    pub rule: RuleKind,
    pub deleted: i64,
}

impl Progress {
    pub fn add(&mut self, batch: &Batch) {
        self.batches += 1;
        self.deleted_by_rule[batch.rule.index()] += batch.deleted;
    }
}

/// Where a table's purge stands between batches, so that a run can be spread over many
/// transactions and interleaved with other tables.
#[derive(Debug, Clone)]
pub struct Cursor {
    statements: Vec<String>,
    rule: usize,
    lowest_key: String,
}

impl Cursor {
    pub fn new(policy: &Policy) -> Self {
        let statements = match policy.strategy {
            Strategy::DeleteRows => policy
                .rules
                .iter()
                .map(|rule| batch_statement(&policy.quoted_table, rule))
                .collect(),
        };
        let lowest_key = policy
            .rules
            .first()
            .map(|rule| rule.column_kind.lowest_key().to_string())
            .unwrap_or_default();
        Cursor {
            statements,
            rule: 0,
            lowest_key,
        }
    }

    pub fn is_done(&self) -> bool {
        self.rule >= self.statements.len()
    }

    /// Deletes the next batch as the table's owner; None when every rule is done.
    pub fn next_batch(&mut self, policy: &Policy, batch_size: i64) -> GcResult<Option<Batch>> {
        let (Some(rule), Some(statement)) =
            (policy.rules.get(self.rule), self.statements.get(self.rule))
        else {
            return Ok(None);
        };
        let (deleted, last_key) = identity::as_table_owner(policy.owner, || {
            let cutoff = rule.cutoff(&policy.time_zone)?;
            let (deleted, last_key) = Spi::get_two_with_args::<i64, String>(
                statement,
                &[
                    cutoff.into(),
                    self.lowest_key.as_str().into(),
                    batch_size.into(),
                ],
            )?;
            Ok::<_, crate::error::GcError>((deleted.unwrap_or(0), last_key))
        })?;
        if deleted < batch_size {
            // This rule is done: move to the next one, from its lowest key.
            self.rule += 1;
            if let Some(next) = policy.rules.get(self.rule) {
                self.lowest_key = next.column_kind.lowest_key().to_string();
            }
        } else if let Some(key) = last_key {
            self.lowest_key = key;
        }
        Ok(Some(Batch {
            rule: rule.kind,
            deleted,
        }))
    }
}

/// Exact count of rows purgeable now, per rule, each row counted once (under the first rule
/// that matches it), and when the longest-expired of them expired.
#[derive(Debug, Clone, Default)]
pub struct Census {
    pub expired_by_rule: [i64; 4],
    pub oldest_expired: Option<TimestampWithTimeZone>,
}

impl Census {
    pub fn total(&self) -> i64 {
        self.expired_by_rule.iter().sum()
    }
}

/// Counts what `purge` would delete now, without deleting. Each count is served by the
/// rule's own index (the range below the cutoff), never by a scan of the whole table.
pub fn census(policy: &Policy) -> GcResult<Census> {
    identity::as_table_owner(policy.owner, || {
        let count = policy.rules.len();
        let mut cutoffs: Vec<Option<String>> = Vec::with_capacity(count);
        for rule in &policy.rules {
            cutoffs.push(rule.cutoff(&policy.time_zone)?);
        }
        let mut census = Census::default();
        // Parameters: $1..$n the rules' cutoffs, then this rule's lifetime, then the zone.
        let lifetime_param = count + 1;
        let zone_param = count + 2;
        for (position, rule) in policy.rules.iter().enumerate() {
            let mut conditions = vec![rule.predicate("s", position + 1)];
            for (earlier_position, earlier) in policy.rules[..position].iter().enumerate() {
                conditions.push(format!(
                    "NOT coalesce({}, false)",
                    earlier.predicate("s", earlier_position + 1)
                ));
            }
            let oldest = if rule.is_ordered() {
                rule.expiry_moment_sql(
                    &format!("min(s.{})", rule.quoted_column()),
                    lifetime_param,
                    zone_param,
                )
            } else {
                "NULL::timestamptz".to_string()
            };
            let sql = format!(
                "SELECT count(*)::int8, {oldest} FROM {table} s WHERE {conditions}",
                table = policy.quoted_table,
                conditions = conditions.join(" AND "),
            );
            let mut args: Vec<pgrx::datum::DatumWithOid> =
                cutoffs.iter().map(|c| c.clone().into()).collect();
            args.push(rule.lifetime.as_str().into());
            args.push(policy.time_zone.as_str().into());
            let (expired, oldest) =
                Spi::get_two_with_args::<i64, TimestampWithTimeZone>(&sql, &args)?;
            census.expired_by_rule[rule.kind.index()] = expired.unwrap_or(0);
            if let Some(oldest) = oldest {
                if census.oldest_expired.is_none_or(|current| oldest < current) {
                    census.oldest_expired = Some(oldest);
                }
            }
        }
        Ok(census)
    })
}
