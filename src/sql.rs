//! The one door every SQL statement of session_gc goes through.
//!
//! A statement runs with the caller's `search_path` unless told otherwise, and PostgreSQL picks
//! an operator, function or cast from any schema on the path that matches the argument types
//! better than `pg_catalog`'s: a role that can create objects in `public` (or in a schema named
//! like the caller) could make a superuser's statement run its code. So no statement is run
//! here without a pinned context: `search_path = pg_catalog, pg_temp` (functions and operators
//! are never looked up in `pg_temp`), fixed date, interval and time-zone-abbreviation formats.
//! session_gc's own objects are always schema-qualified. The context is set up by the
//! outermost call and undone (a GUC nest level) on every exit path, errors included;
//! `identity` pins it again whenever it switches to another role, since code of that role
//! (a trigger) may run and change settings at its own level.
//!
//! Nothing else in `src/` calls `Spi` (a test in the suite checks it).

use crate::error::{GcError, GcResult};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::spi::SpiHeapTupleData;
use pgrx::PgOid;
use pgrx::{FromDatum, IntoDatum};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::mem::ManuallyDrop;

/// The settings every statement runs under, and why.
const PINNED: [(&str, &str); 7] = [
    // Only PostgreSQL's own functions, operators and casts; our objects are qualified.
    ("search_path", "pg_catalog, pg_temp"),
    // Keys and intervals travel as text between statements: one spelling for all callers.
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    // A zone abbreviation means the same for every caller and for the worker.
    ("timezone_abbreviations", "Default"),
    // `now() - interval '1 day'` is 24 hours for every caller, not a calendar day in its zone.
    ("TimeZone", "UTC"),
    // Backslashes in our string literals (regular expressions) are literal.
    ("standard_conforming_strings", "on"),
    // Floats print exactly (a row filter's constants are rendered back to SQL).
    ("extra_float_digits", "1"),
];

thread_local! {
    /// How many pinned contexts are open in this backend.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// An open pinned context; dropping it restores the settings it changed.
pub struct Pinned {
    guc_nest_level: Option<i32>,
}

impl Pinned {
    /// Opens a pinned context, always with a GUC nest level of its own: for identity switches,
    /// where code of another role may have changed settings at an outer level.
    pub fn enter() -> Self {
        let guc_nest_level = unsafe { pg_sys::NewGUCNestLevel() };
        DEPTH.with(|depth| depth.set(depth.get() + 1));
        let guard = Pinned {
            guc_nest_level: Some(guc_nest_level),
        };
        for (name, value) in PINNED {
            if current_setting(name).as_deref() != Some(value) {
                crate::txn::set_guc(name, value, pg_sys::GucAction::GUC_ACTION_SAVE);
            }
        }
        guard
    }

    /// Opens a pinned context unless one is open and still holds every pinned value (code of
    /// another role, a trigger say, may have changed a setting since at the open level).
    fn enter_if_needed() -> Self {
        if DEPTH.with(Cell::get) > 0 && still_pinned() {
            Pinned {
                guc_nest_level: None,
            }
        } else {
            Self::enter()
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(level) = self.guc_nest_level {
            DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
            unsafe { pg_sys::AtEOXact_GUC(false, level) };
        }
    }
}

fn still_pinned() -> bool {
    PINNED
        .iter()
        .all(|(name, value)| current_setting(name).as_deref() == Some(*value))
}

/// Runs `work` in a pinned context (a new one only if none is open).
pub fn pinned<R>(work: impl FnOnce() -> R) -> R {
    let _context = Pinned::enter_if_needed();
    work()
}

/// A setting's current value, read without SQL.
pub fn current_setting(name: &str) -> Option<String> {
    let name = std::ffi::CString::new(name).ok()?;
    unsafe { owned_text(pg_sys::GetConfigOption(name.as_ptr(), true, false)) }
}

/// A copy of a C string PostgreSQL handed out; None for a null pointer.
unsafe fn owned_text(value: *const std::ffi::c_char) -> Option<String> {
    (!value.is_null()).then(|| {
        unsafe { std::ffi::CStr::from_ptr(value) }
            .to_string_lossy()
            .into_owned()
    })
}

// Reading and writing are two doors: a statement that writes (or locks rows) makes the
// transaction take a transaction ID, which a read must not do: on a standby it cannot, and
// `stats()`, `metrics()` and dry runs must work there.

/// Runs a statement that writes, for its effects.
pub fn run(query: &str, args: &[DatumWithOid]) -> GcResult<()> {
    if !is_kept(query) {
        return pinned(|| Ok(Spi::run_with_args(query, args)?));
    }
    rows_written(query, args, |_| Ok(())).map(|_| ())
}

// Statements that write run again and again (every batch runs the same few with new values):
// they are parsed once per backend and kept, and PostgreSQL plans each execution with its values
// until, by its usual rule for prepared statements, a generic plan costs no more (under the
// server's `plan_cache_mode`, which session_gc leaves alone so that the queries of the table's
// triggers and foreign keys are planned as the DBA set). PostgreSQL re-parses a kept statement
// by itself when an object it uses changes, and keeps it per search_path (pinned). A kept plan
// is taken out of the map while it runs, so a statement run meanwhile never finds it borrowed,
// and put back however the run ends: an error (a lock timeout the walk then works around) does
// not harm a kept plan. Reads are planned each time (a count over a large table, for stats() or
// a dry run, may then use parallel workers, which a kept plan never does), but for the small
// ones every batch runs (`one_kept`).

/// How many statements are kept; past that, one is let go for each new one.
const KEPT_PLANS: usize = 64;

#[derive(PartialEq, Eq, Hash, Clone)]
struct PlanKey {
    writes: bool,
    query: String,
    types: Vec<u32>,
}

thread_local! {
    /// Never dropped at backend exit (freeing plans then is pointless): ManuallyDrop.
    static KEPT: RefCell<HashMap<PlanKey, ManuallyDrop<OwnedPreparedStatement>>> =
        RefCell::new(HashMap::new());
}

/// Statements the write door keeps: DML and row-locking queries; utility statements (DDL,
/// LOCK) run as they are.
fn is_kept(query: &str) -> bool {
    let first = query
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    matches!(
        first.as_str(),
        "SELECT" | "WITH" | "INSERT" | "UPDATE" | "DELETE"
    )
}

/// Gives a kept plan back to the map when dropped, on success and on unwinding alike.
struct Borrowed {
    key: PlanKey,
    plan: ManuallyDrop<OwnedPreparedStatement>,
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        // SAFETY: `plan` is taken once, here, and `self` is not used after.
        let plan = unsafe { ManuallyDrop::take(&mut self.plan) };
        KEPT.with(|kept| {
            let Ok(mut kept) = kept.try_borrow_mut() else {
                return; // dropped here, which frees it
            };
            if kept.len() >= KEPT_PLANS {
                let evicted = kept.keys().next().cloned();
                if let Some(old) = evicted.and_then(|key| kept.remove(&key)) {
                    drop(ManuallyDrop::into_inner(old));
                }
            }
            // A statement run again while this one ran was prepared anew: one is enough.
            if let Some(twin) = kept.insert(self.key.clone(), ManuallyDrop::new(plan)) {
                drop(ManuallyDrop::into_inner(twin));
            }
        });
    }
}

/// Runs a statement with its kept plan (prepared now if not kept yet).
fn with_kept_plan<R>(
    client: &mut pgrx::spi::SpiClient<'_>,
    writes: bool,
    query: &str,
    args: &[DatumWithOid],
    run: impl FnOnce(&mut pgrx::spi::SpiClient<'_>, &OwnedPreparedStatement) -> GcResult<R>,
) -> GcResult<R> {
    let key = PlanKey {
        writes,
        query: query.to_string(),
        types: args.iter().map(|a| a.oid().to_u32()).collect(),
    };
    let kept = KEPT.with(|kept| kept.borrow_mut().remove(&key));
    let plan = match kept {
        Some(plan) => plan,
        None => ManuallyDrop::new({
            let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
            if writes {
                client.prepare_mut(query, &types)?.keep()
            } else {
                client.prepare(query, &types)?.keep()
            }
        }),
    };
    let borrowed = Borrowed { key, plan };
    run(client, &borrowed.plan)
}

/// The first column of the first row of a statement that writes (INSERT ... RETURNING).
pub fn write_one<T: FromDatum + IntoDatum>(
    query: &str,
    args: &[DatumWithOid],
) -> GcResult<Option<T>> {
    Ok(
        rows_written(query, args, |row| row.get::<T>(1).map_err(GcError::from))?
            .into_iter()
            .next()
            .flatten(),
    )
}

/// The first column of the first row of a read (None: no row, or NULL).
pub fn one<T: FromDatum + IntoDatum>(query: &str, args: &[DatumWithOid]) -> GcResult<Option<T>> {
    Ok(rows(query, args, |row| Ok(row.get::<T>(1)?))?
        .into_iter()
        .next()
        .flatten())
}

/// The first two columns of the first row of a read.
pub fn two<A, B>(query: &str, args: &[DatumWithOid]) -> GcResult<(Option<A>, Option<B>)>
where
    A: FromDatum + IntoDatum,
    B: FromDatum + IntoDatum,
{
    Ok(
        rows(query, args, |row| Ok((row.get::<A>(1)?, row.get::<B>(2)?)))?
            .into_iter()
            .next()
            .unwrap_or((None, None)),
    )
}

/// The first three columns of the first row of a read.
#[allow(clippy::type_complexity)]
pub fn three<A, B, C>(
    query: &str,
    args: &[DatumWithOid],
) -> GcResult<(Option<A>, Option<B>, Option<C>)>
where
    A: FromDatum + IntoDatum,
    B: FromDatum + IntoDatum,
    C: FromDatum + IntoDatum,
{
    Ok(rows(query, args, |row| {
        Ok((row.get::<A>(1)?, row.get::<B>(2)?, row.get::<C>(3)?))
    })?
    .into_iter()
    .next()
    .unwrap_or((None, None, None)))
}

/// Like `one`, with a kept plan: for the small reads every batch runs (a cutoff, a catalog
/// row), never for a count over a table.
pub fn one_kept<T: FromDatum + IntoDatum>(
    query: &str,
    args: &[DatumWithOid],
) -> GcResult<Option<T>> {
    let found = pinned(|| {
        Spi::connect_mut(|client| {
            with_kept_plan(client, false, query, args, |client, plan| {
                map_rows(client.select(plan, None, args)?, |row| Ok(row.get::<T>(1)?))
            })
        })
    })?;
    Ok(found.into_iter().next().flatten())
}

/// The first two columns of the first row of a read that must see some of the caller's own
/// settings (`settings`, applied over the pinned ones for this read only): how the caller's
/// `timezone_abbreviations` reads a zone abbreviation, say.
pub fn two_as_caller_reads<A, B>(
    settings: &[(&str, String)],
    query: &str,
    args: &[DatumWithOid],
) -> GcResult<(Option<A>, Option<B>)>
where
    A: FromDatum + IntoDatum,
    B: FromDatum + IntoDatum,
{
    let _context = Pinned::enter();
    for (name, value) in settings {
        crate::txn::set_guc(name, value, pg_sys::GucAction::GUC_ACTION_SAVE);
    }
    // Straight to SPI: the other doors would pin these settings back.
    let found = Spi::connect(|client| {
        map_rows(client.select(query, None, args)?, |row| {
            Ok((row.get::<A>(1)?, row.get::<B>(2)?))
        })
    })?;
    Ok(found.into_iter().next().unwrap_or((None, None)))
}

/// Maps every row of a read (read-only while the transaction has written nothing).
pub fn rows<R>(
    query: &str,
    args: &[DatumWithOid],
    each: impl FnMut(&SpiHeapTupleData) -> GcResult<R>,
) -> GcResult<Vec<R>> {
    pinned(|| Spi::connect(|client| map_rows(client.select(query, None, args)?, each)))
}

/// Maps every row of a statement that writes (a DELETE ... RETURNING in a CTE).
pub fn rows_written<R>(
    query: &str,
    args: &[DatumWithOid],
    each: impl FnMut(&SpiHeapTupleData) -> GcResult<R>,
) -> GcResult<Vec<R>> {
    if !is_kept(query) {
        return pinned(|| {
            Spi::connect_mut(|client| map_rows(client.update(query, None, args)?, each))
        });
    }
    pinned(|| {
        Spi::connect_mut(|client| {
            with_kept_plan(client, true, query, args, |client, plan| {
                map_rows(client.update(plan, None, args)?, each)
            })
        })
    })
}

/// What a `DELETE ... RETURNING ctid, rule` run with a row limit returned, read straight from
/// SPI's tuple table (a batch returns hundreds of rows and needs only this of them).
#[derive(Debug, Default)]
pub struct DeletedRows {
    /// Rows per value of the second column (a rule kind's index), when counted.
    pub per_rule: Vec<i64>,
    pub rows: usize,
    /// The ctids (first column) of the last two rows, the last first.
    pub last_tids: Vec<pg_sys::ItemPointerData>,
}

/// Runs a `DELETE ... RETURNING ctid, rule` (a kept statement) stopped after `limit` rows; with
/// `rule_kinds`, counts the rows per value of the second column.
pub fn delete_up_to(
    query: &str,
    args: &[DatumWithOid],
    limit: i64,
    rule_kinds: Option<usize>,
) -> GcResult<DeletedRows> {
    let limit = limit.clamp(1, i64::from(i32::MAX)) as std::ffi::c_long;
    pinned(|| {
        Spi::connect_mut(|client| {
            with_kept_plan(client, true, query, args, |client, plan| {
                let table = client.update(plan, Some(limit), args)?;
                let mut deleted = DeletedRows {
                    rows: table.len(),
                    per_rule: vec![0; rule_kinds.unwrap_or(0)],
                    last_tids: Vec::with_capacity(2),
                };
                // SAFETY: the tuple table SPI just filled (`table` reads the same one), alive
                // until this connection ends; each tuple has the statement's two columns, a tid
                // and an int4.
                unsafe {
                    let tuptable = pg_sys::SPI_tuptable;
                    if tuptable.is_null() || deleted.rows == 0 {
                        return Ok(deleted);
                    }
                    let desc = (*tuptable).tupdesc;
                    let tuples = std::slice::from_raw_parts((*tuptable).vals, deleted.rows);
                    if rule_kinds.is_some() {
                        for tuple in tuples {
                            let mut null = false;
                            let rule = pg_sys::SPI_getbinval(*tuple, desc, 2, &mut null);
                            let slot = rule.value() as u32 as usize;
                            if let (false, Some(count)) = (null, deleted.per_rule.get_mut(slot)) {
                                *count += 1;
                            }
                        }
                    }
                    for tuple in tuples.iter().rev().take(2) {
                        let mut null = false;
                        let tid = pg_sys::SPI_getbinval(*tuple, desc, 1, &mut null);
                        if !null {
                            deleted
                                .last_tids
                                .push(*tid.cast_mut_ptr::<pg_sys::ItemPointerData>());
                        }
                    }
                }
                Ok(deleted)
            })
        })
    })
}

fn map_rows<R>(
    table: pgrx::spi::SpiTupleTable<'_>,
    mut each: impl FnMut(&SpiHeapTupleData) -> GcResult<R>,
) -> GcResult<Vec<R>> {
    let mut mapped = Vec::with_capacity(table.len());
    for row in table {
        mapped.push(each(&row)?);
    }
    Ok(mapped)
}

/// The planner's row estimate for a read (its top plan node), without running it. EXPLAIN is
/// not a read to SPI's read-only mode, and pgrx's writing mode takes a transaction ID, so it
/// goes to SPI directly: read-write mode, which assigns none by itself.
pub fn planned_rows(query: &str, args: &[DatumWithOid]) -> GcResult<f64> {
    let text = std::ffi::CString::new(format!("EXPLAIN (FORMAT JSON) {query}"))
        .map_err(|_| GcError::invalid_parameter("a statement contains a NUL byte"))?;
    let mut types: Vec<pg_sys::Oid> = args.iter().map(DatumWithOid::oid).collect();
    let mut values: Vec<pg_sys::Datum> = args
        .iter()
        .map(|arg| {
            arg.datum()
                .map(|d| d.sans_lifetime())
                .unwrap_or(pg_sys::Datum::from(0usize))
        })
        .collect();
    let nulls: Vec<std::ffi::c_char> = args
        .iter()
        .map(|arg| if arg.datum().is_some() { b' ' } else { b'n' } as std::ffi::c_char)
        .collect();
    let plan = pinned(|| {
        Spi::connect(|_client| unsafe {
            let status = pg_sys::SPI_execute_with_args(
                text.as_ptr(),
                i32::try_from(args.len()).unwrap_or(0),
                types.as_mut_ptr(),
                values.as_mut_ptr(),
                nulls.as_ptr(),
                false,
                1,
            );
            let table = pg_sys::SPI_tuptable;
            if status < 0 || table.is_null() || pg_sys::SPI_processed == 0 {
                return Err(GcError::new(
                    pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!("EXPLAIN failed (SPI status {status})"),
                ));
            }
            Ok(
                owned_text(pg_sys::SPI_getvalue(*(*table).vals, (*table).tupdesc, 1))
                    .unwrap_or_default(),
            )
        })
    })?;
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap_or_default();
    Ok(plan
        .get(0)
        .and_then(|entry| entry.get("Plan"))
        .and_then(|node| node.get("Plan Rows"))
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0))
}

/// Opens the SPI connection of a procedure that commits (`CALL` outside a transaction block).
pub fn connect_nonatomic() -> GcResult<()> {
    let connected = unsafe { pg_sys::SPI_connect_ext(pg_sys::SPI_OPT_NONATOMIC as i32) };
    if connected == pg_sys::SPI_OK_CONNECT as i32 {
        Ok(())
    } else {
        Err(GcError::new(
            pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "could not connect to SPI",
        ))
    }
}

/// Commits the procedure's transaction and starts the next (after `connect_nonatomic`).
pub fn commit() {
    unsafe { pg_sys::SPI_commit() };
}

/// Closes the connection `connect_nonatomic` opened.
pub fn finish_nonatomic() {
    unsafe { pg_sys::SPI_finish() };
}

/// A setting as SHOW displays it (through its show hook): `TimeZone` set from an interval
/// shows as the POSIX zone it became, where its stored value is the interval's text.
pub fn shown_setting(name: &str) -> Option<String> {
    let name = std::ffi::CString::new(name).ok()?;
    unsafe {
        owned_text(pg_sys::GetConfigOptionByName(
            name.as_ptr(),
            std::ptr::null_mut(),
            true,
        ))
    }
}
