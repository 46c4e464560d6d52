//! The purge engine: how expired rows are removed.
//!
//! Rules come from the policy; this module only walks them in batches, in the rule column's
//! index order, each batch starting after the last key of the previous one (so no batch
//! rescans the index entries earlier batches left dead). A batch first tries the fast path: a
//! plain DELETE of the key range holding the next `batch size` expired rows, under a very short
//! lock timeout. When it meets a row the application holds, it is rolled back and redone with
//! `FOR UPDATE SKIP LOCKED`: held rows are left for the next run. Either way the DELETE itself
//! checks the rule again, so a session extended a moment ago is never deleted.

use crate::error::{GcError, GcResult};
use crate::identity;
use crate::policy::{Cutoff, Policy, Rule, RuleKind, Strategy, UserCap, RULE_KINDS};
use crate::sql;
use crate::txn;
use heap::HeapWalk;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::collections::VecDeque;
use std::time::Instant;

mod heap;

/// What a run did so far.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Rows deleted per rule, indexed by `RuleKind::index()`.
    pub deleted_by_rule: [i64; RULE_KINDS],
    /// Whole partitions dropped (`drop_partitions`); their rows are not counted as deleted.
    pub partitions_dropped: i32,
    pub batches: i32,
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

/// How long a detach may wait for a partition's lock before the partition is tried later.
const PARTITION_LOCK_WAIT_MS: i32 = 50;

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
    fn new(table: &str, rule: &Rule) -> Self {
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
}

impl Walk {
    fn is_done(&self) -> bool {
        match self {
            Walk::Partitions(walk) => walk.is_done(),
            Walk::Index(walk) => walk.is_done(),
            Walk::Heap(walk) => walk.is_done(),
            Walk::Cap(walk) => walk.is_done(),
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
            }
        }
    }
}

/// How many times one run tries to detach a partition whose lock it could not get at once.
const PARTITION_ATTEMPTS: u32 = 3;

/// The partitions whose whole range lies before the cutoff of the rule on the partition key,
/// oldest first, and those already detached and waiting to be dropped.
///
/// A partition goes in two steps, each its own batch: detached (a catalog change, holding the
/// parent's lock only for that and a commit that need not wait for a WAL flush), then dropped as
/// a table of its own. Dropping removes the files at commit, which takes long for a big
/// partition; done after the detach, it holds no lock the application needs. The detached
/// partition is recorded in `session_gc.pending_drops` in the detaching transaction, so a run
/// that stops in between leaves it to the next run rather than behind.
#[derive(Debug, Clone, Default)]
pub struct PartitionWalk {
    /// (partition OID, quoted name, attempts so far)
    expired: VecDeque<(pg_sys::Oid, String, u32)>,
    /// Detached partitions to drop: (OID, schema, name).
    detached: VecDeque<(pg_sys::Oid, String, String)>,
}

impl PartitionWalk {
    fn new(policy: &Policy) -> GcResult<Self> {
        let Strategy::DropPartitions { key_rule } = policy.strategy else {
            return Ok(PartitionWalk::default());
        };
        let Some(rule) = policy.rules.get(key_rule) else {
            return Ok(PartitionWalk::default());
        };
        let ty = rule.column_kind.key_type();
        // The upper bound is exclusive: every row of the partition has key < upper <= cutoff, so
        // every row is expired under the rule. MAXVALUE bounds and the default partition never are.
        let sql = format!(
            "SELECT c.oid, pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
               FROM pg_catalog.pg_inherits i
               JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               CROSS JOIN LATERAL (SELECT pg_catalog.substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid),
                                                              ' TO \\((.*)\\)$') AS raw) r
               CROSS JOIN LATERAL (SELECT CASE
                          WHEN r.raw ~ '^''.*''$'
                               THEN pg_catalog.replace(pg_catalog.substr(r.raw, 2, pg_catalog.length(r.raw) - 2), '''''', '''')
                          WHEN r.raw ~ '^-?[0-9]+$' THEN r.raw END AS upper) b
              WHERE i.inhparent = $2 AND b.upper IS NOT NULL AND b.upper::{ty} <= $1::{ty}
              ORDER BY b.upper::{ty}"
        );
        let expired = identity::as_table_owner(policy.owner, || {
            let cutoff = rule.cutoff()?;
            let found = sql::rows(&sql, &[cutoff.arg(), policy.relid.into()], |row| {
                Ok((row.get::<pg_sys::Oid>(1)?, row.get::<String>(2)?))
            })?;
            Ok::<_, GcError>(
                found
                    .into_iter()
                    .filter_map(|(oid, name)| Some((oid?, name?, 0)))
                    .collect::<VecDeque<_>>(),
            )
        })?;
        let detached = identity::as_extension_owner(|| {
            sql::rows(
                "SELECT relid, schema_name::text, table_name::text FROM session_gc.pending_drops
                  WHERE parent = $1::oid::regclass ORDER BY detached_at",
                &[policy.relid.into()],
                |row| {
                    Ok((
                        row.get::<pg_sys::Oid>(1)?,
                        row.get::<String>(2)?,
                        row.get::<String>(3)?,
                    ))
                },
            )
        })?
        .into_iter()
        .filter_map(|(oid, schema, name)| Some((oid?, schema?, name?)))
        .collect();
        Ok(PartitionWalk { expired, detached })
    }

    fn is_done(&self) -> bool {
        self.expired.is_empty() && self.detached.is_empty()
    }

    /// Drops one detached partition, or else detaches the next expired ones.
    fn next_batch(&mut self, policy: &Policy) -> GcResult<Option<Batch>> {
        if let Some((relid, schema, name)) = self.detached.pop_front() {
            let dropped = drop_detached(policy, relid, &schema, &name)?;
            return Ok(Some(Batch {
                partitions_dropped: i32::from(dropped),
                ..Batch::default()
            }));
        }
        if self.expired.is_empty() {
            return Ok(None);
        }
        self.detach_expired(policy)?;
        Ok(Some(Batch::default()))
    }

    /// Detaches expired partitions, each under a short lock wait, as many as fit in
    /// `PARTITION_BATCH_TIME` (the parent stays locked until the batch commits). A partition
    /// whose lock (or its parent's) cannot be had at once goes to the back of the line, and
    /// after a few tries is left for the next run: the application never queues behind a long
    /// wait.
    fn detach_expired(&mut self, policy: &Policy) -> GcResult<()> {
        let started = Instant::now();
        let mut tried = 0;
        let mut detached_now = 0;
        while let Some((partition, name, attempts)) = self.expired.pop_front() {
            tried += 1;
            match detach_partition(policy, partition) {
                Ok(Some(detached)) => {
                    self.detached.push_back(detached);
                    detached_now += 1;
                }
                Ok(None) => {}
                Err(error) if error.code == PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE => {
                    if attempts + 1 < PARTITION_ATTEMPTS {
                        self.expired.push_back((partition, name, attempts + 1));
                    }
                    // Holding the parent already (from a detach in this batch): commit now
                    // rather than make the application wait behind another lock wait.
                    if detached_now > 0 {
                        break;
                    }
                }
                Err(error) => return Err(error),
            }
            if tried >= PARTITIONS_PER_BATCH || started.elapsed() >= PARTITION_BATCH_TIME {
                break;
            }
        }
        Ok(())
    }
}

/// Most partitions one batch detaches, and how long it keeps adding more.
const PARTITIONS_PER_BATCH: usize = 32;
const PARTITION_BATCH_TIME: std::time::Duration = std::time::Duration::from_millis(50);

/// Detaches one partition of the policy's table and records it for dropping; None when it is no
/// longer attached (one detached by hand since the walk started is somebody's table now).
fn detach_partition(
    policy: &Policy,
    partition: pg_sys::Oid,
) -> GcResult<Option<(pg_sys::Oid, String, String)>> {
    let wait = PARTITION_LOCK_WAIT_MS.min(crate::gucs::lock_timeout_ms());
    txn::in_subtransaction(|| {
        let detached = identity::as_table_owner_waiting(policy.owner, wait, || {
            // Locked by OID, then named from the catalog under the lock: a partition renamed
            // since the walk started is never mistaken for another.
            lock_relation(partition);
            let (schema, table) = sql::two::<String, String>(
                "SELECT max(n.nspname::text), max(c.relname::text)
                   FROM pg_catalog.pg_inherits i
                   JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE i.inhrelid = $1 AND i.inhparent = $2",
                &[partition.into(), policy.relid.into()],
            )?;
            let (Some(schema), Some(table)) = (schema, table) else {
                return Ok(None);
            };
            sql::run(
                &format!(
                    "ALTER TABLE {} DETACH PARTITION {}.{}",
                    policy.quoted_table,
                    quote_identifier(&schema),
                    quote_identifier(&table)
                ),
                &[],
            )?;
            Ok::<_, GcError>(Some((partition, schema, table)))
        })?;
        if let Some((relid, schema, table)) = &detached {
            identity::as_extension_owner(|| {
                sql::run(
                    "INSERT INTO session_gc.pending_drops (relid, parent, schema_name, table_name)
                     VALUES ($1, $2::oid::regclass, $3, $4)",
                    &[
                        (*relid).into(),
                        policy.relid.into(),
                        schema.as_str().into(),
                        table.as_str().into(),
                    ],
                )
            })?;
        }
        Ok(detached)
    })
}

/// Drops a partition detached earlier, if it is still the table that was detached (same OID,
/// schema and name, not attached anywhere again); forgets it either way.
fn drop_detached(policy: &Policy, relid: pg_sys::Oid, schema: &str, name: &str) -> GcResult<bool> {
    txn::in_subtransaction(|| {
        // Locked by OID before it is checked, so what is checked is what is dropped.
        identity::as_table_owner_waiting(policy.owner, crate::gucs::lock_timeout_ms(), || {
            lock_relation(relid)
        });
        let still_ours = sql::one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                             WHERE c.oid = $1 AND n.nspname = $2 AND c.relname = $3
                               AND NOT c.relispartition AND c.relowner = $4)",
            &[
                relid.into(),
                schema.into(),
                name.into(),
                policy.owner.into(),
            ],
        )?;
        let dropped = if still_ours == Some(true) {
            let quoted = format!("{}.{}", quote_identifier(schema), quote_identifier(name));
            identity::as_table_owner_waiting(policy.owner, crate::gucs::lock_timeout_ms(), || {
                sql::run(&format!("DROP TABLE {quoted}"), &[])
            })?;
            true
        } else {
            false
        };
        identity::as_extension_owner(|| {
            sql::run(
                "DELETE FROM session_gc.pending_drops WHERE relid = $1",
                &[relid.into()],
            )
        })?;
        Ok(dropped)
    })
}

/// Takes ACCESS EXCLUSIVE on a relation by OID, waiting at most the current `lock_timeout`.
fn lock_relation(relid: pg_sys::Oid) {
    unsafe { pg_sys::LockRelationOid(relid, pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE) };
}

/// The per-user cap, walked over the users in key order: each batch takes the next users with
/// more than `max_per_user` sessions and deletes, for each, the sessions beyond its newest
/// `max_per_user`.
///
/// The ranking reads the statement's snapshot and locks nothing; only the rows to delete are
/// then locked, `SKIP LOCKED`, and a row changed since the snapshot (a session just touched,
/// which may now rank newest) is neither locked nor deleted. Sessions created meanwhile only
/// make the batch delete fewer.
#[derive(Debug, Clone)]
pub struct CapWalk {
    /// The statements starting at the first user, after a user, and at a user.
    first: String,
    after: String,
    from: String,
    start: Option<(String, bool)>,
    done: bool,
}

impl CapWalk {
    fn new(policy: &Policy, cap: &UserCap) -> Self {
        CapWalk {
            first: cap_statement(policy, cap, None),
            after: cap_statement(policy, cap, Some(">")),
            from: cap_statement(policy, cap, Some(">=")),
            start: None,
            done: false,
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn next_batch(&mut self, policy: &Policy, batch_size: i64) -> GcResult<Option<Batch>> {
        let Some(cap) = &policy.cap else {
            self.done = true;
            return Ok(None);
        };
        if self.done {
            return Ok(None);
        }
        let (statement, key) = match &self.start {
            None => (&self.first, None),
            Some((key, true)) => (&self.from, Some(key.clone())),
            Some((key, false)) => (&self.after, Some(key.clone())),
        };
        let (deleted, resume_key, resume_at_key, more) = retrying_moved_rows(|| {
            identity::as_table_owner_waiting(policy.owner, crate::gucs::lock_timeout_ms(), || {
                // `update`: the statement deletes, so it must not run as a read-only query.
                let rows = sql::rows_written(
                    statement,
                    &[
                        key.clone().into(),
                        cap.max_per_user.into(),
                        batch_size.into(),
                    ],
                    |row| {
                        Ok((
                            row.get::<i64>(1)?.unwrap_or(0),
                            row.get::<String>(2)?,
                            row.get::<bool>(3)?.unwrap_or(false),
                            row.get::<bool>(4)?.unwrap_or(false),
                        ))
                    },
                )?;
                Ok::<_, GcError>(rows.into_iter().last().unwrap_or((0, None, false, false)))
            })
        })?;
        match (more, resume_key) {
            (true, Some(resume)) => {
                // A full batch that deleted nothing at the key it started from met only locked
                // rows there: move past that user rather than try it again.
                let stuck = deleted == 0 && key.as_deref() == Some(resume.as_str());
                self.start = Some((resume, resume_at_key && !stuck));
            }
            _ => self.done = true,
        }
        Ok(Some(Batch::of_rule(RuleKind::OverCap, deleted)))
    }
}

/// The cap's batch statement. `$1` the user key to start after or at (text; unused for the
/// first batch), `$2` max_per_user, `$3` batch size. Returns rows deleted, the key to resume
/// from, whether to resume at that key itself (the batch was cut inside a user), and whether
/// more users may follow.
fn cap_statement(policy: &Policy, cap: &UserCap, start: Option<&str>) -> String {
    let table = &policy.quoted_table;
    let user = cap.quoted_user();
    let rank = cap.quoted_rank();
    let from = match start {
        None => format!("s.{user} IS NOT NULL AND $1::text IS NULL"),
        Some(op) => format!("s.{user} {op} $1::{}", cap.user_type),
    };
    format!(
        "WITH crowded AS MATERIALIZED (
             SELECT s.{user} AS who FROM {table} s WHERE {from}
              GROUP BY s.{user} HAVING count(*) > $2 ORDER BY s.{user} LIMIT $3),
         beyond AS MATERIALIZED (
             SELECT v.rel, v.tid, c.who FROM crowded c CROSS JOIN LATERAL (
                 SELECT s.tableoid AS rel, s.ctid AS tid FROM {table} s WHERE s.{user} = c.who
                  ORDER BY s.{rank} DESC NULLS LAST, s.ctid DESC OFFSET $2) v
              ORDER BY c.who LIMIT $3),
         locked AS MATERIALIZED (
             SELECT s.tableoid AS rel, s.ctid AS tid FROM {table} s JOIN beyond b
                 ON s.tableoid = b.rel AND s.ctid = b.tid
                FOR UPDATE OF s SKIP LOCKED),
         gone AS (
             DELETE FROM {table} t USING locked l
              WHERE t.tableoid = l.rel AND t.ctid = l.tid RETURNING 1)
         SELECT (SELECT count(*) FROM gone)::int8,
                CASE WHEN (SELECT count(*) FROM beyond) >= $3
                     THEN (SELECT who::text FROM beyond ORDER BY who DESC LIMIT 1)
                     ELSE (SELECT who::text FROM crowded ORDER BY who DESC LIMIT 1) END,
                (SELECT count(*) FROM beyond) >= $3,
                (SELECT count(*) FROM beyond) >= $3 OR (SELECT count(*) FROM crowded) >= $3"
    )
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

/// Every rule's cutoff, as `$1..$n` in rule order.
fn cutoff_args(policy: &Policy) -> GcResult<Vec<pgrx::datum::DatumWithOid<'static>>> {
    let mut args = Vec::with_capacity(policy.rules.len() + 2);
    for rule in &policy.rules {
        args.push(rule.cutoff()?.arg());
    }
    Ok(args)
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
    fn new(policy: &Policy) -> Self {
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

    fn is_done(&self) -> bool {
        self.rule >= self.statements.len()
    }

    fn next_batch(&mut self, policy: &Policy, batch_size: i64) -> GcResult<Option<Batch>> {
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

/// Exact count of rows purgeable now, per rule, each row counted once (under the first rule
/// that matches it), and when the longest-expired of them expired.
#[derive(Debug, Clone, Default)]
pub struct Census {
    pub expired_by_rule: [i64; RULE_KINDS],
    pub oldest_expired: Option<TimestampWithTimeZone>,
    /// False when some count is the planner's estimate (`Counting::Estimate`/`Auto`).
    pub exact: bool,
}

/// How `census` counts a rule's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Count every row (dry runs: what a purge would delete now, exactly).
    Exact,
    /// The planner's estimate for the rule's range (from the column's statistics).
    Estimate,
    /// Exact while the planner expects at most `EXACT_COUNT_LIMIT` rows, else the estimate: the
    /// cost of `stats()` and of a metrics scrape stays bounded however large the backlog.
    Auto,
}

/// Up to how many rows `Counting::Auto` counts exactly (about 10 ms of index-only scan).
pub const EXACT_COUNT_LIMIT: f64 = 100_000.0;

impl Census {
    pub fn total(&self) -> i64 {
        self.expired_by_rule.iter().sum()
    }
}

/// Counts what `purge` would delete now, without deleting. Each count is served by the
/// rule's own index (the range below the cutoff), never by a scan of the whole table.
pub fn census(policy: &Policy, counting: Counting) -> GcResult<Census> {
    identity::as_table_owner(policy.owner, || {
        let count = policy.rules.len();
        let mut cutoffs = Vec::with_capacity(count);
        for rule in &policy.rules {
            cutoffs.push(rule.cutoff()?);
        }
        let mut census = Census {
            exact: true,
            ..Census::default()
        };
        // Parameters: $1..$n the rules' cutoffs, then this rule's lifetime, then the zone.
        let lifetime_param = count + 1;
        let zone_param = count + 2;
        for (position, rule) in policy.rules.iter().enumerate() {
            let mut conditions = vec![rule.predicate("s", position + 1)];
            conditions.extend(none_of(&policy.rules[..position]));
            let oldest = if rule.is_ordered() {
                rule.expiry_moment_sql(
                    &format!("min(s.{})", rule.quoted_column()),
                    lifetime_param,
                    zone_param,
                )
            } else {
                "NULL::timestamptz".to_string()
            };
            let conditions = conditions.join(" AND ");
            let table = &policy.quoted_table;
            let mut args: Vec<pgrx::datum::DatumWithOid> =
                cutoffs.iter().map(|cutoff: &Cutoff| cutoff.arg()).collect();
            args.push(rule.lifetime.as_str().into());
            args.push(rule.time_zone.as_str().into());
            let estimate = match counting {
                Counting::Exact => None,
                Counting::Estimate | Counting::Auto => {
                    let rows = sql::planned_rows(
                        &format!("SELECT 1 FROM {table} s WHERE {conditions}"),
                        &args,
                    )?;
                    (counting == Counting::Estimate || rows > EXACT_COUNT_LIMIT).then_some(rows)
                }
            };
            let (expired, oldest) = match estimate {
                // The oldest is still read exactly: the first entry of the rule's index range.
                Some(rows) => (
                    Some(rows.round() as i64),
                    sql::one::<TimestampWithTimeZone>(
                        &format!("SELECT {oldest} FROM {table} s WHERE {conditions}"),
                        &args,
                    )?,
                ),
                None => sql::two::<i64, TimestampWithTimeZone>(
                    &format!("SELECT count(*)::int8, {oldest} FROM {table} s WHERE {conditions}"),
                    &args,
                )?,
            };
            census.exact &= estimate.is_none();
            census.expired_by_rule[rule.kind.index()] += expired.unwrap_or(0);
            if let Some(oldest) = oldest {
                if census.oldest_expired.is_none_or(|current| oldest < current) {
                    census.oldest_expired = Some(oldest);
                }
            }
        }
        if let Some(cap) = &policy.cap {
            // Sessions beyond the cap among those no time rule purges first.
            let mut conditions = vec![format!("s.{} IS NOT NULL", cap.quoted_user())];
            conditions.extend(none_of(&policy.rules));
            let sql = format!(
                "SELECT coalesce(sum(g.n - ${cap_param}), 0)::int8 FROM (
                     SELECT count(*) AS n FROM {table} s WHERE {conditions}
                      GROUP BY s.{user} HAVING count(*) > ${cap_param}) g",
                cap_param = count + 1,
                table = policy.quoted_table,
                conditions = conditions.join(" AND "),
                user = cap.quoted_user(),
            );
            let mut args: Vec<pgrx::datum::DatumWithOid> =
                cutoffs.iter().map(|cutoff: &Cutoff| cutoff.arg()).collect();
            args.push(cap.max_per_user.into());
            census.expired_by_rule[RuleKind::OverCap.index()] =
                sql::one::<i64>(&sql, &args)?.unwrap_or(0);
        }
        Ok(census)
    })
}

/// "None of these rules (the policy's first ones, cutoffs in `$1..`) purges the row aliased
/// `s`", one condition per rule: so a census counts each row under the first rule matching it.
fn none_of(rules: &[Rule]) -> impl Iterator<Item = String> + '_ {
    rules.iter().enumerate().map(|(position, rule)| {
        format!("NOT coalesce({}, false)", rule.predicate("s", position + 1))
    })
}
