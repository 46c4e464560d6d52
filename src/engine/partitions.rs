//! The walk over whole expired partitions (`drop_partitions`): each detached, then dropped as a
//! table of its own.

use super::Batch;
use crate::error::{GcError, GcResult};
use crate::identity;
use crate::policy::{Policy, Strategy};
use crate::sql;
use crate::txn;
use pgrx::pg_sys;
use pgrx::spi::quote_identifier;
use pgrx::PgSqlErrorCode;
use std::collections::VecDeque;
use std::time::Instant;

/// How long a detach may wait for a partition's lock before the partition is tried later.
const PARTITION_LOCK_WAIT_MS: i32 = 50;

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
    pub(super) fn new(policy: &Policy) -> GcResult<Self> {
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

    pub(super) fn is_done(&self) -> bool {
        self.expired.is_empty() && self.detached.is_empty()
    }

    /// Drops one detached partition, or else detaches the next expired ones.
    pub(super) fn next_batch(&mut self, policy: &Policy) -> GcResult<Option<Batch>> {
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
