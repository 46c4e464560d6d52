//! The policy model: which rows of a table are expired.
//!
//! A `Policy` is what `session_gc.policies` says of one table (its rows, one per policy name,
//! merged), checked against the table as it is now. Each configured rule becomes a `Rule`, with
//! its policy's row filter (`row_filter`), that knows how to compute its cutoff in the column's
//! own type and how to write "this row is expired" without wrapping the column in a function,
//! so every rule keeps its index. A per-user cap (`UserCap`) says which rows are one too many
//! for their user. How the rows are then removed (row deletes, or whole partitions dropped:
//! `Strategy`) is the engine's business.

use crate::citus::{self, Location};
use crate::error::{GcError, GcResult};
use crate::frameworks;
use crate::identity;
use crate::row_filter::RowFilter;
use crate::sql;
use pgrx::datum::{Date, Timestamp, TimestampWithTimeZone};
use pgrx::spi::{quote_identifier, quote_literal};
use pgrx::{pg_sys, PgSqlErrorCode};
use std::rc::Rc;

/// The reasons a session row can be purgeable, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// `expires_column < now() - grace`
    Expires,
    /// `idle_column + idle_timeout < now() - grace`
    Idle,
    /// `created_column + max_age < now() - grace`
    Aged,
    /// `active_column` is false
    Inactive,
    /// beyond the newest `max_per_user` sessions of its user
    OverCap,
}

/// How many `RuleKind`s there are: the length of per-rule counters.
pub const RULE_KINDS: usize = 5;

impl RuleKind {
    /// Position in per-rule counters and result columns.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            RuleKind::Expires => "expires",
            RuleKind::Idle => "idle",
            RuleKind::Aged => "max age",
            RuleKind::Inactive => "inactive",
            RuleKind::OverCap => "max per user",
        }
    }

    fn parameter(self) -> &'static str {
        match self {
            RuleKind::Expires => "expires_column",
            RuleKind::Idle => "idle_column",
            RuleKind::Aged => "created_column",
            RuleKind::Inactive => "active_column",
            RuleKind::OverCap => "activity_column",
        }
    }
}

/// How a column holds time (or activity), which decides how its cutoff is expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Timestamptz,
    /// A naive timestamp, read in the policy's time zone.
    Timestamp,
    /// A day; a session is treated as valid through the whole day, so purges stay conservative.
    Date,
    EpochSeconds,
    EpochMillis,
    Boolean,
}

impl ColumnKind {
    /// Whether the column holds a wall-clock time (or day) that means nothing without a zone.
    pub fn is_naive(self) -> bool {
        matches!(self, ColumnKind::Timestamp | ColumnKind::Date)
    }

    /// The column's type as a DBA reads it in `\d`.
    pub fn type_name(self) -> &'static str {
        match self {
            ColumnKind::Timestamptz => "timestamp with time zone",
            ColumnKind::Timestamp => "timestamp without time zone",
            ColumnKind::Date => "date",
            ColumnKind::EpochSeconds => "epoch seconds",
            ColumnKind::EpochMillis => "epoch milliseconds",
            ColumnKind::Boolean => "boolean",
        }
    }

    /// The SQL type cutoffs and keys are cast to when compared with the column.
    pub fn key_type(self) -> &'static str {
        match self {
            ColumnKind::Timestamptz => "pg_catalog.timestamptz",
            ColumnKind::Timestamp => "pg_catalog.timestamp",
            ColumnKind::Date => "pg_catalog.date",
            ColumnKind::EpochSeconds | ColumnKind::EpochMillis => "pg_catalog.int8",
            ColumnKind::Boolean => "pg_catalog.bool",
        }
    }

    /// The smallest key, where a keyset scan starts.
    pub fn lowest_key(self) -> &'static str {
        match self {
            ColumnKind::EpochSeconds | ColumnKind::EpochMillis => "-9223372036854775808",
            _ => "-infinity",
        }
    }

    /// SQL turning a column value into the moment it stands for, with `$zone` as the zone parameter.
    fn moment_sql(self, value: &str, zone: &str) -> String {
        match self {
            ColumnKind::Timestamptz => value.to_string(),
            ColumnKind::Timestamp => format!("({value} AT TIME ZONE {zone})"),
            ColumnKind::Date => format!("({value}::timestamp AT TIME ZONE {zone})"),
            ColumnKind::EpochSeconds => format!("to_timestamp({value})"),
            ColumnKind::EpochMillis => format!("to_timestamp({value} / 1000.0)"),
            ColumnKind::Boolean => "NULL::timestamptz".to_string(),
        }
    }
}

/// A rule's cutoff, in the column's own type. It is bound as a typed parameter: a text parameter
/// cast in the SQL is a stable cast, so a filter would parse it again for every row it checks.
#[derive(Debug, Clone, Copy)]
pub enum Cutoff {
    Timestamptz(TimestampWithTimeZone),
    Timestamp(Timestamp),
    Date(Date),
    Epoch(i64),
    /// Boolean rules have no cutoff (bound as NULL, never read).
    None,
}

impl Cutoff {
    /// The cutoff as a statement parameter.
    pub fn arg(self) -> pgrx::datum::DatumWithOid<'static> {
        match self {
            Cutoff::Timestamptz(value) => value.into(),
            Cutoff::Timestamp(value) => value.into(),
            Cutoff::Date(value) => value.into(),
            Cutoff::Epoch(value) => value.into(),
            Cutoff::None => Option::<bool>::None.into(),
        }
    }
}

/// One expiry rule of a policy, resolved against the table.
#[derive(Debug, Clone)]
pub struct Rule {
    pub kind: RuleKind,
    /// The column name as stored (unquoted).
    pub column: String,
    pub column_kind: ColumnKind,
    /// How far before now() the cutoff lies: timeout/max age plus grace (text interval).
    pub cutoff_offset: String,
    /// How long after the column's moment a row expires: timeout or max age (text interval).
    pub lifetime: String,
    /// The zone a naive column is read in: its policy's.
    pub time_zone: String,
    /// The rows the rule's policy is about; None: every row.
    pub filter: Option<Rc<RowFilter>>,
}

impl Rule {
    pub fn quoted_column(&self) -> String {
        quote_identifier(&self.column)
    }

    /// "this row is expired" for a row aliased `alias`, with the cutoff in parameter `$param`:
    /// the rule's condition, and its policy's row filter.
    pub fn predicate(&self, alias: &str, param: usize) -> String {
        let column = format!("{alias}.{}", self.quoted_column());
        let condition = match self.column_kind {
            ColumnKind::Boolean => format!("{column} = false"),
            kind => format!("{column} < ${param}::{}", kind.key_type()),
        };
        match &self.filter {
            Some(filter) => format!("({} AND {condition})", filter.sql(alias)),
            None => condition,
        }
    }

    /// The rule in words, for register()'s answer.
    pub fn describe(&self) -> String {
        match &self.filter {
            Some(filter) => format!("{} where {}", self.describe_condition(), filter.text.trim()),
            None => self.describe_condition(),
        }
    }

    fn describe_condition(&self) -> String {
        match self.kind {
            RuleKind::Inactive => format!("{} is false", self.quoted_column()),
            _ if self.cutoff_offset == "00:00:00" => format!("{} < now()", self.quoted_column()),
            _ => format!(
                "{} < now() - '{}'",
                self.quoted_column(),
                self.cutoff_offset
            ),
        }
    }

    /// Whether batches walk this rule's column in order (a keyset); boolean rules cannot.
    pub fn is_ordered(&self) -> bool {
        self.column_kind != ColumnKind::Boolean
    }

    /// The cutoff for this rule right now, in the column's type, computed from how far back it
    /// lies (`$1`, an interval) and the policy's zone (`$2`); never later than the clock ceiling
    /// (`$3`, NULL but on a shard's node).
    pub fn cutoff(&self) -> GcResult<Cutoff> {
        let ceiling = CLOCK_CEILING
            .get()
            .and_then(|moment| TimestampWithTimeZone::try_from(moment).ok());
        let args = [
            self.cutoff_offset.as_str().into(),
            self.time_zone.as_str().into(),
            ceiling.into(),
        ];
        let cutoff = match self.column_kind {
            ColumnKind::Timestamptz => {
                sql::one_kept::<TimestampWithTimeZone>("SELECT LEAST(now(), $3::timestamptz) - $1::interval", &args)?
                    .map(Cutoff::Timestamptz)
            }
            ColumnKind::Timestamp => {
                sql::one_kept::<Timestamp>("SELECT (LEAST(now(), $3::timestamptz) - $1::interval) AT TIME ZONE $2", &args)?
                    .map(Cutoff::Timestamp)
            }
            ColumnKind::Date => sql::one_kept::<Date>(
                "SELECT ((LEAST(now(), $3::timestamptz) - $1::interval) AT TIME ZONE $2)::date",
                &args,
            )?
            .map(Cutoff::Date),
            ColumnKind::EpochSeconds => sql::one_kept::<i64>(
                "SELECT floor(extract(epoch FROM LEAST(now(), $3::timestamptz) - $1::interval))::int8",
                &args,
            )?
            .map(Cutoff::Epoch),
            ColumnKind::EpochMillis => sql::one_kept::<i64>(
                "SELECT floor(extract(epoch FROM LEAST(now(), $3::timestamptz) - $1::interval) * 1000)::int8",
                &args,
            )?
            .map(Cutoff::Epoch),
            ColumnKind::Boolean => None,
        };
        Ok(cutoff.unwrap_or(Cutoff::None))
    }

    /// SQL for the moment the oldest row in a set expired under this rule;
    /// `value` is the set's smallest column value.
    pub fn expiry_moment_sql(
        &self,
        value: &str,
        lifetime_param: usize,
        zone_param: usize,
    ) -> String {
        let moment = self
            .column_kind
            .moment_sql(value, &format!("${zone_param}"));
        format!("({moment} + ${lifetime_param}::interval)")
    }
}

/// The per-user session cap: beyond the newest `max_per_user` sessions of a user (ranked by
/// `rank_column`, newest first), the rest are purged. Rows whose user is NULL are never capped.
#[derive(Debug, Clone)]
pub struct UserCap {
    /// The user column as stored (unquoted).
    pub user_column: String,
    /// The user column's SQL type, for casting keys given as text.
    pub user_type: String,
    pub max_per_user: i64,
    /// The column ranking a user's sessions (last activity, else creation), unquoted.
    pub rank_column: String,
}

impl UserCap {
    pub fn quoted_user(&self) -> String {
        quote_identifier(&self.user_column)
    }

    pub fn quoted_rank(&self) -> String {
        quote_identifier(&self.rank_column)
    }
}

/// How expired rows are removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Batches of row deletes (the default).
    DeleteRows,
    /// Partitions whose whole range lies before the cutoff of the rule on the partition key
    /// are dropped; the rest (the current partition, the default partition) by row deletes.
    DropPartitions {
        /// Position in `Policy::rules` of the rule on the partition key.
        key_rule: usize,
    },
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::DeleteRows => "delete_rows",
            Strategy::DropPartitions { .. } => "drop_partitions",
        }
    }
}

/// A registered policy, loaded and checked against the table as it is now.
#[derive(Debug, Clone)]
pub struct Policy {
    pub relid: pg_sys::Oid,
    /// Schema-qualified, quoted name for SQL.
    pub quoted_table: String,
    pub owner: pg_sys::Oid,
    pub rules: Vec<Rule>,
    pub cap: Option<UserCap>,
    pub batch_size: Option<i32>,
    pub strategy: Strategy,
    /// The committed policy row this was loaded from.
    pub version: PolicyVersion,
    /// Where the table's rows are (a Citus table's are in shards on the cluster's nodes).
    pub location: Location,
    /// The policies the rules come from, as given: what a shard's node is sent to purge the
    /// shard by the same rules.
    pub specs: Vec<ShippedSpec>,
}

/// A policy as a shard's node is sent it: as given, with its zone, and its row filter as
/// PostgreSQL renders it here (the node's own rendering must read the same, or the filter
/// would call other functions there).
#[derive(Debug, Clone)]
pub struct ShippedSpec {
    pub spec: RuleSpec,
    /// None where the policy stored none (no naive rule column when it was registered).
    pub time_zone: Option<String>,
    pub rendered_filter: Option<String>,
}

/// The rules as given to `register()`, before they are checked.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub expires_column: Option<String>,
    pub idle_column: Option<String>,
    pub idle_timeout: Option<String>,
    pub created_column: Option<String>,
    pub max_age: Option<String>,
    pub active_column: Option<String>,
    pub grace: String,
    pub epoch_unit: Option<String>,
    pub user_column: Option<String>,
    pub max_per_user: Option<i32>,
    pub activity_column: Option<String>,
    /// `delete_rows` (None means the same) or `drop_partitions`.
    pub strategy: Option<String>,
    /// The rows the policy is about (SQL, a condition on the table's columns); None: all.
    pub row_filter: Option<String>,
}

/// Facts about the table a policy is for.
pub struct TableInfo {
    pub relid: pg_sys::Oid,
    pub quoted_table: String,
    pub display_name: String,
    pub owner: pg_sys::Oid,
    pub relkind: char,
    pub persistence: char,
}

pub fn table_info(relid: pg_sys::Oid) -> GcResult<TableInfo> {
    let found = sql::rows(
        "SELECT n.nspname::text, c.relname::text, c.oid::pg_catalog.regclass::text, c.relowner,
                c.relkind::text, c.relpersistence::text
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = $1",
        &[relid.into()],
        |row| {
            let schema: String = row.get(1)?.unwrap_or_default();
            let table: String = row.get(2)?.unwrap_or_default();
            Ok(TableInfo {
                relid,
                quoted_table: format!("{}.{}", quote_identifier(&schema), quote_identifier(&table)),
                display_name: row.get(3)?.unwrap_or_default(),
                owner: row.get(4)?.unwrap_or(pg_sys::InvalidOid),
                relkind: row
                    .get::<String>(5)?
                    .and_then(|k| k.chars().next())
                    .unwrap_or('?'),
                persistence: row
                    .get::<String>(6)?
                    .and_then(|k| k.chars().next())
                    .unwrap_or('?'),
            })
        },
    )?
    .into_iter()
    .next();
    found.ok_or_else(|| {
        GcError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("relation with OID {} does not exist", relid.to_u32()),
        )
        .detail("The table was dropped or renamed away after the policy was made.")
        .hint("Unregister the policy with session_gc.unregister(), or register the new table.")
    })
}

/// The relations holding the rows of the table whose OID is `$1`: its leaf partitions, or the
/// table itself when it is not partitioned. A FROM item with one column, `relid`.
pub const LEAF_RELATIONS: &str =
    "(SELECT p.relid FROM pg_catalog.pg_partition_tree($1::oid::regclass) p WHERE p.isleaf
      UNION
      SELECT c.oid::regclass FROM pg_catalog.pg_class c WHERE c.oid = $1 AND c.relkind <> 'p')";

/// Refuses relations whose rows session_gc cannot or should not delete.
pub fn check_table_kind(info: &TableInfo) -> GcResult<()> {
    let what = match info.relkind {
        'r' | 'p' => None,
        'v' => Some("a view"),
        'm' => Some("a materialized view"),
        'f' => Some("a foreign table"),
        'i' | 'I' => Some("an index"),
        'S' => Some("a sequence"),
        'c' => Some("a composite type"),
        _ => Some("not a table"),
    };
    if let Some(what) = what {
        return Err(GcError::new(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{}\" is {what}", info.display_name),
        )
        .detail("session_gc purges rows of ordinary and partitioned tables only.")
        .hint("Register the table that holds the session rows."));
    }
    if info.persistence == 't' {
        return Err(GcError::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("\"{}\" is a temporary table", info.display_name),
        )
        .detail(
            "Temporary tables are visible to one session only; the worker could never purge them.",
        )
        .hint("Register a permanent (or unlogged) table."));
    }
    Ok(())
}

/// The column's base type (domains resolved) and its display type; None when it does not exist.
fn column_type(info: &TableInfo, column: &str) -> GcResult<Option<(pg_sys::Oid, String)>> {
    let type_row = sql::two::<pg_sys::Oid, String>(
        "SELECT max(t.oid), max(pg_catalog.format_type(a.atttypid, a.atttypmod))
           FROM pg_catalog.pg_attribute a
           JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
           JOIN pg_catalog.pg_type t ON t.oid = CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE a.atttypid END
          WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
        &[info.relid.into(), column.into()],
    )?;
    Ok(match type_row {
        (Some(oid), Some(name)) => Some((oid, name)),
        _ => None,
    })
}

fn no_such_column(info: &TableInfo, column: &str, parameter: &str, purpose: &str) -> GcError {
    GcError::new(
        PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
        format!("column \"{column}\" of relation \"{}\" does not exist", info.display_name),
    )
    .detail(format!("It was given as {parameter} of the {purpose}."))
    .hint("Column names are matched exactly as written, case included (pass 'sessionToken', not 'sessiontoken').")
}

/// Resolves one rule column: it must exist and be of a type the rule can use.
fn resolve_column(
    info: &TableInfo,
    kind: RuleKind,
    column: &str,
    epoch_unit: Option<&str>,
) -> GcResult<ColumnKind> {
    let Some((type_oid, type_name)) = column_type(info, column)? else {
        return Err(no_such_column(
            info,
            column,
            kind.parameter(),
            &format!("{} rule", kind.label()),
        ));
    };
    let wrong_type = |expected: &str| {
        GcError::new(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!(
                "column \"{column}\" of relation \"{}\" has type {type_name}",
                info.display_name
            ),
        )
        .detail(format!("The {} rule needs {expected}.", kind.label()))
    };
    if kind == RuleKind::Inactive {
        return if type_oid == pg_sys::BOOLOID {
            Ok(ColumnKind::Boolean)
        } else {
            Err(
                wrong_type("a boolean column that is false for inactive rows").hint(
                    "Pass a boolean column as active_column, or use expires_column for a time.",
                ),
            )
        };
    }
    let time_hint = "Use a timestamptz, timestamp, date, integer or bigint (epoch) column.";
    match type_oid {
        pg_sys::TIMESTAMPTZOID => Ok(ColumnKind::Timestamptz),
        pg_sys::TIMESTAMPOID => Ok(ColumnKind::Timestamp),
        pg_sys::DATEOID => Ok(ColumnKind::Date),
        pg_sys::INT4OID | pg_sys::INT8OID => match epoch_unit {
            Some("s") => Ok(ColumnKind::EpochSeconds),
            Some("ms") if type_oid == pg_sys::INT4OID => Err(GcError::invalid_parameter(format!(
                "column \"{column}\" is an integer (int4), too small for epoch milliseconds"
            ))
            .detail(
                "An int4 holds at most 2147483647 milliseconds: 25 days after 1970-01-01, so every session would count as expired.",
            )
            .hint("Store epoch milliseconds in a bigint column, or seconds with epoch_unit => 's'.")),
            Some("ms") => Ok(ColumnKind::EpochMillis),
            _ => Err(GcError::invalid_parameter(format!(
                "column \"{column}\" holds integers but no epoch_unit was given"
            ))
            .detail(
                "An integer time column is read as a Unix epoch, in seconds or in milliseconds.",
            )
            .hint("Pass epoch_unit => 's' or epoch_unit => 'ms'.")),
        },
        _ => Err(wrong_type("a point in time").hint(time_hint)),
    }
}

/// Checks a rule set against the table and turns it into rules, refusing anything that
/// could never work. Used by `register()` and by every load, so a table altered after
/// registration is caught before anything is deleted.
pub fn build_rules(info: &TableInfo, spec: &RuleSpec) -> GcResult<Vec<Rule>> {
    let pairs = [
        (
            RuleKind::Idle,
            &spec.idle_column,
            &spec.idle_timeout,
            "idle_timeout",
        ),
        (
            RuleKind::Aged,
            &spec.created_column,
            &spec.max_age,
            "max_age",
        ),
    ];
    for (kind, column, interval, interval_name) in pairs {
        match (column, interval) {
            (Some(column), None) => {
                return Err(GcError::invalid_parameter(format!(
                    "{} \"{column}\" given without {interval_name}",
                    kind.parameter()
                ))
                .detail(format!(
                    "The {} rule needs both a column and an interval.",
                    kind.label()
                ))
                .hint(format!(
                    "Pass {interval_name} => '30 minutes' (for example) as well."
                )))
            }
            (None, Some(_)) => {
                return Err(GcError::invalid_parameter(format!(
                    "{interval_name} given without {}",
                    kind.parameter()
                ))
                .detail(format!(
                    "The {} rule needs both a column and an interval.",
                    kind.label()
                ))
                .hint(format!(
                    "Pass {} => 'the column' as well.",
                    kind.parameter()
                )))
            }
            _ => {}
        }
    }
    if let Some(unit) = &spec.epoch_unit {
        if unit != "s" && unit != "ms" {
            return Err(
                GcError::invalid_parameter(format!("invalid epoch_unit \"{unit}\""))
                    .detail("Integer time columns hold Unix epoch seconds or milliseconds.")
                    .hint("Pass epoch_unit => 's' or epoch_unit => 'ms'."),
            );
        }
    }
    let given = [
        (RuleKind::Expires, &spec.expires_column, None),
        (
            RuleKind::Idle,
            &spec.idle_column,
            spec.idle_timeout.as_ref(),
        ),
        (RuleKind::Aged, &spec.created_column, spec.max_age.as_ref()),
        (RuleKind::Inactive, &spec.active_column, None),
    ];
    let filter = match &spec.row_filter {
        Some(text) => Some(Rc::new(RowFilter::analyze(info, text)?)),
        None => None,
    };
    let mut rules = Vec::new();
    for (kind, column, lifetime) in given {
        let Some(column) = column else { continue };
        let column_kind = resolve_column(info, kind, column, spec.epoch_unit.as_deref())?;
        let lifetime = lifetime.cloned().unwrap_or_else(|| "0".to_string());
        let (cutoff_offset, too_long) = sql::two::<String, bool>(
            "SELECT ($1::interval + $2::interval)::text,
                    $1::interval + $2::interval > $3::interval",
            &[
                lifetime.as_str().into(),
                spec.grace.as_str().into(),
                LONGEST_INTERVAL.into(),
            ],
        )?;
        let cutoff_offset = cutoff_offset.unwrap_or_else(|| spec.grace.clone());
        if too_long == Some(true) {
            return Err(GcError::invalid_parameter(format!(
                "the {} rule reaches back '{cutoff_offset}', more than {LONGEST_INTERVAL}",
                kind.label()
            ))
            .detail("Its timeout (or maximum age) plus grace must stay within 100 years, so that cutoffs stay within the dates PostgreSQL can represent.")
            .hint("Pass a realistic session lifetime, such as '30 days'."));
        }
        rules.push(Rule {
            kind,
            column: column.clone(),
            column_kind,
            cutoff_offset,
            lifetime,
            time_zone: "UTC".into(),
            filter: filter.clone(),
        });
    }
    Ok(rules)
}

/// A policy's rules, cap and strategy, checked against the table.
pub struct Resolved {
    pub rules: Vec<Rule>,
    pub cap: Option<UserCap>,
    pub strategy: Strategy,
}

/// Checks everything `register()` was given against the table: the rules, the per-user cap
/// and the strategy. Used by `register()` and by every load, so a table altered after
/// registration is caught before anything is deleted.
pub fn resolve(info: &TableInfo, spec: &RuleSpec) -> GcResult<Resolved> {
    let rules = build_rules(info, spec)?;
    let cap = build_cap(info, spec)?;
    if rules.is_empty() && cap.is_none() {
        // A framework's table gets the call that fits it (frameworks.rs).
        let hint = frameworks::suggested_call(info)?.unwrap_or_else(|| {
            "Pass expires_column, idle_column with idle_timeout, created_column with max_age, \
             active_column, or user_column with max_per_user."
                .into()
        });
        return Err(GcError::invalid_parameter("no expiry rule given")
            .detail("A policy needs at least one rule to decide which rows are purged.")
            .hint(hint));
    }
    let integer_kind =
        |kind: ColumnKind| matches!(kind, ColumnKind::EpochSeconds | ColumnKind::EpochMillis);
    let uses_integers = rules.iter().any(|r| integer_kind(r.column_kind))
        || cap.as_ref().is_some_and(|(_, kind)| integer_kind(*kind));
    if spec.epoch_unit.is_some() && !uses_integers {
        return Err(GcError::invalid_parameter(
            "epoch_unit given but no rule column is an integer",
        )
        .detail("epoch_unit only says how to read integer (epoch) columns.")
        .hint("Leave epoch_unit out for timestamp and date columns."));
    }
    let strategy = resolve_strategy(info, spec.strategy.as_deref(), &rules)?;
    if spec.row_filter.is_some() {
        let refused = if cap.is_some() {
            Some((
                "max_per_user",
                "A per-user cap ranks all of a user's sessions.",
            ))
        } else if strategy != Strategy::DeleteRows {
            Some((
                "drop_partitions",
                "A dropped partition takes every row in it, whatever the filter says.",
            ))
        } else {
            None
        };
        if let Some((what, why)) = refused {
            return Err(GcError::new(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("row_filter cannot be combined with {what}"),
            )
            .detail(why)
            .hint("Register the cap or the partition drops in a policy of their own, without a row_filter."));
        }
    }
    check_partitions_and_references(info)?;
    Ok(Resolved {
        rules,
        cap: cap.map(|(cap, _)| cap),
        strategy,
    })
}

impl Resolved {
    /// The rules read naive columns in `time_zone`.
    pub fn in_zone(mut self, time_zone: &str) -> Self {
        for rule in &mut self.rules {
            rule.time_zone = time_zone.to_string();
        }
        self
    }
}

/// Refuses tables whose rows a purge batch could never delete: a foreign-table partition (its
/// rows have no ctid to delete by), or a foreign key referencing the table that is
/// `DEFERRABLE INITIALLY DEFERRED` with NO ACTION (its check would fire inside the purge's
/// security-restricted operation, which PostgreSQL forbids, failing every batch).
fn check_partitions_and_references(info: &TableInfo) -> GcResult<()> {
    let foreign = sql::one::<String>(
        "SELECT min(p.relid::pg_catalog.regclass::text)
           FROM pg_catalog.pg_partition_tree($1::oid::pg_catalog.regclass) p
           JOIN pg_catalog.pg_class c ON c.oid = p.relid
          WHERE c.relkind = 'f'",
        &[info.relid.into()],
    )?;
    if let Some(partition) = foreign {
        return Err(GcError::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "\"{}\" has a partition that is a foreign table: {partition}",
                info.display_name
            ),
        )
        .detail("session_gc deletes rows by their physical address, which rows of a foreign table do not have.")
        .hint("Purge the foreign partition on its own server, or detach it before registering the table."));
    }
    if let Some((constraint, referencing)) =
        referencing_key(info, "c.condeferred AND c.confdeltype = 'a'")?
    {
        return Err(GcError::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "foreign key \"{constraint}\" of {referencing} referencing \"{}\" is DEFERRABLE INITIALLY DEFERRED",
                info.display_name
            ),
        )
        .detail("Purges run as the table's owner in a security-restricted operation, where PostgreSQL cannot fire deferred constraint checks: every batch would fail.")
        .hint(format!(
            "ALTER TABLE {referencing} ALTER CONSTRAINT {} INITIALLY IMMEDIATE; (it stays DEFERRABLE for transactions that SET CONSTRAINTS), or give it ON DELETE CASCADE.",
            quote_identifier(&constraint)
        )));
    }
    Ok(())
}

/// The first foreign key (by OID) referencing the table or one of its partitions that matches
/// `condition` (on `pg_constraint c`): its name and its table.
fn referencing_key(info: &TableInfo, condition: &str) -> GcResult<Option<(String, String)>> {
    let found = sql::two::<String, String>(
        &format!(
            "SELECT c.conname::text, c.conrelid::pg_catalog.regclass::text
               FROM pg_catalog.pg_constraint c
              WHERE c.contype = 'f' AND c.conparentid = 0 AND {condition}
                AND (c.confrelid = $1
                     OR c.confrelid IN (SELECT p.relid
                                          FROM pg_catalog.pg_partition_tree($1::oid::pg_catalog.regclass) p))
              ORDER BY c.oid LIMIT 1"
        ),
        &[info.relid.into()],
    )?;
    Ok(match found {
        (Some(constraint), Some(referencing)) => Some((constraint, referencing)),
        _ => None,
    })
}

/// The longest interval a rule takes: beyond it, cutoffs leave the range PostgreSQL's dates can
/// hold (`'10000 years'` would make every later call fail), and no session lives that long.
pub const LONGEST_INTERVAL: &str = "100 years";

/// The per-user cap, if one was asked for, with the kind of its ranking column.
fn build_cap(info: &TableInfo, spec: &RuleSpec) -> GcResult<Option<(UserCap, ColumnKind)>> {
    let both = "A per-user cap needs both the user column and the number of sessions kept.";
    let (user_column, max_per_user) = match (&spec.user_column, spec.max_per_user) {
        (None, None) => {
            if spec.activity_column.is_some() {
                return Err(GcError::invalid_parameter(
                    "activity_column given without max_per_user",
                )
                .detail("activity_column only ranks a user's sessions for the per-user cap.")
                .hint("Pass user_column and max_per_user as well, or leave activity_column out."));
            }
            return Ok(None);
        }
        (Some(column), None) => {
            return Err(GcError::invalid_parameter(format!(
                "user_column \"{column}\" given without max_per_user"
            ))
            .detail(both)
            .hint("Pass max_per_user => 5 (for example) as well."))
        }
        (None, Some(_)) => {
            return Err(
                GcError::invalid_parameter("max_per_user given without user_column")
                    .detail(both)
                    .hint("Pass user_column => 'user_id' (for example) as well."),
            )
        }
        (Some(column), Some(max)) => (column, max),
    };
    if max_per_user < 1 {
        return Err(GcError::invalid_parameter(format!(
            "max_per_user must be at least 1, got {max_per_user}"
        ))
        .detail("max_per_user is how many sessions of one user are kept; 0 would log everyone out.")
        .hint("Pass a positive number such as 5."));
    }
    if column_type(info, user_column)?.is_none() {
        return Err(no_such_column(
            info,
            user_column,
            "user_column",
            "per-user cap",
        ));
    }
    let Some(rank_column) = spec
        .activity_column
        .as_ref()
        .or(spec.idle_column.as_ref())
        .or(spec.created_column.as_ref())
    else {
        return Err(GcError::invalid_parameter(
            "max_per_user needs a column to rank a user's sessions by",
        )
        .detail(
            "The oldest sessions beyond the cap are purged: by last activity, else by creation.",
        )
        .hint("Pass activity_column => 'last_seen_at' (or give idle_column or created_column)."));
    };
    let rank_kind = resolve_column(
        info,
        RuleKind::OverCap,
        rank_column,
        spec.epoch_unit.as_deref(),
    )?;
    // Keys of the user column travel as text; cast them back to its (schema-qualified) base type.
    let user_type = sql::one::<String>(
        "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(t.typname)
           FROM pg_catalog.pg_attribute a
           JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
           JOIN pg_catalog.pg_type t ON t.oid = CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE a.atttypid END
           JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
          WHERE a.attrelid = $1 AND a.attname = $2 AND NOT a.attisdropped",
        &[info.relid.into(), user_column.as_str().into()],
    )?
    .unwrap_or_else(|| "pg_catalog.text".into());
    Ok(Some((
        UserCap {
            user_column: user_column.clone(),
            user_type,
            max_per_user: i64::from(max_per_user),
            rank_column: rank_column.clone(),
        },
        rank_kind,
    )))
}

/// The removal strategy; `drop_partitions` only for a table range-partitioned on the column of
/// one of its time rules, and not referenced by foreign keys (a dropped partition would skip
/// their ON DELETE actions).
fn resolve_strategy(
    info: &TableInfo,
    strategy: Option<&str>,
    rules: &[Rule],
) -> GcResult<Strategy> {
    match strategy.unwrap_or("delete_rows") {
        "delete_rows" => return Ok(Strategy::DeleteRows),
        "drop_partitions" => {}
        other => {
            return Err(GcError::invalid_parameter(format!("invalid strategy \"{other}\""))
                .detail("A policy deletes rows (delete_rows, the default) or drops whole expired partitions (drop_partitions).")
                .hint("Pass strategy => 'delete_rows' or strategy => 'drop_partitions'."))
        }
    }
    let not_range = |why: String| {
        GcError::new(PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE, why)
            .detail("drop_partitions drops the partitions of a table range-partitioned on the column of an expiry rule, once their whole range has expired.")
            .hint("Use strategy => 'delete_rows', or partition the table with PARTITION BY RANGE on its expiry column.")
    };
    let (strategy_code, key_count, key_column) = sql::three::<String, i32, String>(
        "SELECT max(pt.partstrat::text), max(pt.partnatts::int4), max(a.attname::text)
           FROM pg_catalog.pg_partitioned_table pt
           LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
          WHERE pt.partrelid = $1",
        &[info.relid.into()],
    )?;
    if info.relkind != 'p' || strategy_code.is_none() {
        return Err(not_range(format!(
            "\"{}\" is not a partitioned table",
            info.display_name
        )));
    }
    let (Some("r"), Some(1), Some(key)) = (strategy_code.as_deref(), key_count, key_column) else {
        return Err(not_range(format!(
            "\"{}\" is not partitioned by range on one column",
            info.display_name
        )));
    };
    let Some(key_rule) = rules.iter().position(|r| r.is_ordered() && r.column == key) else {
        return Err(not_range(format!(
            "the partition key \"{key}\" of \"{}\" is not the column of an expiry rule",
            info.display_name
        )));
    };
    if let Some((constraint, referencing)) = referencing_key(info, "true")? {
        return Err(GcError::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "drop_partitions cannot be used on \"{}\": foreign key \"{constraint}\" of {referencing} references it",
                info.display_name
            ),
        )
        .detail("Dropping a partition would skip the ON DELETE actions of the rows referencing it.")
        .hint("Use strategy => 'delete_rows' for a table other tables reference."));
    }
    Ok(Strategy::DropPartitions { key_rule })
}

impl Policy {
    /// Loads the policies of `relid` and checks them against the table as it is now: one
    /// `Policy` with the rules of all of them (of the enabled ones, while any is enabled).
    /// `Ok(None)` when no policy exists.
    pub fn load(relid: pg_sys::Oid) -> GcResult<Option<Policy>> {
        let stored = identity::as_extension_owner(|| read_stored(relid))?;
        if stored.is_empty() {
            return Ok(None);
        }
        let info = table_info(relid)?;
        check_table_kind(&info)?;
        let any_enabled = stored.iter().any(|p| p.enabled);
        let version = PolicyVersion {
            row_version: combined_row_version(stored.iter().map(|p| p.row_version.as_str())),
            enabled: any_enabled,
            table_version: stored[0].table_version.clone(),
        };
        let mut policy = Policy::without_rules(&info, version, citus::location(relid)?);
        let several = stored.len() > 1;
        // With every policy disabled, a named purge runs the table's only policy as before;
        // of several disabled policies it runs none.
        for row in stored
            .iter()
            .filter(|p| p.enabled || (!any_enabled && !several))
        {
            policy.add(
                &info,
                &row.name,
                &row.spec,
                row.time_zone.as_deref(),
                row.batch_size,
                several,
            )?;
        }
        policy.check_location(&info)?;
        Ok(Some(policy))
    }

    /// A table's policy before its stored policies' rules are added (`add`).
    fn without_rules(info: &TableInfo, version: PolicyVersion, location: Location) -> Policy {
        Policy {
            relid: info.relid,
            quoted_table: info.quoted_table.clone(),
            owner: info.owner,
            rules: Vec::new(),
            cap: None,
            batch_size: None,
            strategy: Strategy::DeleteRows,
            version,
            location,
            specs: Vec::new(),
        }
    }

    /// Adds one stored policy's rules to the table's, checked against the table as it is now.
    fn add(
        &mut self,
        info: &TableInfo,
        name: &str,
        spec: &RuleSpec,
        stored_zone: Option<&str>,
        batch_size: Option<i32>,
        several: bool,
    ) -> GcResult<()> {
        let resolved = resolve(info, spec).map_err(|e| {
            let detail = format!(
                "The policy {} of {} no longer matches the table: {}",
                quote_literal(name),
                info.display_name,
                e.detail.clone().unwrap_or_default()
            );
            e.detail(detail).hint(
                "The table was altered after registration: call session_gc.register() again or unregister it.",
            )
        })?;
        // Stored without a zone, the policy had no naive column then: one retyped since (an ORM
        // migration to timestamp) would be read in a zone nobody chose, which can delete live
        // sessions.
        let naive: Vec<String> = resolved
            .rules
            .iter()
            .filter(|rule| rule.column_kind.is_naive())
            .map(|rule| rule.quoted_column())
            .collect();
        let Some(time_zone) = stored_zone.or(naive.is_empty().then_some("UTC")) else {
            return Err(GcError::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "the policy {} of {} has no time_zone for its naive column {}",
                    quote_literal(name),
                    info.display_name,
                    naive.join(", ")
                ),
            )
            .detail(
                "The column was a timestamptz or epoch column when the policy was registered \
                 and has been retyped since; nothing is read in a zone nobody chose.",
            )
            .hint(
                "The table was altered after registration: call session_gc.register() again with the time_zone the application writes in.",
            ));
        };
        let resolved = resolved.in_zone(time_zone);
        if let Strategy::DropPartitions { key_rule } = resolved.strategy {
            if several {
                return Err(shared_table(info, "drop_partitions"));
            }
            self.strategy = Strategy::DropPartitions {
                key_rule: key_rule + self.rules.len(),
            };
        }
        if let Some(cap) = resolved.cap {
            if self.cap.is_some() {
                return Err(shared_table(info, "max_per_user"));
            }
            self.cap = Some(cap);
        }
        self.batch_size = match (self.batch_size, batch_size) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let rendered_filter = resolved
            .rules
            .first()
            .and_then(|rule| rule.filter.as_ref())
            .map(|filter| filter.sql("t"));
        self.rules.extend(resolved.rules);
        self.specs.push(ShippedSpec {
            spec: spec.clone(),
            time_zone: stored_zone.map(str::to_string),
            rendered_filter,
        });
        Ok(())
    }

    fn check_location(&self, info: &TableInfo) -> GcResult<()> {
        check_location(
            info,
            self.location,
            self.cap.is_some(),
            matches!(self.strategy, Strategy::DropPartitions { .. }),
        )
    }

    /// The policies as sent to a shard's node (`specs`, as JSON).
    pub fn shipped(&self) -> String {
        let specs: Vec<serde_json::Value> = self
            .specs
            .iter()
            .map(|shipped| {
                let ShippedSpec {
                    spec,
                    time_zone,
                    rendered_filter,
                } = shipped;
                serde_json::json!({
                    "expires_column": spec.expires_column,
                    "idle_column": spec.idle_column,
                    "idle_timeout": spec.idle_timeout,
                    "created_column": spec.created_column,
                    "max_age": spec.max_age,
                    "active_column": spec.active_column,
                    "grace": spec.grace,
                    "epoch_unit": spec.epoch_unit,
                    "row_filter": spec.row_filter,
                    "row_filter_rendered": rendered_filter,
                    "time_zone": time_zone,
                })
            })
            .collect();
        serde_json::Value::Array(specs).to_string()
    }

    /// On a shard's node: the policies the coordinator sent (`shipped`), checked against the
    /// shard as it is here, as its owner (a row filter is analyzed again against the shard).
    /// Time rules only.
    pub fn for_shard(shard: pg_sys::Oid, shipped: &str) -> GcResult<Policy> {
        let info = table_info(shard)?;
        if info.relkind != 'r' {
            return Err(GcError::new(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("\"{}\" is not a shard session_gc can purge", info.display_name),
            )
            .detail("A shard is purged along its heap or its rules' indexes: it must be an ordinary table.")
            .hint("Purge the distributed table through session_gc.purge() on the coordinator."));
        }
        let bad = |why: &str| {
            GcError::invalid_parameter(format!(
                "the policies sent for \"{}\" are not valid: {why}",
                info.display_name
            ))
            .hint("Purge the distributed table through session_gc.purge() on the coordinator.")
        };
        let specs: serde_json::Value =
            serde_json::from_str(shipped).map_err(|e| bad(&e.to_string()))?;
        let specs = specs.as_array().ok_or_else(|| bad("not a JSON array"))?;
        if specs.is_empty() {
            return Err(bad("no policy"));
        }
        let version = PolicyVersion {
            row_version: String::new(),
            enabled: true,
            table_version: None,
        };
        let mut policy = Policy::without_rules(&info, version, Location::Local);
        let several = specs.len() > 1;
        for (position, value) in specs.iter().enumerate() {
            let text = |key: &str| -> GcResult<Option<String>> {
                match value.get(key) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(text)) => Ok(Some(text.clone())),
                    Some(_) => Err(bad(&format!("{key} is not text"))),
                }
            };
            let spec = RuleSpec {
                expires_column: text("expires_column")?,
                idle_column: text("idle_column")?,
                idle_timeout: text("idle_timeout")?,
                created_column: text("created_column")?,
                max_age: text("max_age")?,
                active_column: text("active_column")?,
                grace: text("grace")?.unwrap_or_else(|| "0".into()),
                epoch_unit: text("epoch_unit")?,
                row_filter: text("row_filter")?,
                ..RuleSpec::default()
            };
            let time_zone = text("time_zone")?;
            if several && spec.row_filter.is_none() {
                return Err(bad("several policies, one without a row filter"));
            }
            policy.add(
                &info,
                &format!("#{}", position + 1),
                &spec,
                time_zone.as_deref(),
                None,
                several,
            )?;
            let here = policy.specs.last().and_then(|s| s.rendered_filter.clone());
            let there = text("row_filter_rendered")?;
            if here != there {
                return Err(GcError::new(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("the row filter of a policy of \"{}\" reads differently on this node", info.display_name),
                )
                .detail(format!(
                    "On the coordinator: {}. Here: {}.",
                    there.unwrap_or_default(),
                    here.unwrap_or_default()
                ))
                .hint("The functions, operators and types a filter uses must be the same on every node: create them on the coordinator, which Citus copies to the nodes."));
            }
        }
        if policy.rules.is_empty() {
            return Err(bad("no time rule"));
        }
        Ok(policy)
    }

    /// The tables with a policy, in a stable order; `only_enabled` skips tables whose
    /// policies are all disabled.
    pub fn registered_tables(only_enabled: bool) -> GcResult<Vec<pg_sys::Oid>> {
        identity::as_extension_owner(|| {
            let tables = sql::rows(
                "SELECT table_name::oid FROM session_gc.policies
                  GROUP BY table_name HAVING bool_or(enabled) OR NOT $1 ORDER BY table_name::oid",
                &[only_enabled.into()],
                |row| Ok(row.get::<pg_sys::Oid>(1)?),
            )?;
            Ok(tables.into_iter().flatten().collect())
        })
    }
}

thread_local! {
    /// The latest moment cutoffs may be computed from, while a shard's node purges for the
    /// coordinator: the coordinator's clock when it sent the call. A node whose clock runs
    /// ahead then never deletes a session before it has expired by the coordinator's clock.
    static CLOCK_CEILING: std::cell::Cell<Option<pg_sys::TimestampTz>> =
        const { std::cell::Cell::new(None) };
}

/// Runs `work` with cutoffs computed no later than `ceiling`.
pub fn with_clock_ceiling<R>(ceiling: pg_sys::TimestampTz, work: impl FnOnce() -> R) -> R {
    struct Restore(Option<pg_sys::TimestampTz>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CLOCK_CEILING.set(self.0);
        }
    }
    let _restore = Restore(CLOCK_CEILING.replace(Some(ceiling)));
    work()
}

/// A Citus table is purged by its time rules, shard by shard (a reference table through
/// Citus): a cap counts a user's sessions over all shards and partition drops act on the whole
/// table, neither of which a batch of one shard can do; the shards of a partitioned table are
/// not walked; a reference table needs a primary key (its copies choose the same rows by it);
/// a table with copies of its shards on several nodes is not purged at all.
pub fn check_location(
    info: &TableInfo,
    location: Location,
    capped: bool,
    drops_partitions: bool,
) -> GcResult<()> {
    match location {
        Location::Local => return Ok(()),
        Location::Replicated => return Err(citus::replicated_refused(&info.display_name)),
        Location::Sharded | Location::Reference => {}
    }
    let refused = |message: String, detail: &str, hint: &str| {
        Err(
            GcError::new(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, message)
                .detail(detail)
                .hint(hint),
        )
    };
    if info.relkind == 'p' {
        return refused(
            format!("session_gc cannot purge \"{}\": it is a partitioned Citus table", info.display_name),
            "session_gc purges a Citus table shard by shard; the shards of a partitioned one are partitioned tables of their own, which it does not walk.",
            "Distribute the table without partitions, or purge it with a DELETE through the coordinator.",
        );
    }
    let whole_table_rule = match (capped, drops_partitions) {
        (true, _) => Some("max_per_user"),
        (false, true) => Some("drop_partitions"),
        (false, false) => None,
    };
    if let Some(what) = whole_table_rule {
        return refused(
            format!("{what} cannot be used on \"{}\": it is a Citus table", info.display_name),
            "session_gc purges a Citus table shard by shard, on each shard's node; this rule acts on the whole table at once.",
            "Register the table with expiry rules only.",
        );
    }
    if location == Location::Reference && primary_key(info.relid)?.is_none() {
        return refused(
            format!("session_gc cannot purge \"{}\": it is a Citus reference table without a primary key", info.display_name),
            "The copies of a reference table must delete the same rows: each batch takes the first expired rows in primary-key order, a choice every copy makes alike.",
            "Add a primary key to the table.",
        );
    }
    Ok(())
}

/// The columns of `relid`'s primary key, quoted, in key order; None without one.
pub fn primary_key(relid: pg_sys::Oid) -> GcResult<Option<Vec<String>>> {
    let columns = sql::rows(
        "SELECT a.attname::text FROM pg_catalog.pg_index i
           JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) ON true
           JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          WHERE i.indrelid = $1 AND i.indisprimary
          ORDER BY k.position",
        &[relid.into()],
        |row| Ok(row.get::<String>(1)?),
    )?;
    let columns: Vec<String> = columns
        .into_iter()
        .flatten()
        .map(|name| quote_identifier(&name))
        .collect();
    Ok((!columns.is_empty()).then_some(columns))
}

/// Partition drops and a per-user cap act on all of a table's rows: the policy using one must
/// be the table's only policy. register() refuses such a pair; a load that meets one anyway
/// (written around register()) stops.
pub fn shared_table(info: &TableInfo, what: &str) -> GcError {
    GcError::new(
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!(
            "{what} needs the only policy of \"{}\"",
            info.display_name
        ),
    )
    .detail(format!(
        "{what} acts on all of the table's rows, whatever the other policies of {} are about.",
        info.display_name
    ))
    .hint("Unregister the other policies (session_gc.unregister(table, policy_name => ...)), or register without it.")
}

/// The version of a table's policies: their rows' `xmin`s in `policy_name` order, so a load
/// and a batch's look agree on it.
fn combined_row_version<'a>(xmins: impl Iterator<Item = &'a str>) -> String {
    xmins.collect::<Vec<_>>().join(",")
}

/// One stored policy row of a table.
struct StoredPolicy {
    name: String,
    spec: RuleSpec,
    time_zone: Option<String>,
    batch_size: Option<i32>,
    enabled: bool,
    row_version: String,
    table_version: Option<String>,
}

fn read_stored(relid: pg_sys::Oid) -> GcResult<Vec<StoredPolicy>> {
    let stored = sql::rows(
        "SELECT expires_column::text, idle_column::text, idle_timeout::text,
                created_column::text, max_age::text, active_column::text, grace::text,
                epoch_unit, time_zone, batch_size, user_column::text, max_per_user,
                activity_column::text, strategy, xmin::text, enabled,
                (SELECT c.xmin::text FROM pg_catalog.pg_class c WHERE c.oid = table_name::oid),
                policy_name, row_filter
           FROM session_gc.policies WHERE table_name = $1::oid::regclass
          ORDER BY policy_name",
        &[relid.into()],
        |row| {
            Ok(StoredPolicy {
                name: row.get::<String>(18)?.unwrap_or_default(),
                spec: RuleSpec {
                    expires_column: row.get(1)?,
                    idle_column: row.get(2)?,
                    idle_timeout: row.get(3)?,
                    created_column: row.get(4)?,
                    max_age: row.get(5)?,
                    active_column: row.get(6)?,
                    grace: row.get::<String>(7)?.unwrap_or_else(|| "0".into()),
                    epoch_unit: row.get(8)?,
                    user_column: row.get(11)?,
                    max_per_user: row.get(12)?,
                    activity_column: row.get(13)?,
                    strategy: row.get(14)?,
                    row_filter: row.get(19)?,
                },
                time_zone: row.get::<String>(9)?,
                batch_size: row.get(10)?,
                row_version: row.get::<String>(15)?.unwrap_or_default(),
                enabled: row.get::<bool>(16)?.unwrap_or(false),
                table_version: row.get::<String>(17)?,
            })
        },
    )?;
    Ok(stored)
}

/// Which committed version of a policy and of its table a run acts on: a change of the policy
/// row (register(), a disable, unregister and register again) gives it a new `xmin`, and so
/// does a change of the table's catalog row (a rename, a new owner, a column retyped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    pub row_version: String,
    pub enabled: bool,
    pub table_version: Option<String>,
}

/// The policies of `relid` and its table as committed now, both held until the current
/// transaction ends: the policy rows share-locked, so a `register()`, `unregister()` or disable
/// waits for the batch that read it and once it returns no batch acts on the policy it
/// replaced; then the table locked as the batch's DELETE would lock it (by OID), so it cannot
/// be renamed, swapped or given to another owner between this look and the batch. Each waits
/// at most `session_gc.lock_timeout`, the policy first: a transaction changing the policy is
/// never waited for while holding the table. None: no policy any more.
pub fn lock_committed_version(
    relid: pg_sys::Oid,
    owner: pg_sys::Oid,
) -> GcResult<Option<PolicyVersion>> {
    let committed = identity::as_extension_owner_waiting(crate::gucs::lock_timeout_ms(), || {
        let locked = sql::rows_written(
            "SELECT p.xmin::text, p.enabled FROM session_gc.policies p
              WHERE p.table_name = $1::oid::regclass ORDER BY p.policy_name FOR SHARE",
            &[relid.into()],
            |row| Ok((row.get::<String>(1)?, row.get::<bool>(2)?)),
        )?;
        if locked.is_empty() {
            return Ok::<_, GcError>(None);
        }
        let row_version = combined_row_version(
            locked
                .iter()
                .map(|(xmin, _)| xmin.as_deref().unwrap_or_default()),
        );
        let enabled = locked.iter().any(|(_, enabled)| *enabled == Some(true));
        Ok(Some((row_version, enabled)))
    })?;
    let Some((row_version, enabled)) = committed else {
        return Ok(None);
    };
    identity::as_table_owner(owner, || unsafe {
        pg_sys::LockRelationOid(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE)
    });
    // Read under the table's lock: what the batch will act on.
    let table_version = sql::one_kept::<String>(
        "SELECT c.xmin::text FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[relid.into()],
    )?;
    Ok(Some(PolicyVersion {
        row_version,
        enabled,
        table_version,
    }))
}
