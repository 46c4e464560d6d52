//! Citus on real clusters: a coordinator and two workers, each its own PostgreSQL on this
//! machine, with the vendored Citus built by the test command (`scripts/citus.sh`, PostgreSQL 16
//! and 17; `SESSION_GC_CITUS=1` says it was built). Elsewhere these tests say they are skipped.
//!
//! Policies are registered on the coordinator; each shard is purged on its node in committed
//! batches of at most the batch size (a trigger on every shard logs each transaction's
//! deletes), rows the application holds or extended are kept, a stopped node fails only its own
//! shards, and a shard moved while the worker purges loses nothing.

use postgres::Client;
use session_gc_integration::{count, expect_error, scalar, wait_until, Cluster};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

const DB: &str = "citus_db";
const DEADLINE: Duration = Duration::from_secs(120);

fn citus_built() -> bool {
    let built = std::env::var("SESSION_GC_CITUS").as_deref() == Ok("1");
    if !built {
        eprintln!("Citus is not built for this PostgreSQL major (SESSION_GC_CITUS unset): skipped");
    }
    built
}

/// A coordinator (session_gc preloaded) and two workers.
struct CitusCluster {
    coordinator: Cluster,
    workers: Vec<Cluster>,
}

impl CitusCluster {
    fn start(name: &str, coordinator_conf: &[&str]) -> CitusCluster {
        let common = [
            "listen_addresses = '127.0.0.1'",
            "max_connections = 120",
            "max_prepared_transactions = 40",
            "wal_level = logical",
            "max_replication_slots = 10",
            "max_wal_senders = 10",
        ];
        let mut worker_conf = vec!["shared_preload_libraries = 'citus'"];
        worker_conf.extend(common);
        let workers: Vec<Cluster> = (1..=2)
            .map(|i| Cluster::start(&format!("{name}-w{i}"), &worker_conf))
            .collect();
        let mut conf = vec!["shared_preload_libraries = 'citus,session_gc'"];
        conf.extend(common);
        conf.extend(coordinator_conf);
        let coordinator = Cluster::start(&format!("{name}-c"), &conf);
        for node in workers.iter().chain([&coordinator]) {
            node.empty_db(DB);
            node.connect(DB)
                .batch_execute("CREATE EXTENSION citus")
                .unwrap();
        }
        let mut c = coordinator.connect(DB);
        c.batch_execute(&format!(
            "SELECT citus_set_coordinator_host('127.0.0.1', {});",
            coordinator.port
        ))
        .unwrap();
        for worker in &workers {
            c.batch_execute(&format!(
                "SELECT citus_add_node('127.0.0.1', {})",
                worker.port
            ))
            .unwrap();
        }
        // Citus creates it on the workers too.
        c.batch_execute("CREATE EXTENSION session_gc").unwrap();
        CitusCluster {
            coordinator,
            workers,
        }
    }

    fn connect(&self) -> Client {
        self.coordinator.connect(DB)
    }
}

/// The cluster of the tests that do not stop nodes or run the worker.
fn shared() -> &'static CitusCluster {
    static SHARED: OnceLock<CitusCluster> = OnceLock::new();
    SHARED.get_or_init(|| CitusCluster::start("citus", &["session_gc.enabled = off"]))
}

/// A distributed session table on `user_id` (not a rule column), 8 shards, each with a trigger
/// logging how many rows each transaction deleted from it (in a table on its node).
fn distributed_sessions(c: &mut Client, table: &str, expired: i64, live: i64) {
    // One table at a time: the tests share the function and the log table.
    static SETTING_UP: Mutex<()> = Mutex::new(());
    let _one_at_a_time = SETTING_UP.lock().unwrap_or_else(|e| e.into_inner());
    // Each statement its own transaction: Citus runs a function's creation over one connection
    // per node, which a transaction that already wrote to shards in parallel cannot.
    c.batch_execute(
        "CREATE OR REPLACE FUNCTION public.log_deletes() RETURNS trigger LANGUAGE plpgsql AS
             'BEGIN INSERT INTO public.deletes_per_transaction SELECT TG_TABLE_NAME, pg_catalog.pg_current_xact_id(), count(*) FROM gone; RETURN NULL; END'",
    )
    .unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE {table} (user_id bigint NOT NULL, id bigserial, expires timestamptz NOT NULL,
                               kind text NOT NULL DEFAULT 'web', data text DEFAULT repeat('x', 50),
                               PRIMARY KEY (user_id, id));
         CREATE INDEX ON {table} (expires);
         SELECT create_distributed_table('{table}', 'user_id', shard_count => 8, colocate_with => 'none');
         INSERT INTO {table} (user_id, expires)
              SELECT g % 97, now() - interval '1 minute' - g * interval '1 millisecond' FROM generate_series(1, {expired}) g;
         INSERT INTO {table} (user_id, expires)
              SELECT g % 89, now() + interval '1 hour' FROM generate_series(1, {live}) g;
"
    ))
    .unwrap();
    // Through connections of their own, which see only what is committed.
    c.batch_execute(
        "SELECT run_command_on_workers($$CREATE TABLE IF NOT EXISTS public.deletes_per_transaction (shard text, xid xid8, n int8)$$)",
    )
    .unwrap();
    c.batch_execute(&format!(
        "SELECT run_command_on_shards('{table}', $$CREATE TRIGGER log_deletes AFTER DELETE ON %s
             REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION public.log_deletes()$$)"
    ))
    .unwrap();
    let triggers: i64 = scalar(
        c,
        &format!(
            "SELECT count(*) FROM run_command_on_shards('{table}',
                 $$SELECT count(*) FROM pg_trigger WHERE tgrelid = '%s'::regclass AND tgname = 'log_deletes'$$)
              WHERE success AND result = '1'"
        ),
    );
    assert_eq!(triggers, 8, "a logging trigger on every shard of {table}");
}

/// The last history row of `table`, for assertions that show it.
fn last_run(c: &mut Client, table: &str) -> (String, i64, Option<String>) {
    let row = c
        .query_one(
            &format!(
                "SELECT status, deleted, error FROM session_gc.history
                  WHERE relid = '{table}'::regclass ORDER BY id DESC LIMIT 1"
            ),
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// The most rows one transaction deleted from one shard of `table`, over the workers.
fn largest_transaction(cluster: &CitusCluster, table: &str) -> i64 {
    cluster
        .workers
        .iter()
        .map(|worker| {
            scalar::<Option<i64>>(
                &mut worker.connect(DB),
                &format!(
                    "SELECT max(total)::int8 FROM (SELECT sum(n) AS total FROM public.deletes_per_transaction
                      WHERE shard LIKE '{table}\\_%' GROUP BY xid, shard) t"
                ),
            )
            .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

fn expired_left(c: &mut Client, table: &str) -> i64 {
    count(c, &format!("{table} WHERE expires < now()"))
}

#[test]
fn a_distributed_table_is_purged_on_its_shards_in_small_batches() {
    if !citus_built() {
        return;
    }
    let cluster = shared();
    let mut c = cluster.connect();
    distributed_sessions(&mut c, "d_sessions", 6000, 3000);
    let registered: String = scalar(
        &mut c,
        "SELECT session_gc.register('d_sessions', expires_column => 'expires')",
    );
    assert!(registered.contains("expires < now()"), "{registered}");
    // stats() and a dry run count the distributed table as one, exactly.
    let expired: i64 = scalar(
        &mut c,
        "SELECT expired_rows FROM session_gc.stats('d_sessions')",
    );
    assert_eq!(expired, 6000);
    let dry: i64 = scalar(
        &mut c,
        "SELECT deleted FROM session_gc.cleanup('d_sessions', dry_run => true)",
    );
    assert_eq!(dry, 6000);
    assert_eq!(count(&mut c, "d_sessions"), 9000);
    // The application extends one expired session and holds another (through the coordinator).
    let mut app = cluster.connect();
    let mut held = app.transaction().unwrap();
    held.batch_execute(
        "UPDATE d_sessions SET expires = now() + interval '1 hour' WHERE user_id = 1 AND id = 1;
         SELECT 1 FROM d_sessions WHERE user_id = 2 AND id = 2 FOR UPDATE;",
    )
    .unwrap();
    c.batch_execute(
        "SET statement_timeout = '60s'; CALL session_gc.purge('d_sessions', batch_size => 100)",
    )
    .unwrap();
    held.commit().unwrap();
    // Every expired row but the held one is gone; every live row, and the extended one, stays.
    assert_eq!(expired_left(&mut c, "d_sessions"), 1);
    assert_eq!(count(&mut c, "d_sessions WHERE expires >= now()"), 3001);
    // No transaction on a shard deleted more than the batch size.
    let largest = largest_transaction(cluster, "d_sessions");
    assert!(
        (1..=100).contains(&largest),
        "largest shard transaction deleted {largest} rows"
    );
    // One history row for the table, with the count; metrics() has it as one table.
    let run = last_run(&mut c, "d_sessions");
    assert_eq!((run.0.as_str(), run.1), ("ok", 5998), "{run:?}");
    let total: i64 = scalar(
        &mut c,
        "SELECT deleted_total FROM session_gc.metrics() WHERE table_name = 'public.d_sessions'",
    );
    assert_eq!(total, 5998);
    // The held row is taken by the next run.
    c.batch_execute("CALL session_gc.purge('d_sessions')")
        .unwrap();
    assert_eq!(expired_left(&mut c, "d_sessions"), 0);
    assert_eq!(count(&mut c, "d_sessions"), 3001);
}

#[test]
fn row_filters_apply_on_every_shard() {
    if !citus_built() {
        return;
    }
    let cluster = shared();
    let mut c = cluster.connect();
    distributed_sessions(&mut c, "f_tokens", 0, 0);
    c.batch_execute(
        "INSERT INTO f_tokens (user_id, expires, kind)
              SELECT g, now() - interval '2 days', CASE WHEN g % 2 = 0 THEN 'web' ELSE 'api' END
                FROM generate_series(1, 2000) g;
         SELECT session_gc.register('f_tokens', policy_name => 'web', row_filter => $$kind = 'web'$$,
                                    expires_column => 'expires');
         SELECT session_gc.register('f_tokens', policy_name => 'api', row_filter => $$kind = 'api'$$,
                                    created_column => 'expires', max_age => '7 days');",
    )
    .unwrap();
    c.batch_execute("CALL session_gc.purge('f_tokens', batch_size => 50)")
        .unwrap();
    // Web tokens expired; API tokens are kept for 7 days.
    let run = last_run(&mut c, "f_tokens");
    assert_eq!(count(&mut c, "f_tokens WHERE kind = 'web'"), 0, "{run:?}");
    assert_eq!(count(&mut c, "f_tokens WHERE kind = 'api'"), 1000);
}

#[test]
fn local_and_reference_tables_are_purged_and_what_cannot_be_is_refused() {
    if !citus_built() {
        return;
    }
    let cluster = shared();
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE TABLE l_plain (id bigserial PRIMARY KEY, expires timestamptz NOT NULL);
         CREATE TABLE l_citus_local (id bigserial PRIMARY KEY, expires timestamptz NOT NULL);
         SELECT citus_add_local_table_to_metadata('l_citus_local');
         CREATE TABLE l_reference (id bigserial PRIMARY KEY, expires timestamptz NOT NULL);
         SELECT create_reference_table('l_reference');",
    )
    .unwrap();
    for table in ["l_plain", "l_citus_local", "l_reference"] {
        c.batch_execute(&format!(
            "INSERT INTO {table} (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 1500);
             INSERT INTO {table} (expires) SELECT now() + interval '1 hour' FROM generate_series(1, 500);"
        ))
        .unwrap();
    }
    for table in ["l_plain", "l_citus_local"] {
        c.batch_execute(&format!(
            "SELECT session_gc.register('{table}', expires_column => 'expires');
             CALL session_gc.purge('{table}', batch_size => 100);"
        ))
        .unwrap();
        assert_eq!(count(&mut c, table), 500, "{table}");
    }
    // A reference table is purged through Citus: every copy deletes the same rows.
    c.batch_execute(
        "SELECT session_gc.register('l_reference', expires_column => 'expires', batch_size => 100)",
    )
    .unwrap();
    c.batch_execute("CALL session_gc.purge('l_reference')")
        .unwrap();
    let run = last_run(&mut c, "l_reference");
    assert_eq!((run.0.as_str(), run.1), ("ok", 1500), "{run:?}");
    let batches: i32 = scalar(
        &mut c,
        "SELECT batches FROM session_gc.history WHERE relid = 'l_reference'::regclass ORDER BY id DESC LIMIT 1",
    );
    assert!(batches >= 15, "batches of at most 100 rows: {batches}");
    let copies: Vec<String> = c
        .query(
            "SELECT result FROM run_command_on_placements('l_reference',
                 $$SELECT count(*) || '/' || count(*) FILTER (WHERE expires < now()) FROM %s$$)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        copies,
        vec!["500/0"; 3],
        "every copy: 500 live rows, none expired"
    );
    // Without a primary key, the copies could not choose the same rows: refused, clearly.
    c.batch_execute(
        "CREATE TABLE l_reference_bare (expires timestamptz NOT NULL);
         SELECT create_reference_table('l_reference_bare');",
    )
    .unwrap();
    let error = expect_error(
        &mut c,
        "SELECT session_gc.register('l_reference_bare', expires_column => 'expires')",
    );
    assert_eq!(error.code, "0A000", "{error:?}");
    assert!(error.hint.is_some(), "{error:?}");
    // A partitioned distributed table: its shards are partitioned tables, not walked.
    c.batch_execute(
        "CREATE TABLE l_parted (user_id bigint NOT NULL, expires timestamptz NOT NULL)
              PARTITION BY RANGE (expires);
         CREATE TABLE l_parted_all PARTITION OF l_parted DEFAULT;
         SELECT create_distributed_table('l_parted', 'user_id', colocate_with => 'none');",
    )
    .unwrap();
    let error = expect_error(
        &mut c,
        "SELECT session_gc.register('l_parted', expires_column => 'expires')",
    );
    assert_eq!(error.code, "0A000", "{error:?}");
    // A cap counts a user's sessions over every shard: refused on a distributed table.
    distributed_sessions(&mut c, "l_capped", 10, 10);
    let error = expect_error(
        &mut c,
        "SELECT session_gc.register('l_capped', user_column => 'user_id', max_per_user => 3,
                                    activity_column => 'expires')",
    );
    assert_eq!(error.code, "0A000", "{error:?}");
}

/// `purge_shard` deletes as the shard's owner and only for a role with its privileges: a
/// tenant calling it on a shard of another owner's table is refused.
#[test]
fn purge_shard_refuses_a_role_without_the_owners_privileges() {
    if !citus_built() {
        return;
    }
    let cluster = shared();
    let mut c = cluster.connect();
    distributed_sessions(&mut c, "p_sessions", 100, 0);
    c.batch_execute(
        "CREATE ROLE p_tenant LOGIN;
         GRANT USAGE ON SCHEMA session_gc TO p_tenant;
         GRANT EXECUTE ON PROCEDURE session_gc.purge_shard(regclass, bigint, text, text, integer, integer, text) TO p_tenant;
         GRANT EXECUTE ON FUNCTION session_gc.purge_shard_step(regclass, bigint, text, text, text, integer, integer) TO p_tenant;",
    )
    .unwrap();
    let (shard, id): (String, i64) = {
        let row = c
            .query_one(
                "SELECT shard_name('p_sessions'::regclass, shardid, false), shardid
                   FROM pg_dist_shard WHERE logicalrelid = 'p_sessions'::regclass
                  ORDER BY shardid LIMIT 1",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    // The first shard is on the coordinator's first worker or the second: try the node holding it.
    let port: i32 = scalar(
        &mut c,
        &format!(
            "SELECT n.nodeport FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid) WHERE p.shardid = {id}"
        ),
    );
    let node = cluster
        .workers
        .iter()
        .find(|w| i32::from(w.port) == port)
        .expect("the shard's node");
    let mut tenant = node
        .config(DB)
        .user("p_tenant")
        .connect(postgres::NoTls)
        .unwrap();
    tenant
        .batch_execute("SET citus.override_table_visibility = off")
        .unwrap();
    let payload = |now: &str| {
        format!(
            r#"{{"now": {now}, "policies": [{{"expires_column": "expires", "time_zone": "UTC", "grace": "0"}}]}}"#
        )
    };
    let call = |payload: &str| {
        format!("CALL session_gc.purge_shard('{shard}', {id}, '{payload}', NULL, 100, 100, NULL)")
    };
    let now: i64 = scalar(
        &mut c,
        "SELECT ((extract(epoch FROM now()) - 946684800) * 1000000)::int8",
    );
    let error = expect_error(&mut tenant, &call(&payload(&now.to_string())));
    assert_eq!(error.code, "42501", "{error:?}");
    assert_eq!(count(&mut c, "p_sessions"), 100);

    // The node never computes a cutoff later than the coordinator's clock: sent a clock two
    // hours back, it deletes none of the rows that expired a minute ago; sent the real one, it
    // deletes them.
    let mut owner = node.connect(DB);
    owner
        .batch_execute("SET citus.override_table_visibility = off")
        .unwrap();
    let in_shard = count(&mut owner, &shard);
    assert!(in_shard > 0, "the shard holds rows");
    let two_hours_ago = now - 2 * 3600 * 1_000_000;
    owner
        .batch_execute(&call(&payload(&two_hours_ago.to_string())))
        .unwrap();
    assert_eq!(count(&mut owner, &shard), in_shard);
    owner
        .batch_execute(&call(&payload(&now.to_string())))
        .unwrap();
    assert_eq!(count(&mut owner, &shard), 0);
}

/// The real worker purges distributed tables: a shard moved to the other node mid-purge loses
/// nothing, and a node stopped mid-purge fails only its own shards, which are purged once it is
/// back.
#[test]
fn the_worker_purges_through_a_shard_move_and_a_stopped_node() {
    if !citus_built() {
        return;
    }
    let cluster = CitusCluster::start(
        "citus_worker",
        &[
            "session_gc.interval = '1s'",
            "session_gc.batch_timeout = '30s'",
        ],
    );
    let mut c = cluster.connect();

    // A shard moved while the worker purges: every live row stays, every expired one goes.
    distributed_sessions(&mut c, "m_sessions", 40000, 5000);
    c.batch_execute(
        "SELECT session_gc.register('m_sessions', expires_column => 'expires', batch_size => 20)",
    )
    .unwrap();
    wait_until("the worker deletes from m_sessions", DEADLINE, || {
        scalar::<i64>(
            &mut c,
            "SELECT coalesce(sum(deleted), 0)::int8 FROM session_gc.history WHERE relid = 'm_sessions'::regclass",
        ) > 0
    });
    let (from, to) = (cluster.workers[0].port, cluster.workers[1].port);
    assert!(
        expired_left(&mut c, "m_sessions") > 0,
        "the move starts while the worker purges"
    );
    c.batch_execute(&format!(
        "SELECT citus_move_shard_placement(
                    (SELECT p.shardid FROM pg_dist_placement p JOIN pg_dist_shard s USING (shardid)
                       JOIN pg_dist_node n USING (groupid)
                      WHERE s.logicalrelid = 'm_sessions'::regclass AND n.nodeport = {from}
                      ORDER BY p.shardid LIMIT 1),
                    '127.0.0.1', {from}, '127.0.0.1', {to}, 'force_logical')"
    ))
    .unwrap();
    wait_until(
        "every expired row of m_sessions is purged",
        DEADLINE,
        || expired_left(&mut c, "m_sessions") == 0,
    );
    assert_eq!(count(&mut c, "m_sessions"), 5000);

    // A node stopped mid-purge: its shards fail (recorded), the other node's are purged.
    distributed_sessions(&mut c, "s_sessions", 40000, 5000);
    c.batch_execute(
        "SELECT session_gc.register('s_sessions', expires_column => 'expires', batch_size => 20)",
    )
    .unwrap();
    wait_until("the worker deletes from s_sessions", DEADLINE, || {
        scalar::<i64>(
            &mut c,
            "SELECT coalesce(sum(deleted), 0)::int8 FROM session_gc.history WHERE relid = 's_sessions'::regclass",
        ) > 0
    });
    assert!(
        expired_left(&mut c, "s_sessions") > 0,
        "the node stops while the worker purges"
    );
    let stopped = &cluster.workers[1];
    stopped.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    wait_until("a run of s_sessions ends in error", DEADLINE, || {
        scalar::<i64>(
            &mut c,
            "SELECT count(*) FROM session_gc.history
              WHERE relid = 's_sessions'::regclass AND status = 'error'
                AND error LIKE '%could not be purged%'",
        ) > 0
    });
    // The running node's shards are purged all the same.
    let shards: Vec<String> = c
        .query(
            &format!(
                "SELECT shard_name('s_sessions'::regclass, s.shardid, false) FROM pg_dist_shard s
                   JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
                  WHERE s.logicalrelid = 's_sessions'::regclass AND n.nodeport = {}",
                cluster.workers[0].port
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(!shards.is_empty());
    let mut running = cluster.workers[0].connect(DB);
    running
        .batch_execute("SET citus.override_table_visibility = off")
        .unwrap();
    wait_until("the running node's shards are purged", DEADLINE, || {
        shards
            .iter()
            .all(|shard| expired_left(&mut running, shard) == 0)
    });
    // Back up: the worker's next tries purge the rest.
    stopped.pg_ctl(&["start", "-w", "-l", stopped.log_path().to_str().unwrap()]);
    wait_until(
        "every expired row of s_sessions is purged",
        DEADLINE,
        || expired_left(&mut c, "s_sessions") == 0,
    );
    assert_eq!(count(&mut c, "s_sessions"), 5000);
    assert_eq!(count(&mut c, "m_sessions"), 5000);

    // A node without session_gc is never sent a call (a role there could have created its own
    // session_gc.purge_shard): its shards fail, saying so.
    let mut bare = cluster.workers[1].connect(DB);
    bare.batch_execute("SET citus.enable_ddl_propagation = off; DROP EXTENSION session_gc")
        .unwrap();
    distributed_sessions(&mut c, "v_sessions", 100, 10);
    c.batch_execute("SELECT session_gc.register('v_sessions', expires_column => 'expires')")
        .unwrap();
    wait_until("a run of v_sessions ends in error", DEADLINE, || {
        scalar::<i64>(
            &mut c,
            "SELECT count(*) FROM session_gc.history
              WHERE relid = 'v_sessions'::regclass AND status = 'error'
                AND error LIKE '%could not be purged%'",
        ) > 0
    });
    let detail: String = scalar(
        &mut c,
        "SELECT error FROM session_gc.history WHERE relid = 'v_sessions'::regclass AND status = 'error' LIMIT 1",
    );
    assert!(detail.contains("is not installed on the node"), "{detail}");
}
