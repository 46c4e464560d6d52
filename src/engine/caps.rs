//! The walk over the per-user cap: the sessions beyond each user's newest `max_per_user`.

use super::{retrying_moved_rows, Batch};
use crate::error::{GcError, GcResult};
use crate::identity;
use crate::policy::{Policy, RuleKind, UserCap};
use crate::sql;

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
    pub(super) fn new(policy: &Policy, cap: &UserCap) -> Self {
        CapWalk {
            first: cap_statement(policy, cap, None),
            after: cap_statement(policy, cap, Some(">")),
            from: cap_statement(policy, cap, Some(">=")),
            start: None,
            done: false,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    pub(super) fn next_batch(
        &mut self,
        policy: &Policy,
        batch_size: i64,
    ) -> GcResult<Option<Batch>> {
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
