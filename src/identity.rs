//! Whose identity a piece of work runs under.
//!
//! Purges and counts run as the table's owner inside a security-restricted operation, the way
//! VACUUM and ANALYZE do, so a trigger or a cascade on a session table never runs with the
//! rights of the superuser (or worker) that asked for the purge. Our own catalog work runs as
//! the extension's owner, so roles granted `cleanup()` need no rights on our tables.
//! Both get a fresh GUC nest level with a safe `search_path`, undone on every exit path.

use crate::error::{GcError, GcResult};
use crate::gucs;
use crate::policy::TableInfo;
use crate::sql;
use pgrx::pg_sys;

/// Restores the previous user, security context and GUC values when dropped,
/// including while an error unwinds.
struct IdentityGuard {
    saved_user: pg_sys::Oid,
    saved_context: i32,
    /// The pinned settings of this identity; restored before the user is.
    pinned: Option<sql::Pinned>,
}

impl IdentityGuard {
    fn enter(role: pg_sys::Oid, restricted: bool, settings: &[(&str, String)]) -> Self {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_context = 0;
        unsafe { pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context) };
        let mut context = saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32;
        if restricted {
            context |= pg_sys::SECURITY_RESTRICTED_OPERATION as i32;
        }
        unsafe { pg_sys::SetUserIdAndSecContext(role, context) };
        let guard = IdentityGuard {
            saved_user,
            saved_context,
            pinned: Some(sql::Pinned::enter()),
        };
        for (name, value) in settings {
            // Setting a value a setting already has costs a parse and a restore for nothing
            // (every batch enters a few identities).
            if sql::current_setting(name).as_deref() != Some(value.as_str()) {
                crate::txn::set_guc(name, value, pg_sys::GucAction::GUC_ACTION_SAVE);
            }
        }
        guard
    }
}

impl Drop for IdentityGuard {
    fn drop(&mut self) {
        drop(self.pinned.take());
        unsafe { pg_sys::SetUserIdAndSecContext(self.saved_user, self.saved_context) };
    }
}

/// Runs `work` as the owner of `relid`, security-restricted, with the purge's lock timeout.
pub fn as_table_owner<R>(owner: pg_sys::Oid, work: impl FnOnce() -> R) -> R {
    as_table_owner_waiting(owner, gucs::lock_timeout_ms(), work)
}

/// Like `as_table_owner`, with a lock timeout of its own; a caller's stricter `lock_timeout`
/// stands.
pub fn as_table_owner_waiting<R>(
    owner: pg_sys::Oid,
    lock_timeout_ms: i32,
    work: impl FnOnce() -> R,
) -> R {
    as_table_owner_with(owner, lock_timeout_ms, &[], work)
}

/// Like `as_table_owner_waiting`, with more settings for the work (planner settings).
/// `session_replication_role` is always `origin`: a role or database default of `replica`
/// would make the purge skip the foreign keys' ON DELETE actions.
pub fn as_table_owner_with<R>(
    owner: pg_sys::Oid,
    lock_timeout_ms: i32,
    extra: &[(&str, &str)],
    work: impl FnOnce() -> R,
) -> R {
    let callers = unsafe { pg_sys::LockTimeout };
    let wait = if callers > 0 {
        lock_timeout_ms.min(callers)
    } else {
        lock_timeout_ms
    };
    let mut settings = vec![
        ("lock_timeout", format!("{wait}ms")),
        ("session_replication_role", "origin".to_string()),
    ];
    settings.extend(extra.iter().map(|(name, value)| (*name, value.to_string())));
    let _guard = IdentityGuard::enter(owner, true, &settings);
    work()
}

/// Runs `work` (our own catalog statements) as the owner of the extension.
pub fn as_extension_owner<R>(work: impl FnOnce() -> R) -> R {
    as_extension_owner_with(&[], work)
}

/// Like `as_extension_owner`, waiting at most `lock_timeout_ms` for a lock.
pub fn as_extension_owner_waiting<R>(lock_timeout_ms: i32, work: impl FnOnce() -> R) -> R {
    as_extension_owner_with(&[("lock_timeout", format!("{lock_timeout_ms}ms"))], work)
}

fn as_extension_owner_with<R>(settings: &[(&str, String)], work: impl FnOnce() -> R) -> R {
    let owner = extension_owner().unwrap_or_else(|| unsafe { pg_sys::GetUserId() });
    let _guard = IdentityGuard::enter(owner, false, settings);
    work()
}

thread_local! {
    /// The extension's owner as read in the transaction that started at the given moment.
    static EXTENSION_OWNER: std::cell::Cell<Option<(pg_sys::TimestampTz, pg_sys::Oid)>> =
        const { std::cell::Cell::new(None) };
}

/// The extension's owner, read once per transaction (a batch switches to it twice).
fn extension_owner() -> Option<pg_sys::Oid> {
    let transaction = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    if let Some((read_in, owner)) = EXTENSION_OWNER.get() {
        if read_in == transaction {
            return Some(owner);
        }
    }
    let owner = sql::one_kept::<pg_sys::Oid>(
        "SELECT extowner FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'session_gc'::pg_catalog.name",
        &[],
    )
    .ok()
    .flatten()?;
    EXTENSION_OWNER.set(Some((transaction, owner)));
    Some(owner)
}

/// The role the current call is made by (after SET ROLE, before any switch of ours).
pub fn current_user() -> pg_sys::Oid {
    unsafe { pg_sys::GetUserId() }
}

/// Whether the current user has the privileges of `owner` (is it, a member of it, or superuser).
pub fn acts_as(owner: pg_sys::Oid) -> bool {
    unsafe { pg_sys::has_privs_of_role(current_user(), owner) }
}

/// Refuses with 42501 unless the caller acts as the table's owner.
pub fn require_owner(table: &TableInfo) -> GcResult<()> {
    if acts_as(table.owner) {
        Ok(())
    } else {
        Err(GcError::not_owner(&table.display_name))
    }
}
