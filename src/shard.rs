//! The purge of one shard of a Citus table, on the node holding it: what the coordinator's
//! purge asks of each node (`engine/shards.rs`), one call per shard and round.
//!
//! `session_gc.purge_shard` is a procedure, so that it commits each batch: it calls
//! `purge_shard_step` for a batch at a time, committing in between, for about the time it is
//! given, and answers where the shard's walk stands and what it deleted. Each step takes the
//! policy as the coordinator sent it, checks it against the shard as it is here (a row filter
//! is analyzed again, as the shard's owner), and runs the batch as that owner, like a purge of a
//! local table. Only a role with the shard owner's privileges may call it: it deletes nothing
//! that role could not delete with a DELETE of its own.

use crate::citus;
use crate::engine::RowsWalk;
use crate::error::{GcError, GcResult, OrRaise};
use crate::identity;
use crate::policy::{table_info, Policy, RULE_KINDS};
use crate::{schema, sql, txn};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where one call of `purge_shard` stands between its steps, and what it answers the
/// coordinator (`engine/shards.rs` reads it back).
#[derive(Debug, Default)]
pub struct CallState {
    /// Where the shard's walk stands (`RowsWalk::position`).
    pub position: Option<String>,
    pub deleted: [i64; RULE_KINDS],
    batches: i64,
    /// The shard's walk is done.
    pub done: bool,
    /// This node no longer holds the shard.
    pub moved: bool,
    started_ms: f64,
}

impl CallState {
    fn to_json(&self) -> String {
        serde_json::json!({
            "position": self.position,
            "deleted": self.deleted,
            "batches": self.batches,
            "done": self.done,
            "moved": self.moved,
            "started_ms": self.started_ms,
        })
        .to_string()
    }

    pub fn from_json(text: &str) -> GcResult<Self> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|_| {
            GcError::invalid_parameter("the state of purge_shard is not valid")
                .detail(format!("It was: {text}"))
        })?;
        let mut state = CallState {
            position: value
                .get("position")
                .and_then(|p| p.as_str())
                .map(str::to_string),
            batches: value.get("batches").and_then(|b| b.as_i64()).unwrap_or(0),
            done: value.get("done").and_then(|d| d.as_bool()).unwrap_or(false),
            moved: value
                .get("moved")
                .and_then(|m| m.as_bool())
                .unwrap_or(false),
            started_ms: value
                .get("started_ms")
                .and_then(|s| s.as_f64())
                .unwrap_or(0.0),
            ..CallState::default()
        };
        if let Some(counts) = value.get("deleted").and_then(|d| d.as_array()) {
            for (slot, count) in state.deleted.iter_mut().zip(counts) {
                *slot = count.as_i64().unwrap_or(0);
            }
        }
        Ok(state)
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// One step of `purge_shard`: one batch on the shard, from where `state` (None: the call's
/// first step, starting at `start_position`) says the call stands. NULL when the call is over:
/// the walk is done, the shard moved away, or the call's time is up.
#[pg_extern(
    volatile,
    parallel_unsafe,
    sql = r#"
CREATE FUNCTION session_gc.purge_shard_step(shard regclass, shard_id bigint, policies text,
                                            start_position text, state text,
                                            batch_size integer, max_runtime_ms integer)
RETURNS text LANGUAGE c AS 'MODULE_PATHNAME', 'purge_shard_step_wrapper';
COMMENT ON FUNCTION session_gc.purge_shard_step(regclass, bigint, text, text, text, integer, integer) IS
    'One batch of session_gc.purge_shard (called by it)';
CREATE PROCEDURE session_gc.purge_shard(shard regclass, shard_id bigint, policies text,
                                        start_position text, batch_size integer,
                                        max_runtime_ms integer, INOUT result text DEFAULT NULL)
LANGUAGE plpgsql AS $body$
DECLARE
    step pg_catalog.text;
BEGIN
    LOOP
        step := session_gc.purge_shard_step(shard, shard_id, policies, start_position, result,
                                            batch_size, max_runtime_ms);
        EXIT WHEN step IS NULL;
        result := step;
        COMMIT;
    END LOOP;
END
$body$;
COMMENT ON PROCEDURE session_gc.purge_shard(regclass, bigint, text, text, integer, integer, text) IS
    'Purge one shard of a Citus table on this node, in committed batches (called by the coordinator''s purge)';
"#
)]
fn purge_shard_step(
    shard: Option<pg_sys::Oid>,
    shard_id: Option<i64>,
    policies: Option<&str>,
    start_position: Option<&str>,
    state: Option<&str>,
    batch_size: Option<i32>,
    max_runtime_ms: Option<i32>,
) -> Option<String> {
    step(
        shard,
        shard_id,
        policies,
        start_position,
        state,
        batch_size,
        max_runtime_ms,
    )
    .or_raise()
}

fn step(
    shard: Option<pg_sys::Oid>,
    shard_id: Option<i64>,
    policies: Option<&str>,
    start_position: Option<&str>,
    state: Option<&str>,
    batch_size: Option<i32>,
    max_runtime_ms: Option<i32>,
) -> GcResult<Option<String>> {
    schema::require_current()?;
    let (Some(shard), Some(shard_id), Some(policies), Some(batch_size)) =
        (shard, shard_id, policies, batch_size)
    else {
        return Err(GcError::invalid_parameter(
            "purge_shard needs a shard, its id, the policies and a batch size",
        )
        .hint("It is called by session_gc.purge() on the coordinator."));
    };
    crate::api::check_batch_size(batch_size)?;
    let mut state = match state {
        None => CallState {
            position: start_position.map(str::to_string),
            started_ms: now_ms(),
            ..CallState::default()
        },
        Some(text) => CallState::from_json(text)?,
    };
    let out_of_time = state.batches > 0
        && now_ms() - state.started_ms >= f64::from(max_runtime_ms.unwrap_or(0).max(0));
    if state.done || state.moved || out_of_time {
        return Ok(None);
    }
    let (coordinator_now, policies) = payload(policies)?;
    // For this step's transaction (so set outside the pinned contexts, which undo their own):
    // Citus hides shards from reads of pg_class in sessions of its own naming rules.
    txn::try_set_guc(
        "citus.override_table_visibility",
        "off",
        pg_sys::GucAction::GUC_ACTION_LOCAL,
    );
    let policy = checked_policy(shard, &policies)?;
    // As a local purge's batch: committed without waiting for the flush, full pages compressed.
    txn::commit_without_waiting_for_flush();
    txn::compress_wal_of_batch();
    crate::policy::with_clock_ceiling(coordinator_now, || {
        sql::pinned(|| {
            if !identity::as_table_owner(policy.owner, || citus::hold_placement_here(shard_id))? {
                state.moved = true;
                return Ok(Some(state.to_json()));
            }
            let mut walk = match &state.position {
                None => RowsWalk::start(&policy)?,
                Some(position) => RowsWalk::resume(&policy, position)?,
            };
            if let Some(batch) = walk.next_batch(&policy, i64::from(batch_size))? {
                for (total, deleted) in state.deleted.iter_mut().zip(batch.deleted_by_rule) {
                    *total += deleted;
                }
                state.batches += 1;
            }
            state.done = walk.is_done();
            state.position = Some(walk.position());
            Ok(Some(state.to_json()))
        })
    })
}

thread_local! {
    /// The last shard checked and its policy, while its table's catalog row is unchanged: the
    /// steps of one call (and the next calls on this backend) need not check it again.
    static CHECKED: std::cell::RefCell<Option<(CheckedKey, Policy)>> =
        const { std::cell::RefCell::new(None) };
}

/// What a check holds for: the shard, its catalog row's version, the caller, the policies.
#[derive(PartialEq, Eq)]
struct CheckedKey {
    shard: pg_sys::Oid,
    table_version: String,
    caller: pg_sys::Oid,
    policies: String,
}

/// The shard's policy, once the caller is found to have its owner's privileges and the shard
/// to be a table of this node; kept while the table's catalog row (its name, owner, columns'
/// types) is unchanged.
fn checked_policy(shard: pg_sys::Oid, policies: &str) -> GcResult<Policy> {
    sql::pinned(|| {
        let key = CheckedKey {
            shard,
            table_version: sql::one_kept::<String>(
                "SELECT c.xmin::text FROM pg_catalog.pg_class c WHERE c.oid = $1",
                &[shard.into()],
            )?
            .unwrap_or_default(),
            caller: identity::current_user(),
            policies: policies.to_string(),
        };
        let kept = CHECKED.with(|checked| {
            checked
                .borrow()
                .as_ref()
                .filter(|(checked, _)| *checked == key)
                .map(|(_, policy)| policy.clone())
        });
        if let Some(policy) = kept {
            return Ok(policy);
        }
        let info = table_info(shard)?;
        if !identity::acts_as(info.owner) {
            return Err(GcError::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied to purge \"{}\"", info.display_name),
            )
            .detail("Only a role with the privileges of the shard's owner may purge it.")
            .hint("The coordinator's purge calls this as the table's owner."));
        }
        // A shard is a table of this node; a Citus table here would take the purge through
        // Citus again, where a batch is not bounded.
        if citus::location(shard)? != citus::Location::Local {
            return Err(GcError::new(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("\"{}\" is a Citus table, not a shard", info.display_name),
            )
            .hint("Purge the distributed table through session_gc.purge() on the coordinator."));
        }
        let policy = Policy::for_shard(shard, policies)?;
        CHECKED.with(|checked| *checked.borrow_mut() = Some((key, policy.clone())));
        Ok(policy)
    })
}

/// The coordinator's payload: its clock when it sent the call (a TimestampTz) and the policies.
fn payload(text: &str) -> GcResult<(pg_sys::TimestampTz, String)> {
    let bad = || {
        GcError::invalid_parameter("the policies sent to purge_shard are not valid")
            .hint("It is called by session_gc.purge() on the coordinator.")
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
    let now = value
        .get("now")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(bad)?;
    let policies = value.get("policies").ok_or_else(bad)?.to_string();
    Ok((now, policies))
}
