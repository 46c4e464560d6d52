//! The walk of a Citus reference table, from the coordinator. Its one shard has a copy on every
//! node, and the copies must delete the same rows: each batch is one DELETE through Citus,
//! which runs it on every copy in one distributed transaction, of the first `batch size`
//! expired rows in primary-key order (a choice every copy makes alike, its data being the
//! same), the rules checked again by the DELETE itself. Citus serializes the writes to a
//! reference table, so a batch waits for a row the application holds (at most
//! `session_gc.lock_timeout`, then the run ends in error and the next one goes on): it cannot
//! skip it, as a copy would then skip what another deletes.

use super::{any_expired_sql, cutoff_args, rule_of_sql, Batch};
use crate::error::{GcError, GcResult};
use crate::identity;
use crate::policy::{primary_key, Policy};
use crate::sql;
use pgrx::PgSqlErrorCode;

#[derive(Debug, Clone)]
pub struct ReferenceWalk {
    delete: String,
    done: bool,
}

impl ReferenceWalk {
    pub fn new(policy: &Policy) -> GcResult<Self> {
        let key = primary_key(policy.relid)?.ok_or_else(|| {
            GcError::new(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "a Citus reference table without a primary key cannot be purged",
            )
            .hint("Add a primary key to the table.")
        })?;
        Ok(ReferenceWalk {
            delete: statement(policy, &key),
            done: false,
        })
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn next_batch(&mut self, policy: &Policy, batch_size: i64) -> GcResult<Option<Batch>> {
        if self.done {
            return Ok(None);
        }
        let mut args = cutoff_args(policy)?;
        args.push(batch_size.into());
        let rules = identity::as_table_owner(policy.owner, || {
            sql::rows_written(&self.delete, &args, |row| Ok(row.get::<i32>(1)?))
        })?;
        let mut batch = Batch::default();
        for rule in rules.iter().flatten() {
            if let Some(count) = usize::try_from(*rule)
                .ok()
                .and_then(|rule| batch.deleted_by_rule.get_mut(rule))
            {
                *count += 1;
            }
        }
        self.done = i64::try_from(rules.len()).unwrap_or(i64::MAX) < batch_size;
        Ok(Some(batch))
    }
}

/// Parameters: `$1..$n` the rules' cutoffs, then the batch size.
fn statement(policy: &Policy, key: &[String]) -> String {
    let size = policy.rules.len() + 1;
    let name = &policy.quoted_table;
    let expired = |alias: &str| any_expired_sql(policy, alias);
    let columns = |alias: &str| -> String {
        key.iter()
            .map(|column| format!("{alias}.{column}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "DELETE FROM {name} t
          WHERE ({key_t}) IN (SELECT {key_s} FROM {name} s WHERE {expired_s}
                               ORDER BY {key_s} LIMIT ${size})
            AND {expired_t}
          RETURNING {rule}",
        key_t = columns("t"),
        key_s = columns("s"),
        expired_s = expired("s"),
        expired_t = expired("t"),
        rule = rule_of_sql(policy, "t"),
    )
}
