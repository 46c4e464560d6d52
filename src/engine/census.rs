//! What a purge would delete now, counted without deleting: `stats()`, `metrics()` and dry
//! runs. Each count is served by the rule's own index.

use crate::error::GcResult;
use crate::identity;
use crate::policy::{Cutoff, Policy, Rule, RuleKind, RULE_KINDS};
use crate::sql;
use pgrx::datum::TimestampWithTimeZone;

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
    // The planner's estimates for a Citus table are not its rows': its shards count exactly,
    // in parallel.
    let counting = if policy.location.is_citus() {
        Counting::Exact
    } else {
        counting
    };
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
