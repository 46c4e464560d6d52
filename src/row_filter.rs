//! A policy's row filter: which of a table's rows the policy is about (Phoenix keeps every kind
//! of token in one table, each valid for its own time: `context = 'session'`).
//!
//! The filter is SQL written by the table's owner. It is never pasted into a statement as
//! written: it is parsed and analyzed against the table as the owner, under the pinned
//! settings, and refused unless it is exactly one boolean condition on the table's rows (text
//! like `true) OR (true` would otherwise escape the parentheses it is put in and change what a
//! purge deletes). Statements get PostgreSQL's own rendering of the analyzed expression
//! (`deparse_expression`, as `pg_get_constraintdef` renders a CHECK), each column prefixed
//! with the statement's alias, every function and operator outside `pg_catalog` qualified.

use crate::error::{GcError, GcResult};
use crate::identity;
use crate::policy::TableInfo;
use crate::sql;
use crate::txn;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::cell::RefCell;
use std::ffi::{CStr, CString};

/// An analyzed row filter.
#[derive(Debug)]
pub struct RowFilter {
    /// As the owner wrote it (shown back by register()).
    pub text: String,
    relid: pg_sys::Oid,
    /// The analyzed expression, as `nodeToString` writes it.
    tree: CString,
    /// Renderings already made, per alias.
    rendered: RefCell<Vec<(String, String)>>,
}

impl RowFilter {
    /// Parses and checks `text` against the table, as its owner.
    pub fn analyze(info: &TableInfo, text: &str) -> GcResult<RowFilter> {
        if text.trim().is_empty() {
            return Err(invalid(text, "The filter is empty.")
                .hint("Pass a condition on the table's columns, or leave row_filter out."));
        }
        let statement = format!("SELECT FROM {} WHERE (\n{text}\n)", info.quoted_table);
        let statement = CString::new(statement).map_err(|_| {
            invalid(text, "The filter contains a zero byte.")
                .hint("Pass a condition on the table's columns.")
        })?;
        // In a subtransaction: a parse or analysis error is rolled back and answered here.
        let analyzed = identity::as_table_owner(info.owner, || {
            txn::in_subtransaction(|| Ok(unsafe { analyze_condition(&statement, info.relid) }))
        })
        .map_err(|error| {
            // A mistake in the filter (syntax, names, types: classes 42 and 22) is the
            // filter's; anything else (a lock timeout) is reported as it is.
            if matches!(sqlstate_class(error.code), [b'4', b'2'] | [b'2', b'2']) {
                GcError::new(error.code, format!("invalid row_filter: {}", error.message))
                    .detail(format!("The filter was: {text}"))
                    .hint(
                        "Write one condition on the table's columns, as in a WHERE clause: \
                         context = 'session'. Functions outside pg_catalog must be \
                         schema-qualified.",
                    )
            } else {
                error
            }
        })?;
        let tree = match analyzed {
            Analyzed::Condition(tree) => tree,
            Analyzed::NotOneCondition => {
                return Err(invalid(
                    text,
                    "It is not one condition on the table's columns: it ends a parenthesis it did not open, adds a clause of its own, or reads other rows (a subquery).",
                )
                .hint("Write one condition on the table's columns, as in a WHERE clause: context = 'session'."))
            }
            Analyzed::Volatile => {
                return Err(invalid(
                    text,
                    "It calls a volatile function, so a row could be selected by one check and not by the next.",
                )
                .hint("Use only immutable or stable functions in the filter."))
            }
        };
        Ok(RowFilter {
            text: text.to_string(),
            relid: info.relid,
            tree,
            rendered: RefCell::new(Vec::new()),
        })
    }

    /// The filter as SQL for a row aliased `alias`, parenthesized.
    pub fn sql(&self, alias: &str) -> String {
        if let Some((_, sql)) = self.rendered.borrow().iter().find(|(a, _)| a == alias) {
            return sql.clone();
        }
        let rendered = format!("({})", self.render(alias));
        self.rendered
            .borrow_mut()
            .push((alias.to_string(), rendered.clone()));
        rendered
    }

    fn render(&self, alias: &str) -> String {
        // Qualification depends on the search_path: render under the one statements run with.
        let _pinned = sql::Pinned::enter();
        // An alias is one of the engine's own short names, never input.
        let alias = CString::new(alias).unwrap_or_default();
        unsafe {
            let node = pg_sys::stringToNode(self.tree.as_ptr()) as *mut pg_sys::Node;
            let context = pg_sys::deparse_context_for(alias.as_ptr(), self.relid);
            let text = pg_sys::deparse_expression(node, context, true, false);
            CStr::from_ptr(text).to_string_lossy().into_owned()
        }
    }
}

enum Analyzed {
    Condition(CString),
    NotOneCondition,
    Volatile,
}

/// Parses and analyzes `SELECT FROM table WHERE (filter)`; its WHERE is the filter only if
/// the statement is exactly that.
unsafe fn analyze_condition(statement: &CStr, relid: pg_sys::Oid) -> Analyzed {
    let parsed = pg_sys::raw_parser(statement.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
    if parsed.is_null() || (*parsed).length != 1 {
        return Analyzed::NotOneCondition;
    }
    let raw = pg_sys::list_nth(parsed, 0) as *mut pg_sys::RawStmt;
    let query = pg_sys::parse_analyze_fixedparams(
        raw,
        statement.as_ptr(),
        std::ptr::null(),
        0,
        std::ptr::null_mut(),
    );
    let q = &*query;
    let jointree = q.jointree;
    let plain_select = q.commandType == pg_sys::CmdType::CMD_SELECT
        && q.utilityStmt.is_null()
        && q.setOperations.is_null()
        && q.cteList.is_null()
        && q.targetList.is_null()
        && q.groupClause.is_null()
        && q.groupingSets.is_null()
        && q.havingQual.is_null()
        && q.windowClause.is_null()
        && q.distinctClause.is_null()
        && q.sortClause.is_null()
        && q.limitOffset.is_null()
        && q.limitCount.is_null()
        && q.rowMarks.is_null()
        && !q.hasAggs
        && !q.hasWindowFuncs
        && !q.hasTargetSRFs
        && !q.hasModifyingCTE
        && !q.hasSubLinks
        && !q.rtable.is_null()
        && (*q.rtable).length == 1
        // The table analyzed is the one rendered against (not one renamed into its name).
        && (*(pg_sys::list_nth(q.rtable, 0) as *mut pg_sys::RangeTblEntry)).relid == relid
        && !jointree.is_null()
        && !(*jointree).fromlist.is_null()
        && (*(*jointree).fromlist).length == 1
        && !(*jointree).quals.is_null();
    if !plain_select {
        return Analyzed::NotOneCondition;
    }
    let quals = (*jointree).quals;
    if pg_sys::contain_volatile_functions(quals) {
        return Analyzed::Volatile;
    }
    let tree = CStr::from_ptr(pg_sys::nodeToString(quals as *const _)).to_owned();
    Analyzed::Condition(tree)
}

/// The two characters of a SQLSTATE's class (`MAKE_SQLSTATE` packs six bits per character).
fn sqlstate_class(code: PgSqlErrorCode) -> [u8; 2] {
    let packed = code as i32;
    [
        (packed & 0x3F) as u8 + b'0',
        ((packed >> 6) & 0x3F) as u8 + b'0',
    ]
}

fn invalid(text: &str, detail: &str) -> GcError {
    GcError::new(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        "invalid row_filter",
    )
    .detail(format!("{detail} The filter was: {text}"))
}
