//! C entry points of earlier versions whose SQL signature has changed since. A database whose
//! SQL objects are still of the earlier version (the package was upgraded, `ALTER EXTENSION
//! session_gc UPDATE` has not run yet) calls these; they refuse with a clear error instead of
//! reading arguments or returning rows of a shape the caller did not declare. PostgreSQL also
//! needs them to exist to create an earlier version (`CREATE EXTENSION ... VERSION '0.1.0'`).

use crate::error::OrRaise;
use crate::schema;
use pgrx::prelude::*;

fn refuse() -> ! {
    let installed = schema::installed_version()
        .or_raise()
        .unwrap_or_else(|| "an earlier version".into());
    schema::update_needed(&installed).raise()
}

/// `session_gc.register(...)` of 0.1.0 (12 arguments).
#[pg_extern(sql = false)]
fn register() -> bool {
    refuse()
}

/// `session_gc.cleanup(...)` of 0.1.0 (10 result columns).
#[pg_extern(sql = false)]
fn cleanup() -> bool {
    refuse()
}

/// `session_gc.cleanup(...)` of 0.2.0 (4 arguments).
#[pg_extern(sql = false)]
fn cleanup_v2() -> bool {
    refuse()
}

/// `session_gc.stats(...)` of 0.1.0 (13 result columns).
#[pg_extern(sql = false)]
fn stats() -> bool {
    refuse()
}

/// `session_gc.register(...)` of 0.2.0 and 0.3.0 (16 arguments).
#[pg_extern(sql = false)]
fn register_v2() -> bool {
    refuse()
}

/// `session_gc.unregister(regclass)` of 0.1.0 to 0.3.0.
#[pg_extern(sql = false)]
fn unregister() -> bool {
    refuse()
}

/// `session_gc.metrics()` of 0.2.0 and 0.3.0 (13 result columns).
#[pg_extern(sql = false)]
fn metrics() -> bool {
    refuse()
}
