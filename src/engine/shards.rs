//! The walk of a Citus table's shards, driven from the coordinator: each shard is purged on the
//! node holding it, by that node's `session_gc.purge_shard` (a walk of the shard's heap or
//! indexes, in batches committed there, rules checked by each DELETE), under the policy the
//! coordinator sends with every call. A round sends one call to each node at once, for its
//! shard that has had the fewest turns, and each call purges for about `SLICE_MS`; the
//! coordinator keeps where each shard's walk stands.
//!
//! Placements are listed again every round: a shard moved to another node starts over there
//! (the node it left answers that it no longer holds it), a split shard's parts are walked
//! instead of it. A node that cannot be reached fails only its own shards: each is tried again
//! with a growing pause, then given up with the reason, and the run ends in error once every
//! other shard is done.

use super::Batch;
use crate::citus::{self, Placement};
use crate::error::{GcError, GcResult};
use crate::identity;
use crate::policy::Policy;
use crate::schema::LIBRARY_VERSION;
use crate::shard::CallState;
use pgrx::spi::quote_literal;
use pgrx::PgSqlErrorCode;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long one call on a shard's node purges, in batches committed there: long enough that
/// connecting costs little, short enough that a round (and the coordinator's transaction
/// around it) stays short.
const SLICE_MS: i32 = 400;

/// How often a shard whose node fails is tried within a run, and the pause before the second
/// try (doubled for each next one).
const SHARD_ATTEMPTS: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The longest the coordinator waits in one round for a shard's next try.
const LONGEST_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct ShardState {
    placement: Placement,
    /// Where the shard's walk stands (from its node); None: from the start.
    position: Option<String>,
    done: bool,
    turns: u64,
    attempts: u32,
    retry_at: Option<Instant>,
    /// Why the shard was given up.
    error: Option<String>,
}

impl ShardState {
    fn new(placement: Placement) -> Self {
        ShardState {
            placement,
            position: None,
            done: false,
            turns: 0,
            attempts: 0,
            retry_at: None,
            error: None,
        }
    }

    fn ready(&self, now: Instant) -> bool {
        !self.done && self.retry_at.is_none_or(|at| at <= now)
    }

    /// A try that failed: tried again after a growing pause, or given up with `why`.
    fn fail(&mut self, why: String) {
        self.attempts += 1;
        if self.attempts >= SHARD_ATTEMPTS {
            self.done = true;
            self.error = Some(why);
        } else {
            self.retry_at = Some(Instant::now() + FIRST_RETRY * 2u32.pow(self.attempts - 1));
        }
    }
}

#[derive(Debug, Clone)]
pub struct ShardWalk {
    shipped: String,
    shards: BTreeMap<i64, ShardState>,
    listed: bool,
    /// Nodes found to have this session_gc, this run.
    checked_nodes: BTreeSet<(String, i32)>,
}

impl ShardWalk {
    pub fn new(policy: &Policy) -> Self {
        ShardWalk {
            shipped: policy.shipped(),
            shards: BTreeMap::new(),
            listed: false,
            checked_nodes: BTreeSet::new(),
        }
    }

    /// Done once every shard is purged; a shard given up keeps the walk open until its error
    /// is reported.
    pub fn is_done(&self) -> bool {
        self.listed
            && self
                .shards
                .values()
                .all(|shard| shard.done && shard.error.is_none())
    }

    pub fn next_batch(&mut self, policy: &Policy, batch_size: i64) -> GcResult<Option<Batch>> {
        self.follow_placements(policy)?;
        if self.shards.values().all(|shard| shard.done) {
            return match self.failures() {
                Some(error) => Err(error),
                None => Ok(None),
            };
        }
        let now = Instant::now();
        let chosen = self.one_shard_per_node(now);
        if chosen.is_empty() {
            // Every shard left waits for its next try.
            let next = self
                .shards
                .values()
                .filter(|shard| !shard.done)
                .filter_map(|shard| shard.retry_at)
                .min()
                .unwrap_or(now);
            std::thread::sleep(next.saturating_duration_since(now).min(LONGEST_WAIT));
            pgrx::check_for_interrupts!();
            return Ok(Some(Batch::default()));
        }
        let chosen = self.on_checked_nodes(policy, chosen)?;
        // The coordinator's clock: no node computes a cutoff later than it.
        let now = unsafe { pgrx::pg_sys::GetCurrentTransactionStartTimestamp() };
        let commands: Vec<(&Placement, String)> = chosen
            .iter()
            .filter_map(|id| self.shards.get(id))
            .map(|shard| (&shard.placement, self.command(shard, batch_size, now)))
            .collect();
        // As the table's owner, restricted: whatever a node runs under the name of
        // session_gc.purge_shard runs with the owner's rights only, never the worker's.
        let outcomes = identity::as_table_owner(policy.owner, || citus::run_on_nodes(&commands))?;
        let mut batch = Batch::default();
        for (id, outcome) in chosen.iter().zip(outcomes) {
            let Some(shard) = self.shards.get_mut(id) else {
                continue;
            };
            shard.turns += 1;
            let answer = outcome.and_then(|result| {
                let text = result.ok_or("the shard's node answered nothing")?;
                CallState::from_json(&text).map_err(|error| error.to_string())
            });
            match answer {
                Ok(step) => {
                    for (total, deleted) in batch.deleted_by_rule.iter_mut().zip(step.deleted) {
                        *total += deleted;
                    }
                    if step.moved {
                        // Its node no longer holds it: the next listing says where it went.
                        // (A listing that keeps naming that node counts as a failure.)
                        shard.position = None;
                        shard.fail("the node does not hold the shard, although Citus's metadata on the coordinator says it does".into());
                    } else {
                        shard.attempts = 0;
                        shard.retry_at = None;
                        shard.position = step.position;
                        shard.done = step.done;
                    }
                }
                Err(why) => shard.fail(why),
            }
        }
        Ok(Some(batch))
    }

    /// Lists the table's placements again: a shard placed elsewhere than last round starts
    /// over there; shards that are gone (split) are dropped, new ones (their parts) added.
    fn follow_placements(&mut self, policy: &Policy) -> GcResult<()> {
        let placements = citus::placements(policy.relid)?;
        let mut shards = BTreeMap::new();
        for placement in placements {
            let state = match self.shards.remove(&placement.shard_id) {
                Some(mut state) if state.placement.placement_id == placement.placement_id => {
                    state.placement = placement;
                    state
                }
                _ => ShardState::new(placement),
            };
            shards.insert(state.placement.shard_id, state);
        }
        self.shards = shards;
        self.listed = true;
        Ok(())
    }

    /// For each node, its ready shard with the fewest turns.
    fn one_shard_per_node(&self, now: Instant) -> Vec<i64> {
        let mut per_node: BTreeMap<(&str, i32), (u64, i64)> = BTreeMap::new();
        for (id, shard) in &self.shards {
            if !shard.ready(now) {
                continue;
            }
            let node = (
                shard.placement.node_name.as_str(),
                shard.placement.node_port,
            );
            let candidate = (shard.turns, *id);
            per_node
                .entry(node)
                .and_modify(|best| *best = (*best).min(candidate))
                .or_insert(candidate);
        }
        per_node.into_values().map(|(_, id)| id).collect()
    }

    /// The chosen shards whose nodes have this session_gc: a node is asked once per run (a
    /// node without it would run whatever a role there named session_gc.purge_shard); a shard
    /// on a node that does not answer, or answers another version, fails its try.
    fn on_checked_nodes(&mut self, policy: &Policy, chosen: Vec<i64>) -> GcResult<Vec<i64>> {
        let unchecked: Vec<Placement> = chosen
            .iter()
            .filter_map(|id| self.shards.get(id))
            .map(|shard| shard.placement.clone())
            .filter(|p| {
                !self
                    .checked_nodes
                    .contains(&(p.node_name.clone(), p.node_port))
            })
            .collect();
        if unchecked.is_empty() {
            return Ok(chosen);
        }
        let query = "SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'session_gc'";
        let commands: Vec<(&Placement, String)> =
            unchecked.iter().map(|p| (p, query.to_string())).collect();
        let answers = identity::as_table_owner(policy.owner, || citus::run_on_nodes(&commands))?;
        let mut refused = Vec::new();
        for (placement, answer) in unchecked.iter().zip(answers) {
            match answer {
                Ok(Some(version)) if version == LIBRARY_VERSION => {
                    self.checked_nodes
                        .insert((placement.node_name.clone(), placement.node_port));
                }
                Ok(found) => refused.push((
                    placement.shard_id,
                    format!(
                        "session_gc {LIBRARY_VERSION} is not installed on the node (found: {})",
                        found.as_deref().unwrap_or("none")
                    ),
                )),
                Err(why) => refused.push((placement.shard_id, why)),
            }
        }
        for (id, why) in &refused {
            if let Some(shard) = self.shards.get_mut(id) {
                shard.turns += 1;
                shard.fail(why.clone());
            }
        }
        Ok(chosen
            .into_iter()
            .filter(|id| !refused.iter().any(|(refused, _)| refused == id))
            .collect())
    }

    fn command(
        &self,
        shard: &ShardState,
        batch_size: i64,
        now: pgrx::pg_sys::TimestampTz,
    ) -> String {
        let payload = format!("{{\"now\": {now}, \"policies\": {}}}", self.shipped);
        format!(
            "CALL session_gc.purge_shard({table}::pg_catalog.regclass, {id}, {policies}, {position}, {batch_size}, {SLICE_MS}, NULL)",
            table = quote_literal(&shard.placement.shard_table),
            id = shard.placement.shard_id,
            policies = quote_literal(&payload),
            position = shard
                .position
                .as_deref()
                .map(quote_literal)
                .unwrap_or_else(|| "NULL".into()),
        )
    }

    /// The shards given up, with why, as one error.
    fn failures(&self) -> Option<GcError> {
        let failed: Vec<String> = self
            .shards
            .values()
            .filter_map(|shard| {
                shard.error.as_ref().map(|why| {
                    format!(
                        "{} on {}:{}: {}",
                        shard.placement.shard_table,
                        shard.placement.node_name,
                        shard.placement.node_port,
                        why.trim()
                    )
                })
            })
            .collect();
        (!failed.is_empty()).then(|| {
            GcError::new(
                PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
                format!(
                    "{} of {} shards could not be purged",
                    failed.len(),
                    self.shards.len()
                ),
            )
            .detail(failed.join("; "))
            .hint("The other shards were purged. The worker tries the table again after its back-off; check that every node is up and reachable from the coordinator.")
        })
    }
}
