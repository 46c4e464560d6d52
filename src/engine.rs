//! The purge engine: how expired rows are removed, in batches, each a walk's next step.
//!
//! Rules come from the policy (which rows are expired); here they are walked in batches. A run
//! goes through stages, each its own walk, in its own file:
//!
//! - `partitions`: whole expired partitions detached and dropped (`drop_partitions`);
//! - `heap`: a large backlog, every page visited once in physical order;
//! - `index`: few expired rows among many, along each rule's index in key order;
//! - `caps`: the per-user cap, over the users in key order;
//! - `shards`: a Citus table's shards, each purged on the node holding it (`crate::shard`);
//! - `reference`: a Citus reference table, through Citus, its copies deleting alike;
//! - `census`: what a purge would delete now, counted without deleting (`stats()`, dry runs).
//!
//! Each walk keeps its batch statements beside it. Every DELETE checks the rules again, so a
//! session extended a moment ago is never deleted; a batch that meets a row the application
//! holds is redone `SKIP LOCKED`, leaving held rows to the next run. Where the batches run
//! (one transaction each, round-robin over tables) is `pass`.

use crate::citus::Location;
use crate::error::{GcError, GcResult};
use crate::policy::{Policy, RuleKind, Strategy, RULE_KINDS};
use crate::txn;
use caps::CapWalk;
use heap::HeapWalk;
use index::IndexWalk;
use partitions::PartitionWalk;
use pgrx::PgSqlErrorCode;
use reference::ReferenceWalk;
use shards::ShardWalk;

mod caps;
mod census;
mod heap;
mod index;
mod partitions;
mod reference;
mod shards;

pub use census::{census, Census, Counting, EXACT_COUNT_LIMIT};

/// What a run did so far.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Rows deleted per rule, indexed by `RuleKind::index()`.
    pub deleted_by_rule: [i64; RULE_KINDS],
    /// Whole partitions dropped (`drop_partitions`); their rows are not counted as deleted.
    pub partitions_dropped: i32,
    pub batches: i32,
    /// Time spent waiting for standbys to replay (`session_gc.max_replica_lag`).
    pub replica_wait: std::time::Duration,
}

impl Progress {
    pub fn deleted(&self) -> i64 {
        self.deleted_by_rule.iter().sum()
    }
}

/// How long a row batch's fast path may wait for a row lock before the batch is redone with
/// `SKIP LOCKED`. Short, because rows the batch already deleted stay locked while it waits, and
/// an application touching one of them waits in turn. An application holds a row for about one
/// of its transactions, so most waits end well within it.
const ROW_LOCK_WAIT_MS: i32 = 10;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Batch {
    /// Rows deleted per rule, indexed by `RuleKind::index()`.
    pub deleted_by_rule: [i64; RULE_KINDS],
    pub partitions_dropped: i32,
}

impl Batch {
    fn of_rule(rule: RuleKind, deleted: i64) -> Self {
        let mut deleted_by_rule = [0; RULE_KINDS];
        deleted_by_rule[rule.index()] = deleted;
        Batch {
            deleted_by_rule,
            partitions_dropped: 0,
        }
    }
}

impl Progress {
    pub fn add(&mut self, batch: &Batch) {
        self.batches += 1;
        self.partitions_dropped += batch.partitions_dropped;
        for (total, deleted) in self.deleted_by_rule.iter_mut().zip(batch.deleted_by_rule) {
            *total += deleted;
        }
    }
}

/// Where a table's purge stands between batches, so that a run can be spread over many
/// transactions and interleaved with other tables.
///
/// A run goes through stages, each a walk built when the previous one is done (so it sees the
/// table as the earlier stages left it): whole expired partitions first (`drop_partitions`),
/// then the time rules' rows, then the per-user cap over what is left.
#[derive(Debug, Clone)]
pub struct Cursor {
    current: Option<Walk>,
    /// Stages not started yet, the next one last.
    pending: Vec<Stage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Partitions,
    Rows,
    Cap,
}

/// The rows of the time rules are walked along the rules' indexes (few expired rows among
/// many: only their index ranges and heap pages are visited), or along the heap in block
/// ranges (many expired rows: each page is visited once, in physical order, as a single
/// DELETE's sequential scan would). The planner's estimates choose: the heap walk is taken when
/// at least `HEAP_WALK_SHARE` of the table is expired.
#[derive(Debug, Clone)]
enum Walk {
    Partitions(PartitionWalk),
    Index(IndexWalk),
    Heap(HeapWalk),
    Cap(CapWalk),
    Shards(ShardWalk),
    Reference(ReferenceWalk),
}

impl Walk {
    fn is_done(&self) -> bool {
        match self {
            Walk::Partitions(walk) => walk.is_done(),
            Walk::Index(walk) => walk.is_done(),
            Walk::Heap(walk) => walk.is_done(),
            Walk::Cap(walk) => walk.is_done(),
            Walk::Shards(walk) => walk.is_done(),
            Walk::Reference(walk) => walk.is_done(),
        }
    }
}

impl Cursor {
    pub fn new(policy: &Policy) -> GcResult<Self> {
        let mut pending = Vec::new();
        if policy.cap.is_some() {
            pending.push(Stage::Cap);
        }
        if !policy.rules.is_empty() {
            pending.push(Stage::Rows);
        }
        if matches!(policy.strategy, Strategy::DropPartitions { .. }) {
            pending.push(Stage::Partitions);
        }
        let mut cursor = Cursor {
            current: None,
            pending,
        };
        cursor.start_next_stage(policy)?;
        Ok(cursor)
    }

    fn start_next_stage(&mut self, policy: &Policy) -> GcResult<()> {
        self.current = match self.pending.pop() {
            None => None,
            Some(Stage::Partitions) => Some(Walk::Partitions(PartitionWalk::new(policy)?)),
            // A Citus table's rows are in its shards, each purged on its node.
            Some(Stage::Rows) if policy.location == Location::Sharded => {
                Some(Walk::Shards(ShardWalk::new(policy)))
            }
            // A reference table's copies delete alike, through Citus.
            Some(Stage::Rows) if policy.location == Location::Reference => {
                Some(Walk::Reference(ReferenceWalk::new(policy)?))
            }
            Some(Stage::Rows) => Some(match HeapWalk::plan(policy)? {
                Some(heap) => Walk::Heap(heap),
                None => Walk::Index(IndexWalk::new(policy)),
            }),
            Some(Stage::Cap) => policy
                .cap
                .as_ref()
                .map(|cap| Walk::Cap(CapWalk::new(policy, cap))),
        };
        Ok(())
    }

    pub fn is_done(&self) -> bool {
        self.pending.is_empty() && self.current.as_ref().is_none_or(Walk::is_done)
    }

    /// Does the next batch as the table's owner; None when every stage is done.
    pub fn next_batch(&mut self, policy: &Policy, batch_size: i64) -> GcResult<Option<Batch>> {
        loop {
            match &mut self.current {
                None => return Ok(None),
                Some(walk) if walk.is_done() => self.start_next_stage(policy)?,
                Some(Walk::Partitions(walk)) => return walk.next_batch(policy),
                Some(Walk::Index(walk)) => return walk.next_batch(policy, batch_size),
                Some(Walk::Heap(walk)) => return walk.next_batch(policy, batch_size),
                Some(Walk::Cap(walk)) => return walk.next_batch(policy, batch_size),
                Some(Walk::Shards(walk)) => return walk.next_batch(policy, batch_size),
                Some(Walk::Reference(walk)) => return walk.next_batch(policy, batch_size),
            }
        }
    }
}

/// The walk of a table's time rules on this node, carried between calls as text: a shard's
/// walk, one call of its node's `purge_shard` after the other, the coordinator keeping where
/// it stands.
pub struct RowsWalk(Walk);

impl RowsWalk {
    /// A walk from the start, along the heap or the rules' indexes as for a local table.
    pub fn start(policy: &Policy) -> GcResult<Self> {
        Ok(RowsWalk(match HeapWalk::plan(policy)? {
            Some(heap) => Walk::Heap(heap),
            None => Walk::Index(IndexWalk::new(policy)),
        }))
    }

    /// The walk from where `position` (from `position()`) says it stood.
    pub fn resume(policy: &Policy, position: &str) -> GcResult<Self> {
        let bad = || {
            GcError::invalid_parameter(format!("{position} is not a position of a purge"))
                .hint("Pass NULL to start from the beginning.")
        };
        let value: serde_json::Value = serde_json::from_str(position).map_err(|_| bad())?;
        let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_string);
        Ok(RowsWalk(match text("walk").as_deref() {
            Some("heap") => Walk::Heap(HeapWalk::resume(
                policy,
                text("after").ok_or_else(bad)?,
                text("end").ok_or_else(bad)?,
            )?),
            Some("index") => {
                let rule = value
                    .get("rule")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|rule| usize::try_from(rule).ok())
                    .filter(|rule| *rule <= policy.rules.len())
                    .ok_or_else(bad)?;
                Walk::Index(IndexWalk::resume(policy, rule, text("key")))
            }
            _ => return Err(bad()),
        }))
    }

    /// Where the walk stands, for `resume`.
    pub fn position(&self) -> String {
        match &self.0 {
            Walk::Heap(walk) => {
                let (after, end) = walk.position();
                serde_json::json!({"walk": "heap", "after": after, "end": end})
            }
            Walk::Index(walk) => {
                let (rule, key) = walk.position();
                serde_json::json!({"walk": "index", "rule": rule, "key": key})
            }
            _ => serde_json::Value::Null,
        }
        .to_string()
    }

    pub fn is_done(&self) -> bool {
        self.0.is_done()
    }

    /// Does the next batch as the table's owner; None when the walk is done.
    pub fn next_batch(&mut self, policy: &Policy, batch_size: i64) -> GcResult<Option<Batch>> {
        match &mut self.0 {
            Walk::Heap(walk) => walk.next_batch(policy, batch_size),
            Walk::Index(walk) => walk.next_batch(policy, batch_size),
            _ => Ok(None),
        }
    }
}

/// Whether a fast-path batch met the application: a row lock held past the short wait, or (in a
/// partitioned table) a row that a concurrent update moved to another partition. Either way the
/// batch is redone lock-skipping.
fn is_contention(error: &GcError) -> bool {
    error.code == PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE
        || error.code == PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE
}

/// How often a lock-skipping batch is rerun after meeting a row moved to another partition.
const MOVED_ROW_RETRIES: u32 = 3;

/// Runs a lock-skipping batch in a subtransaction, and again (a new statement, a new snapshot)
/// when it met a row that a concurrent update of the partition key moved to another partition:
/// PostgreSQL cannot lock such a row in place, even with SKIP LOCKED.
fn retrying_moved_rows<R>(mut batch: impl FnMut() -> GcResult<R>) -> GcResult<R> {
    let mut attempt = 0;
    loop {
        match txn::in_subtransaction(&mut batch) {
            Err(error)
                if error.code == PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE
                    && attempt < MOVED_ROW_RETRIES =>
            {
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// "Some rule of the policy purges the row aliased `alias`" (cutoffs in `$1..`), each rule's
/// predicate wrapped in `coalesce(..., false)`: NULL is no, and no index matches a predicate so
/// wrapped, so a scan filtered by it keeps its own order (the heap walk's physical order).
fn any_expired_sql(policy: &Policy, alias: &str) -> String {
    let each: Vec<String> = policy
        .rules
        .iter()
        .enumerate()
        .map(|(position, rule)| format!("coalesce({}, false)", rule.predicate(alias, position + 1)))
        .collect();
    format!("({})", each.join(" OR "))
}

/// The index (`RuleKind::index()`) of the first rule that purges the row aliased `alias`: a
/// constant for a policy of one rule.
fn rule_of_sql(policy: &Policy, alias: &str) -> String {
    if let [rule] = policy.rules.as_slice() {
        return rule.kind.index().to_string();
    }
    let whens: Vec<String> = policy
        .rules
        .iter()
        .enumerate()
        .map(|(position, rule)| {
            format!(
                "WHEN coalesce({}, false) THEN {}",
                rule.predicate(alias, position + 1),
                rule.kind.index()
            )
        })
        .collect();
    format!("CASE {} END", whens.join(" "))
}

/// Every rule's cutoff, as `$1..$n` in rule order.
fn cutoff_args(policy: &Policy) -> GcResult<Vec<pgrx::datum::DatumWithOid<'static>>> {
    let mut args = Vec::with_capacity(policy.rules.len() + 2);
    for rule in &policy.rules {
        args.push(rule.cutoff()?.arg());
    }
    Ok(args)
}
