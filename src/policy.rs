//! The policy model: which rows of a table are expired.
//!
//! A `Policy` is one row of `session_gc.policies`, checked against the table as it is now.
//! Each configured rule becomes a `Rule` that knows how to compute its cutoff in the column's
//! own type and how to write "this row is expired" without wrapping the column in a function,
//! so every rule keeps its index. How the rows are then removed is the engine's business.

use crate::error::{GcError, GcResult};
use crate::identity;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::{pg_sys, PgSqlErrorCode};

/// The four reasons a session row can be purgeable, in the order they are applied.
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
}

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
        }
    }

    fn parameter(self) -> &'static str {
        match self {
            RuleKind::Expires => "expires_column",
            RuleKind::Idle => "idle_column",
            RuleKind::Aged => "created_column",
            RuleKind::Inactive => "active_column",
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

    /// SQL computing the cutoff as text from `$1` (how far back, an interval) and `$2` (zone).
    fn cutoff_sql(self) -> Option<&'static str> {
        Some(match self {
            ColumnKind::Timestamptz => "SELECT (now() - $1::interval)::text",
            ColumnKind::Timestamp => "SELECT ((now() - $1::interval) AT TIME ZONE $2)::text",
            ColumnKind::Date => "SELECT ((now() - $1::interval) AT TIME ZONE $2)::date::text",
            ColumnKind::EpochSeconds => {
                "SELECT floor(extract(epoch FROM now() - $1::interval))::int8::text"
            }
            ColumnKind::EpochMillis => {
                "SELECT floor(extract(epoch FROM now() - $1::interval) * 1000)::int8::text"
            }
            ColumnKind::Boolean => return None,
        })
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
}

impl Rule {
    pub fn quoted_column(&self) -> String {
        quote_identifier(&self.column)
    }

    /// "this row is expired" for a row aliased `alias`, with the cutoff in parameter `$param`.
    pub fn predicate(&self, alias: &str, param: usize) -> String {
        let column = format!("{alias}.{}", self.quoted_column());
        match self.column_kind {
            ColumnKind::Boolean => format!("{column} = false"),
            kind => format!("{column} < ${param}::{}", kind.key_type()),
        }
    }

    /// The rule in words, for register()'s answer.
    pub fn describe(&self) -> String {
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

    /// The cutoff for this rule right now, as text in the column's type; None for boolean rules.
    pub fn cutoff(&self, time_zone: &str) -> GcResult<Option<String>> {
        let Some(sql) = self.column_kind.cutoff_sql() else {
            return Ok(None);
        };
        let cutoff = Spi::get_one_with_args::<String>(
            sql,
            &[self.cutoff_offset.as_str().into(), time_zone.into()],
        )?;
        Ok(cutoff)
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

/// How expired rows are removed. Only row deletes today; whole-partition drops later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    DeleteRows,
}

/// A registered policy, loaded and checked against the table as it is now.
#[derive(Debug, Clone)]
pub struct Policy {
    pub relid: pg_sys::Oid,
    /// Schema-qualified, quoted name for SQL.
    pub quoted_table: String,
    pub owner: pg_sys::Oid,
    pub rules: Vec<Rule>,
    pub time_zone: String,
    pub batch_size: Option<i32>,
    pub strategy: Strategy,
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
    let found = Spi::connect(|client| {
        let rows = client.select(
            "SELECT n.nspname::text, c.relname::text, c.oid::regclass::text, c.relowner,
                    c.relkind::text, c.relpersistence::text
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = $1",
            None,
            &[relid.into()],
        )?;
        let mut info = None;
        for row in rows {
            let schema: String = row.get(1)?.unwrap_or_default();
            let table: String = row.get(2)?.unwrap_or_default();
            info = Some(TableInfo {
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
            });
        }
        Ok::<_, GcError>(info)
    })?;
    found.ok_or_else(|| {
        GcError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("relation with OID {} does not exist", relid.to_u32()),
        )
        .detail("The table was dropped or renamed away after the policy was made.")
        .hint("Unregister the policy with session_gc.unregister(), or register the new table.")
    })
}

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

/// Resolves one rule column: it must exist and be of a type the rule can use.
fn resolve_column(
    info: &TableInfo,
    kind: RuleKind,
    column: &str,
    epoch_unit: Option<&str>,
) -> GcResult<ColumnKind> {
    let type_row = Spi::get_two_with_args::<pg_sys::Oid, String>(
        "SELECT max(t.oid), max(pg_catalog.format_type(a.atttypid, a.atttypmod))
           FROM pg_catalog.pg_attribute a
           JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
           JOIN pg_catalog.pg_type t ON t.oid = CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE a.atttypid END
          WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
        &[info.relid.into(), column.into()],
    )?;
    let (Some(type_oid), Some(type_name)) = type_row else {
        return Err(GcError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!("column \"{column}\" of relation \"{}\" does not exist", info.display_name),
        )
        .detail(format!("It was given as {} of the {} rule.", kind.parameter(), kind.label()))
        .hint("Column names are matched exactly as written, case included (pass 'sessionToken', not 'sessiontoken')."));
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
    let mut rules = Vec::new();
    for (kind, column, lifetime) in given {
        let Some(column) = column else { continue };
        let column_kind = resolve_column(info, kind, column, spec.epoch_unit.as_deref())?;
        let lifetime = lifetime.cloned().unwrap_or_else(|| "0".to_string());
        let cutoff_offset = Spi::get_one_with_args::<String>(
            "SELECT ($1::interval + $2::interval)::text",
            &[lifetime.as_str().into(), spec.grace.as_str().into()],
        )?
        .unwrap_or_else(|| spec.grace.clone());
        rules.push(Rule {
            kind,
            column: column.clone(),
            column_kind,
            cutoff_offset,
            lifetime,
        });
    }
    if rules.is_empty() {
        return Err(GcError::invalid_parameter("no expiry rule given")
            .detail("A policy needs at least one rule to decide which rows are expired.")
            .hint("Pass expires_column, idle_column with idle_timeout, created_column with max_age, or active_column."));
    }
    let uses_integers = rules.iter().any(|r| {
        matches!(
            r.column_kind,
            ColumnKind::EpochSeconds | ColumnKind::EpochMillis
        )
    });
    if spec.epoch_unit.is_some() && !uses_integers {
        return Err(GcError::invalid_parameter(
            "epoch_unit given but no rule column is an integer",
        )
        .detail("epoch_unit only says how to read integer (epoch) columns.")
        .hint("Leave epoch_unit out for timestamp and date columns."));
    }
    Ok(rules)
}

impl Policy {
    /// Loads the policy of `relid` and checks it against the table as it is now.
    /// `Ok(None)` when no policy exists.
    pub fn load(relid: pg_sys::Oid) -> GcResult<Option<Policy>> {
        let stored = identity::as_extension_owner(|| read_stored(relid))?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let info = table_info(relid)?;
        check_table_kind(&info)?;
        let rules = build_rules(&info, &stored.spec).map_err(|e| {
            let detail = format!(
                "The policy of {} no longer matches the table: {}",
                info.display_name,
                e.detail.clone().unwrap_or_default()
            );
            e.detail(detail).hint(
                "The table was altered after registration: call session_gc.register() again or unregister it.",
            )
        })?;
        Ok(Some(Policy {
            relid,
            quoted_table: info.quoted_table,
            owner: info.owner,
            rules,
            time_zone: stored.time_zone,
            batch_size: stored.batch_size,
            strategy: Strategy::DeleteRows,
        }))
    }

    /// The tables with a policy, in a stable order; `only_enabled` skips disabled ones.
    pub fn registered_tables(only_enabled: bool) -> GcResult<Vec<pg_sys::Oid>> {
        identity::as_extension_owner(|| {
            Spi::connect(|client| {
                let rows = client.select(
                    "SELECT table_name::oid FROM session_gc.policies
                      WHERE enabled OR NOT $1 ORDER BY table_name::oid",
                    None,
                    &[only_enabled.into()],
                )?;
                let mut tables = Vec::new();
                for row in rows {
                    if let Some(oid) = row.get::<pg_sys::Oid>(1)? {
                        tables.push(oid);
                    }
                }
                Ok(tables)
            })
        })
    }
}

struct StoredPolicy {
    spec: RuleSpec,
    time_zone: String,
    batch_size: Option<i32>,
}

fn read_stored(relid: pg_sys::Oid) -> GcResult<Option<StoredPolicy>> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT expires_column::text, idle_column::text, idle_timeout::text,
                    created_column::text, max_age::text, active_column::text, grace::text,
                    epoch_unit, time_zone, batch_size
               FROM session_gc.policies WHERE table_name = $1::oid::regclass",
            None,
            &[relid.into()],
        )?;
        let mut stored = None;
        for row in rows {
            stored = Some(StoredPolicy {
                spec: RuleSpec {
                    expires_column: row.get(1)?,
                    idle_column: row.get(2)?,
                    idle_timeout: row.get(3)?,
                    created_column: row.get(4)?,
                    max_age: row.get(5)?,
                    active_column: row.get(6)?,
                    grace: row.get::<String>(7)?.unwrap_or_else(|| "0".into()),
                    epoch_unit: row.get(8)?,
                },
                time_zone: row.get::<String>(9)?.unwrap_or_else(|| "UTC".into()),
                batch_size: row.get(10)?,
            });
        }
        Ok(stored)
    })
}
