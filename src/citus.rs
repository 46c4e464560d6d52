//! Where a table's rows live when Citus is installed: on this node, or in shards placed on
//! the cluster's nodes. session_gc does not need Citus: without it every table is local.
//!
//! Every read here goes to Citus's own catalog tables (`pg_dist_*`, in `pg_catalog`), never to
//! its views (`citus_shards` asks every node for sizes, and hides extension-owned tables).
//! Commands reach a shard's node through Citus's `master_run_on_worker`, which opens a
//! connection of its own for each, as the current user, and runs it outside this transaction:
//! each commits on its node.

use crate::error::{GcError, GcResult};
use crate::sql;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

/// Where a table's rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// In this database: a table Citus does not know.
    Local,
    /// In shards, each with one placement (hash-distributed, single-shard distributed and
    /// Citus local tables): each placement is purged on its node, on its own.
    Sharded,
    /// A reference table: one shard with a copy on every node. The copies must delete the same
    /// rows at once, so it is purged through Citus from the coordinator, each batch one DELETE
    /// Citus runs on every copy in one distributed transaction.
    Reference,
    /// In shards with a copy on several nodes (a replication factor over one): not purged.
    Replicated,
}

impl Location {
    /// Whether the table's rows are in Citus shards (counted through Citus, not by the planner).
    pub fn is_citus(self) -> bool {
        self != Location::Local
    }
}

/// Whether Citus's metadata is in this database (the extension created here).
fn citus_installed() -> GcResult<bool> {
    Ok(sql::one_kept::<bool>(
        "SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL
            AND EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'citus')",
        &[],
    )?
    .unwrap_or(false))
}

/// Where `relid`'s rows are.
pub fn location(relid: pg_sys::Oid) -> GcResult<Location> {
    if !citus_installed()? {
        return Ok(Location::Local);
    }
    let (kind, copies) = sql::two::<String, i64>(
        "SELECT p.partmethod::text || p.repmodel::text,
                (SELECT max(n) FROM (SELECT count(*) AS n FROM pg_catalog.pg_dist_shard s
                                       JOIN pg_catalog.pg_dist_placement pl USING (shardid)
                                      WHERE s.logicalrelid = p.logicalrelid
                                      GROUP BY s.shardid) per_shard)::int8
           FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = $1::oid::regclass",
        &[relid.into()],
    )?;
    Ok(match kind {
        None => Location::Local,
        // Reference tables: partition method 'n', replication model 't' (two-phase).
        Some(kind) if kind == "nt" => Location::Reference,
        Some(_) if copies.unwrap_or(1) > 1 => Location::Replicated,
        Some(_) => Location::Sharded,
    })
}

/// The error for a table whose shards have copies on several nodes.
pub fn replicated_refused(display_name: &str) -> GcError {
    GcError::new(
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!("session_gc cannot purge {display_name}: its shards have copies on several nodes"),
    )
    .detail(
        "Its shards have more than one placement. The copies must delete the same rows at once; \
         session_gc purges each placement on its own node.",
    )
    .hint(
        "Purge it with a DELETE through the coordinator, or distribute it \
         (create_distributed_table) with one placement per shard.",
    )
}

/// One shard of a table and the node holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub shard_id: i64,
    pub placement_id: i64,
    /// The shard's table on that node, schema-qualified and quoted (Citus's `shard_name`).
    pub shard_table: String,
    pub node_name: String,
    pub node_port: i32,
}

/// The active placements of `relid`'s shards on primary nodes, by shard.
pub fn placements(relid: pg_sys::Oid) -> GcResult<Vec<Placement>> {
    let rows = sql::rows(
        "SELECT s.shardid, pl.placementid,
                pg_catalog.shard_name(s.logicalrelid, s.shardid, false),
                n.nodename::text, n.nodeport
           FROM pg_catalog.pg_dist_shard s
           JOIN pg_catalog.pg_dist_placement pl USING (shardid)
           JOIN pg_catalog.pg_dist_node n ON n.groupid = pl.groupid AND n.noderole = 'primary'
          WHERE s.logicalrelid = $1::oid::regclass AND pl.shardstate = 1
          ORDER BY s.shardid",
        &[relid.into()],
        |row| {
            Ok((
                row.get::<i64>(1)?,
                row.get::<i64>(2)?,
                row.get::<String>(3)?,
                row.get::<String>(4)?,
                row.get::<i32>(5)?,
            ))
        },
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|row| match row {
            (
                Some(shard_id),
                Some(placement_id),
                Some(shard_table),
                Some(node_name),
                Some(port),
            ) => Some(Placement {
                shard_id,
                placement_id,
                shard_table,
                node_name,
                node_port: port,
            }),
            _ => None,
        })
        .collect())
}

/// What a command run on a node returned: its one value, or why it failed there.
pub type Outcome = Result<Option<String>, String>;

/// Runs each command on its node, all at once, each in a connection and a transaction of its
/// own (committed there, whatever this transaction does): one outcome per command, in order.
pub fn run_on_nodes(commands: &[(&Placement, String)]) -> GcResult<Vec<Outcome>> {
    if commands.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = commands.iter().map(|(p, _)| p.node_name.clone()).collect();
    let ports: Vec<i32> = commands.iter().map(|(p, _)| p.node_port).collect();
    let texts: Vec<String> = commands.iter().map(|(_, c)| c.clone()).collect();
    let rows = sql::rows(
        "SELECT r.success, r.result
           FROM pg_catalog.master_run_on_worker($1::text[], $2::int4[], $3::text[], true) r",
        &[names.into(), ports.into(), texts.into()],
        |row| Ok((row.get::<bool>(1)?, row.get::<String>(2)?)),
    )?;
    if rows.len() != commands.len() {
        return Err(GcError::new(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!(
                "Citus answered {} of {} commands sent to the shards' nodes",
                rows.len(),
                commands.len()
            ),
        ));
    }
    Ok(rows
        .into_iter()
        .map(|(success, result)| match success {
            Some(true) => Ok(result),
            _ => Err(result.unwrap_or_else(|| "no answer".into())),
        })
        .collect())
}

/// On the node holding a shard: waits for a move or split of the shard that is finishing (Citus
/// takes this lock to switch placements) and holds it off until this transaction ends, then
/// says whether the shard is still placed here. False: it moved away meanwhile, and rows
/// deleted here would be deleted from a copy about to be dropped.
pub fn hold_placement_here(shard_id: i64) -> GcResult<bool> {
    if !citus_installed()? {
        return Ok(true);
    }
    sql::rows(
        "SELECT pg_catalog.lock_shard_metadata(5, ARRAY[$1::int8])",
        &[shard_id.into()],
        |_| Ok(()),
    )?;
    Ok(sql::one_kept::<bool>(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_local_group)
             OR EXISTS (SELECT 1 FROM pg_catalog.pg_dist_placement pl
                         WHERE pl.shardid = $1 AND pl.shardstate = 1
                           AND pl.groupid = (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g))",
        &[shard_id.into()],
    )?
    .unwrap_or(false))
}
