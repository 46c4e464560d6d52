//! session_gc: expire and purge web session rows inside PostgreSQL.
//!
//! Where things live: `gucs` (settings), `api` (the SQL functions), `policy` (which rows are
//! expired), `row_filter` (the rows a policy is about), `engine` (how they are removed), `pass`
//! (a round-robin pass with committed batches), `citus` (where a table's rows are: here, or in
//! Citus shards on other nodes), `shard` (the purge of one shard on its node), `replicas` (how
//! far standbys are behind),
//! `worker` (launcher and per-database workers), `stats`, `history`, `identity` (whose rights a
//! purge runs with), `txn` (subtransactions), `schema` (tables and privileges), `frameworks`
//! (framework session tables recognized for register()'s hint), `types`, `error`.

use pgrx::prelude::*;

mod api;
mod background;
mod budget;
mod citus;
mod engine;
mod error;
mod frameworks;
mod gucs;
mod history;
mod identity;
mod legacy;
mod pass;
mod policy;
mod replicas;
mod row_filter;
mod schema;
mod shard;
mod sql;
mod stats;
mod txn;
mod types;
mod window;
mod worker;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

::pgrx::pg_module_magic!(name, version);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    // The worker exists only when preloaded, and never during pg_upgrade's binary upgrade.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    let binary_upgrade = unsafe { pg_sys::IsBinaryUpgrade };
    if preloading && !binary_upgrade {
        worker::register_launcher();
    }
    if preloading {
        budget::init_in_shared_memory();
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
