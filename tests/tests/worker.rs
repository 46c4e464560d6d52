//! The background worker on real clusters with the library preloaded: purging on its interval,
//! reload, several databases, shutdown and crashes, tables changing under it, locks, standbys,
//! the manual procedure with per-batch commits, and partition drops, caps and NOTIFY from the
//! worker. Every wait polls a condition with a deadline.

use postgres::Client;
use session_gc_integration::{count, expect_error, scalar, wait_until, Cluster};
use std::time::{Duration, Instant};

const PRELOAD: &str = "shared_preload_libraries = 'session_gc'";
const DEADLINE: Duration = Duration::from_secs(60);

fn sessions_table(client: &mut Client, table: &str, expired: i64, live: i64) {
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigserial PRIMARY KEY, expires timestamptz NOT NULL, data text DEFAULT repeat('x', 100));
             CREATE INDEX ON {table} (expires);
             INSERT INTO {table} (expires) SELECT now() - interval '1 minute' - g * interval '1 millisecond' FROM generate_series(1, {expired}) g;
             INSERT INTO {table} (expires) SELECT now() + interval '1 hour' FROM generate_series(1, {live});
             SELECT session_gc.register('{table}', expires_column => 'expires');"
        ))
        .unwrap();
}

fn reload(client: &mut Client, settings: &[(&str, &str)]) {
    for (name, value) in settings {
        client
            .batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
            .unwrap();
    }
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
}

fn worker_pid(client: &mut Client) -> Option<i32> {
    client
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'session_gc worker' AND datname = current_database()",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0))
}

#[test]
fn purges_on_its_interval_and_a_reload_changes_the_interval() {
    // An hour between passes: after the first round nothing would happen for a long time.
    let cluster = Cluster::start("w_interval", &[PRELOAD, "session_gc.interval = '1h'"]);
    let mut admin = cluster.connect("postgres");
    wait_until("the launcher runs", DEADLINE, || {
        count(
            &mut admin,
            "pg_stat_activity WHERE backend_type = 'session_gc launcher'",
        ) == 1
    });
    let db = cluster.fresh_db("w_interval");
    let mut c = cluster.connect(&db);
    sessions_table(&mut c, "sessions", 3000, 100);
    // An audit trigger tells who deleted: application_name is session_gc's, not empty.
    c.batch_execute(
        "CREATE TABLE audit (app text);
         CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS
             $$BEGIN INSERT INTO public.audit VALUES (current_setting('application_name')); RETURN NULL; END$$;
         CREATE TRIGGER audit AFTER DELETE ON sessions FOR EACH STATEMENT EXECUTE FUNCTION audit();",
    )
    .unwrap();
    let deleters = |c: &mut Client| -> Vec<String> {
        c.query("SELECT DISTINCT app FROM audit ORDER BY 1", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let status = c
        .query_one(
            "SELECT worker_running, enabled, interval::text FROM session_gc.worker_status()",
            &[],
        )
        .unwrap();
    assert!(status.get::<_, bool>(0) && status.get::<_, bool>(1));
    assert_eq!(status.get::<_, String>(2), "01:00:00");
    // A reload to one second is picked up at once: the new database is visited within it.
    reload(&mut admin, &[("session_gc.interval", "1s")]);
    // The rows go with the last batch; the run is recorded just after it.
    wait_until("the worker purges the expired sessions", DEADLINE, || {
        count(&mut c, "sessions") == 100
            && count(&mut c, "session_gc.history WHERE status = 'running'") == 0
    });
    let row = c
        .query_one(
            "SELECT trigger, status, deleted FROM session_gc.history ORDER BY id LIMIT 1",
            &[],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("worker".into(), "ok".into())
    );
    assert_eq!(row.get::<_, i64>(2), 3000);
    assert_eq!(deleters(&mut c), ["session_gc worker"]);
    // Rows that expire later are purged by later passes, with no call from anyone.
    c.batch_execute("INSERT INTO sessions (expires) SELECT now() + interval '2 seconds' FROM generate_series(1, 50)")
        .unwrap();
    wait_until("later expiries are purged too", DEADLINE, || {
        count(&mut c, "sessions") == 100
    });
    let status = c
        .query_one("SELECT last_pass_finished IS NOT NULL, next_pass >= now() - interval '1 second' FROM session_gc.worker_status()", &[])
        .unwrap();
    assert!(status.get::<_, bool>(0) && status.get::<_, bool>(1));
    // Disabled on reload: no more passes (the state stops moving), enabled again: purging resumes.
    reload(&mut admin, &[("session_gc.enabled", "off")]);
    wait_until("the setting is seen", DEADLINE, || {
        !scalar::<bool>(&mut c, "SELECT enabled FROM session_gc.worker_status()")
    });
    // cleanup()'s own worker names itself too, whatever the caller's application_name.
    c.batch_execute(
        "DELETE FROM audit; SET application_name = 'the app';
         INSERT INTO sessions (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 10);",
    )
    .unwrap();
    assert_eq!(
        scalar::<i64>(&mut c, "SELECT deleted FROM session_gc.cleanup('sessions')"),
        10
    );
    assert_eq!(deleters(&mut c), ["session_gc cleanup"]);
    assert!(!cluster.log().contains("PANIC"));
}

#[test]
fn databases_are_purged_independently_and_the_filter_applies_on_reload() {
    let cluster = Cluster::start(
        "w_databases",
        &[
            PRELOAD,
            "session_gc.interval = 1",
            "session_gc.databases = 'w_db_a'",
        ],
    );
    let a = cluster.fresh_db("w_db_a");
    let b = cluster.fresh_db("w_db_b");
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE DATABASE w_db_plain").unwrap();
    let mut ca = cluster.connect(&a);
    let mut cb = cluster.connect(&b);
    sessions_table(&mut ca, "sessions_a", 500, 5);
    sessions_table(&mut cb, "sessions_b", 700, 7);
    wait_until("database a is purged", DEADLINE, || {
        count(&mut ca, "sessions_a") == 5
    });
    // Two more passes in a, and b (not in session_gc.databases) is still untouched.
    wait_for_two_passes(&mut ca);
    assert_eq!(count(&mut cb, "sessions_b"), 707);
    reload(&mut admin, &[("session_gc.databases", "")]);
    wait_until("database b is purged after the reload", DEADLINE, || {
        count(&mut cb, "sessions_b") == 7
    });
    // A database without the extension is visited without complaint.
    assert!(!cluster.log().contains("w_db_plain"), "{}", cluster.log());
    // DROP EXTENSION stops the purging of that database cleanly; DROP DATABASE is not blocked.
    ca.batch_execute("DROP EXTENSION session_gc").unwrap();
    drop(ca);
    wait_until("database a can be dropped", DEADLINE, || {
        admin.batch_execute("DROP DATABASE w_db_a").is_ok()
    });
    assert!(!cluster.log().contains("ERROR"), "{}", cluster.log());
}

#[test]
fn sigterm_stops_a_worker_mid_pass_promptly() {
    let cluster = Cluster::start(
        "w_sigterm",
        &[
            PRELOAD,
            "session_gc.interval = '1h'",
            "session_gc.batch_size = 500",
            "session_gc.batch_delay = '50ms'",
        ],
    );
    let db = cluster.fresh_db("w_sigterm");
    let mut c = cluster.connect(&db);
    sessions_table(&mut c, "sessions", 200_000, 10);
    let mut admin = cluster.connect("postgres");
    reload(&mut admin, &[("session_gc.interval", "1s")]);
    wait_until("the worker is purging", DEADLINE, || {
        count(&mut c, "pg_stat_activity WHERE backend_type = 'session_gc worker' AND query LIKE 'session_gc: purging%'") == 1
    });
    let pid = worker_pid(&mut c).expect("a running worker");
    // Keep the launcher from starting the next pass while we look.
    reload(&mut admin, &[("session_gc.enabled", "off")]);
    let asked = Instant::now();
    assert!(scalar::<bool>(
        &mut c,
        &format!("SELECT pg_terminate_backend({pid})")
    ));
    wait_until("the worker exits", Duration::from_secs(10), || {
        count(&mut c, &format!("pg_stat_activity WHERE pid = {pid}")) == 0
    });
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the worker took {took:?} to stop"
    );
    wait_until("the run is recorded as cancelled", DEADLINE, || {
        count(&mut c, "session_gc.history WHERE status = 'cancelled'") == 1
    });
    assert!(
        count(&mut c, "sessions") > 10,
        "the backlog was not finished in one go"
    );
}

#[test]
fn a_killed_worker_is_replaced_and_its_unfinished_run_marked_failed() {
    let cluster = Cluster::start(
        "w_sigkill",
        &[
            PRELOAD,
            // Commits must survive the crash for the orphaned run to be there afterwards.
            "synchronous_commit = on",
            "session_gc.interval = '1h'",
            "session_gc.batch_size = 500",
            "session_gc.batch_delay = '50ms'",
        ],
    );
    let db = cluster.fresh_db("w_sigkill");
    let mut c = cluster.connect(&db);
    sessions_table(&mut c, "sessions", 100_000, 10);
    let mut admin = cluster.connect("postgres");
    reload(&mut admin, &[("session_gc.interval", "1s")]);
    wait_until("the worker is purging", DEADLINE, || {
        count(&mut c, "session_gc.history WHERE status = 'running'") == 1
            && worker_pid(&mut c).is_some()
    });
    // Batches commit without waiting for their WAL to reach disk: wait until some counted
    // batch is durable, or the crash would take all of them (and their counts) back.
    wait_until("a batch is counted", DEADLINE, || {
        scalar::<i64>(
            &mut c,
            "SELECT coalesce(max(deleted), 0) FROM session_gc.history WHERE status = 'running'",
        ) > 0
    });
    let counted_at: String = scalar(&mut c, "SELECT pg_current_wal_insert_lsn()::text");
    wait_until("its WAL is flushed", DEADLINE, || {
        scalar::<bool>(
            &mut c,
            &format!("SELECT pg_current_wal_flush_lsn() >= '{counted_at}'::pg_lsn"),
        )
    });
    let pid = worker_pid(&mut c).expect("a running worker");
    let killed = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    drop(c);
    drop(admin);
    // The postmaster restarts after the crash, the launcher comes back, and the next worker
    // marks the orphaned run as failed and finishes the job. Each poll connects afresh: a
    // connection made just before the crash-restart would be cut.
    let fresh_count = |sql: &str| -> Option<i64> {
        let mut client = cluster.config(&db).connect(postgres::NoTls).ok()?;
        client.query_one(sql, &[]).ok().map(|r| r.get::<_, i64>(0))
    };
    wait_until("the backlog is purged by a new worker", DEADLINE, || {
        fresh_count("SELECT count(*) FROM sessions") == Some(10)
    });
    let mut c = cluster.connect(&db);
    let failed = count(
        &mut c,
        "session_gc.history WHERE status = 'error' AND error LIKE '%stopped before it finished%'",
    );
    if failed != 1 {
        let rows = c.query("SELECT id, status, deleted, coalesce(error, ''), pid FROM session_gc.history ORDER BY id", &[]).unwrap();
        let rows: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {:?}",
                    r.get::<_, i64>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i64>(2),
                    r.get::<_, String>(3),
                    r.get::<_, Option<i32>>(4)
                )
            })
            .collect();
        panic!("killed pid {pid}; history: {rows:#?}\n{}", cluster.log());
    }
    wait_until("the new run is closed", DEADLINE, || {
        count(&mut c, "session_gc.history WHERE status = 'running'") == 0
    });
    // The killed run's committed batches are counted in its row and in the totals: every row
    // deleted is counted once, across the dead run and the one that finished the job.
    let killed_run_deleted: i64 = scalar(
        &mut c,
        "SELECT deleted FROM session_gc.history WHERE status = 'error'",
    );
    assert!(killed_run_deleted > 0, "the killed run counted its batches");
    let counted: i64 = scalar(&mut c, "SELECT sum(deleted)::int8 FROM session_gc.history");
    let total: i64 = scalar(&mut c, "SELECT deleted_total FROM session_gc.totals");
    assert_eq!((counted, total), (100_000, 100_000));
}

#[test]
fn tables_dropped_or_altered_under_the_worker_fail_alone() {
    let cluster = Cluster::start(
        "w_altered",
        &[
            PRELOAD,
            "session_gc.interval = '1h'",
            "session_gc.batch_size = 500",
            "session_gc.batch_delay = '20ms'",
        ],
    );
    let db = cluster.fresh_db("w_altered");
    let mut c = cluster.connect(&db);
    sessions_table(&mut c, "big", 60_000, 10);
    sessions_table(&mut c, "small", 2_000, 10);
    sessions_table(&mut c, "doomed", 50_000, 10);
    sessions_table(&mut c, "altered_between", 100, 10);
    // Between passes: the rule's column is gone before the worker arrives.
    c.batch_execute("ALTER TABLE altered_between DROP COLUMN expires")
        .unwrap();
    let mut admin = cluster.connect("postgres");
    reload(&mut admin, &[("session_gc.interval", "1s")]);
    wait_until("the worker is purging big", DEADLINE, || {
        count(
            &mut c,
            "pg_stat_activity WHERE backend_type = 'session_gc worker' AND query LIKE '%big%'",
        ) == 1
    });
    // Mid-pass: one table retyped, another dropped.
    c.batch_execute("ALTER TABLE big ALTER COLUMN expires TYPE text USING expires::text")
        .unwrap();
    c.batch_execute("DROP TABLE doomed").unwrap();
    wait_until("small is purged all the same", DEADLINE, || {
        count(&mut c, "small") == 10
    });
    let recorded = |c: &mut Client| {
        count(c, "session_gc.history WHERE status = 'error' AND table_name IN ('public.big', 'public.altered_between')") >= 2
    };
    let until = Instant::now() + DEADLINE;
    while !recorded(&mut c) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !recorded(&mut c) {
        let rows = c
            .query(
                "SELECT table_name, status, deleted, coalesce(error, '') FROM session_gc.history",
                &[],
            )
            .unwrap();
        let rows: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i64>(2),
                    r.get::<_, String>(3)
                )
            })
            .collect();
        panic!("failures not recorded: {rows:#?}\n{}", cluster.log());
    }
    let log = cluster.log();
    assert!(log.contains("WARNING") && log.contains("big"), "{log}");
    // The worker lives on: later passes keep running.
    let passes: i64 = scalar(
        &mut c,
        "SELECT coalesce(max(passes), 0) FROM session_gc.worker_state",
    );
    wait_until("later passes run", DEADLINE, || {
        scalar::<i64>(
            &mut c,
            "SELECT coalesce(max(passes), 0) FROM session_gc.worker_state",
        ) > passes
    });
    assert!(
        !log.contains("PANIC") && !log.contains("terminated by signal"),
        "{log}"
    );
}

#[test]
fn a_failing_table_is_retried_ever_less_often_until_registered_again() {
    let cluster = Cluster::start("w_backoff", &[PRELOAD, "session_gc.interval = '1h'"]);
    let db = cluster.fresh_db("w_backoff");
    let mut c = cluster.connect(&db);
    sessions_table(&mut c, "broken", 100, 10);
    sessions_table(&mut c, "healthy", 100, 10);
    c.batch_execute("ALTER TABLE broken DROP COLUMN expires")
        .unwrap();
    let mut admin = cluster.connect("postgres");
    reload(&mut admin, &[("session_gc.interval", "1s")]);
    let failures = |c: &mut Client| {
        count(
            c,
            "session_gc.history WHERE table_name = 'public.broken' AND status = 'error'",
        )
    };
    wait_until("four failed runs of broken", DEADLINE, || {
        failures(&mut c) >= 4
    });
    // Retried at the next pass after the first failure, then two and four intervals later
    // (every pass would retry it one second later).
    let gaps: Vec<f64> = c
        .query(
            "SELECT extract(epoch FROM started_at - lag(started_at) OVER (ORDER BY id))::float8
               FROM session_gc.history WHERE table_name = 'public.broken' AND status = 'error' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .skip(1)
        .map(|row| row.get(0))
        .collect();
    assert!(
        gaps[1] >= 1.9 && gaps[2] >= 3.9,
        "gaps between failures: {gaps:?}"
    );
    assert_eq!(
        count(&mut c, "healthy"),
        10,
        "the other table is purged all along"
    );
    // Fixed (no session expired yet) and registered again: the backoff (eight more seconds)
    // ends, and the next pass records the recovery although it deleted nothing.
    c.batch_execute(
        "ALTER TABLE broken ADD COLUMN expires timestamptz NOT NULL DEFAULT now() + interval '1 hour';
         SELECT session_gc.register('broken', expires_column => 'expires');",
    )
    .unwrap();
    let recovered = |c: &mut Client| {
        count(
            c,
            "session_gc.history WHERE table_name = 'public.broken' AND status = 'ok' AND trigger = 'worker' AND deleted = 0",
        )
    };
    wait_until(
        "the next pass records broken's recovery",
        Duration::from_secs(5),
        || recovered(&mut c) == 1,
    );
    // Later passes that find nothing leave no row again.
    let passes = |c: &mut Client| {
        scalar::<i64>(
            c,
            "SELECT coalesce(max(passes), 0) FROM session_gc.worker_state",
        )
    };
    let seen = passes(&mut c);
    wait_until("two more passes", DEADLINE, || passes(&mut c) >= seen + 2);
    assert_eq!(recovered(&mut c), 1);
    assert_eq!(count(&mut c, "broken"), 110);
}

#[test]
fn rows_and_tables_held_by_the_application_are_skipped_not_waited_for() {
    let cluster = Cluster::start(
        "w_locks",
        &[
            PRELOAD,
            "session_gc.interval = '1h'",
            "session_gc.lock_timeout = '200ms'",
        ],
    );
    let db = cluster.fresh_db("w_locks");
    let mut c = cluster.connect(&db);
    sessions_table(&mut c, "rows_held", 100, 0);
    sessions_table(&mut c, "table_held", 100, 0);
    let mut app = cluster.connect(&db);
    let mut txn = app.transaction().unwrap();
    txn.batch_execute(
        "SELECT 1 FROM rows_held WHERE id <= 3 FOR UPDATE;
         LOCK TABLE table_held IN ACCESS EXCLUSIVE MODE;",
    )
    .unwrap();
    let mut admin = cluster.connect("postgres");
    reload(&mut admin, &[("session_gc.interval", "1s")]);
    wait_until("the unlocked rows are purged", DEADLINE, || {
        count(&mut c, "rows_held") == 3
    });
    wait_until(
        "the locked table's run failed on its lock timeout",
        DEADLINE,
        || {
            count(&mut c, "session_gc.history WHERE table_name = 'public.table_held' AND status = 'error' AND error LIKE '%lock%'") >= 1
        },
    );
    txn.rollback().unwrap();
    wait_until("both are purged once the locks are gone", DEADLINE, || {
        count(&mut c, "rows_held") == 0 && count(&mut c, "table_held") == 0
    });
}

#[test]
fn a_standby_stays_idle_and_purges_after_promotion() {
    let primary = Cluster::start(
        "w_primary",
        &[
            PRELOAD,
            "session_gc.interval = 1",
            "session_gc.enabled = off",
        ],
    );
    let db = primary.fresh_db("w_standby");
    let mut p = primary.connect(&db);
    sessions_table(&mut p, "sessions", 1000, 10);
    let replica = Cluster::replica_of(&primary, "w_replica", &["session_gc.enabled = on"]);
    let mut r = replica.connect(&db);
    assert!(scalar::<bool>(&mut r, "SELECT pg_is_in_recovery()"));
    wait_until("the replica has the sessions", DEADLINE, || {
        r.query_one("SELECT count(*) FROM sessions", &[])
            .map(|row| row.get::<_, i64>(0) == 1010)
            .unwrap_or(false)
    });
    // Replay goes on; nothing of session_gc runs on the standby, and nothing complains.
    p.batch_execute("CREATE TABLE marker (x int)").unwrap();
    wait_until("replay continues", DEADLINE, || {
        r.query_one("SELECT to_regclass('marker') IS NOT NULL", &[])
            .map(|row| row.get::<_, bool>(0))
            .unwrap_or(false)
    });
    assert_eq!(
        count(
            &mut r,
            "pg_stat_activity WHERE backend_type LIKE 'session_gc%'"
        ),
        0
    );
    assert!(!scalar::<bool>(
        &mut r,
        "SELECT worker_running FROM session_gc.worker_status()"
    ));
    assert!(!replica.log().contains("ERROR"), "{}", replica.log());
    // Failover: the promoted replica starts purging by itself, without a restart.
    primary.pg_ctl(&["stop", "-m", "fast", "-w"]);
    replica.pg_ctl(&["promote", "-w"]);
    wait_until("the promoted server purges", DEADLINE, || {
        count(&mut r, "sessions") == 10
    });
    assert_eq!(
        count(
            &mut r,
            "session_gc.history WHERE trigger = 'worker' AND status = 'ok'"
        ),
        1
    );
    assert!(!replica.log().contains("ERROR"), "{}", replica.log());
}

#[test]
fn the_purge_procedure_commits_each_batch_outside_a_transaction_block() {
    let cluster = Cluster::start("w_procedure", &[]);
    let db = cluster.fresh_db("w_procedure");
    let mut c = cluster.connect(&db);
    sessions_table(&mut c, "sessions", 2500, 10);
    c.batch_execute(
        "CREATE TABLE deleted_in (xid xid8);
         CREATE FUNCTION note_xid() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO public.deleted_in VALUES (pg_catalog.pg_current_xact_id()); RETURN OLD; END $$;
         CREATE TRIGGER note_xid BEFORE DELETE ON sessions FOR EACH ROW EXECUTE FUNCTION note_xid();",
    )
    .unwrap();
    c.batch_execute("CALL session_gc.purge(batch_size => 1000)")
        .unwrap();
    assert_eq!(count(&mut c, "sessions"), 10);
    // One transaction per batch: at least the three 1,000-row batches 2,500 rows need, and no
    // more than the run's batches (the heap walk sizes its ranges by what it finds).
    let transactions = count(&mut c, "(SELECT DISTINCT xid FROM deleted_in) x");
    let batches: i32 = scalar(
        &mut c,
        "SELECT batches FROM session_gc.history ORDER BY id DESC LIMIT 1",
    );
    assert!(
        transactions >= 3 && transactions <= i64::from(batches),
        "{transactions} transactions for {batches} batches"
    );
    // Inside a transaction block it cannot commit: one transaction, same result.
    c.batch_execute(
        "TRUNCATE deleted_in;
         INSERT INTO sessions (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 2500);",
    )
    .unwrap();
    c.batch_execute("BEGIN; CALL session_gc.purge('sessions', batch_size => 1000); COMMIT;")
        .unwrap();
    assert_eq!(count(&mut c, "sessions"), 10);
    assert_eq!(count(&mut c, "(SELECT DISTINCT xid FROM deleted_in) x"), 1);
    assert_eq!(
        count(
            &mut c,
            "session_gc.history WHERE trigger = 'manual' AND status = 'ok' AND deleted = 2500"
        ),
        2
    );
    assert_eq!(
        expect_error(&mut c, "CALL session_gc.purge(batch_size => 0)").code,
        "22023"
    );
}

/// Two more passes of this database's worker than now: the later one started after whatever
/// was changed before this call.
fn wait_for_two_passes(client: &mut Client) {
    let passes: i64 = scalar(
        client,
        "SELECT coalesce(max(passes), 0) FROM session_gc.worker_state",
    );
    wait_until("two more passes", DEADLINE, || {
        scalar::<i64>(
            client,
            "SELECT coalesce(max(passes), 0) FROM session_gc.worker_state",
        ) >= passes + 2
    });
}

/// session_gc.purge_window: outside its ranges the worker's passes go on but leave the tables alone;
/// inside, it purges; cleanup() purges outside it; a bad value is refused with the reason.
#[test]
fn the_worker_purges_only_inside_its_window() {
    let cluster = Cluster::start("w_window", &[PRELOAD, "session_gc.interval = 1"]);
    let mut admin = cluster.connect("postgres");
    let db = cluster.fresh_db("w_window");
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {db} SET TimeZone = 'Pacific/Kiritimati'"
        ))
        .unwrap();
    let mut c = cluster.connect(&db);
    // Ranges around the server's clock now (in log_timezone), five minutes from the edges: one
    // that closed, one that is open. A database's own TimeZone does not move them.
    let now: i32 = scalar(
        &mut c,
        "SELECT (date_part('hour', x) * 60 + date_part('minute', x))::int4
           FROM (SELECT timezone(current_setting('log_timezone'), now())::time AS x) t",
    );
    let at = |minute: i32| {
        let minute = minute.rem_euclid(24 * 60);
        format!("{:02}:{:02}", minute / 60, minute % 60)
    };
    let closed = format!(
        "{}-{}, {}-{}",
        at(now - 125),
        at(now - 5),
        at(now + 5),
        at(now + 30)
    );
    let open = format!("{}-{}", at(now - 5), at(now + 120));
    reload(&mut admin, &[("session_gc.purge_window", &closed)]);
    wait_for_two_passes(&mut c);
    sessions_table(&mut c, "sessions", 800, 8);
    wait_for_two_passes(&mut c);
    assert_eq!(
        count(&mut c, "sessions"),
        808,
        "outside the window: untouched"
    );
    assert_eq!(count(&mut c, "session_gc.history"), 0);
    reload(&mut admin, &[("session_gc.purge_window", &open)]);
    wait_until("the worker purges inside the window", DEADLINE, || {
        count(&mut c, "sessions") == 8
    });
    // Closed again: the worker leaves new expiries, cleanup() purges them all the same.
    reload(&mut admin, &[("session_gc.purge_window", &closed)]);
    wait_for_two_passes(&mut c);
    c.batch_execute("INSERT INTO sessions (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 300)")
        .unwrap();
    wait_for_two_passes(&mut c);
    assert_eq!(count(&mut c, "sessions"), 308);
    assert_eq!(
        scalar::<i64>(&mut c, "SELECT deleted FROM session_gc.cleanup('sessions')"),
        300
    );
    // A value that does not parse is refused, with why; the old one stays.
    for bad in ["02:00", "02:00-25:00", "03:00-03:00"] {
        let error = expect_error(
            &mut admin,
            &format!("ALTER SYSTEM SET session_gc.purge_window = '{bad}'"),
        );
        assert_eq!(error.code, "22023", "{bad}: {error:?}");
        assert!(error.detail.is_some(), "{bad}: {error:?}");
    }
}

/// session_gc.max_rows_per_second is one budget for the whole server: three databases purged
/// at once by their own workers delete at that rate in total, not each.
#[test]
fn one_budget_holds_the_total_rate_of_every_database() {
    const RATE: f64 = 2000.0;
    let cluster = Cluster::start(
        "w_budget",
        &[
            PRELOAD,
            "session_gc.interval = 1",
            "session_gc.enabled = off",
            "session_gc.max_rows_per_second = 2000",
        ],
    );
    let mut admin = cluster.connect("postgres");
    let mut clients: Vec<Client> = ["w_budget_a", "w_budget_b", "w_budget_c"]
        .iter()
        .map(|name| {
            let db = cluster.fresh_db(name);
            let mut c = cluster.connect(&db);
            sessions_table(&mut c, "sessions", 6000, 5);
            c
        })
        .collect();
    reload(&mut admin, &[("session_gc.enabled", "on")]);
    for c in &mut clients {
        wait_until(
            "every database is purged and its run recorded",
            DEADLINE,
            || {
                count(c, "sessions") == 5
                    && count(c, "session_gc.history WHERE status = 'running'") == 0
            },
        );
    }
    // Each database's runs: rows deleted, first start and last end (epoch seconds).
    let runs: Vec<(i64, f64, f64)> = clients
        .iter_mut()
        .map(|c| {
            let row = c
                .query_one(
                    "SELECT sum(deleted)::int8, extract(epoch FROM min(started_at))::float8,
                            extract(epoch FROM max(finished_at))::float8
                       FROM session_gc.history WHERE trigger = 'worker'",
                    &[],
                )
                .unwrap();
            (row.get(0), row.get(1), row.get(2))
        })
        .collect();
    let deleted: i64 = runs.iter().map(|r| r.0).sum();
    assert_eq!(deleted, 18_000);
    let first_start = runs.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
    let last_start = runs.iter().map(|r| r.1).fold(0.0, f64::max);
    let first_end = runs.iter().map(|r| r.2).fold(f64::INFINITY, f64::min);
    let last_end = runs.iter().map(|r| r.2).fold(0.0, f64::max);
    assert!(
        last_start < first_end,
        "the three purges ran at the same time: {runs:?}"
    );
    let rate = deleted as f64 / (last_end - first_start);
    assert!(
        (RATE * 0.9..=RATE * 1.1).contains(&rate),
        "{rate:.0} rows/s in total against a budget of {RATE}: {runs:?}"
    );

    // A batch cancelled mid-way gives back what it took: here 100,000 rows, 50 s of budget,
    // which every purge of the server would otherwise wait for.
    reload(&mut admin, &[("session_gc.enabled", "off")]);
    let c = &mut clients[0];
    c.batch_execute(
        "CREATE TABLE slow (id bigserial PRIMARY KEY, expires timestamptz NOT NULL);
         INSERT INTO slow (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 50);
         SELECT session_gc.register('slow', expires_column => 'expires', batch_size => 100000);
         CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_catalog.pg_sleep(30); RETURN NULL; END $$;
         CREATE TRIGGER slow AFTER DELETE ON slow FOR EACH STATEMENT EXECUTE FUNCTION slow();
         SET statement_timeout = '1s';",
    )
    .unwrap();
    let error = expect_error(c, "CALL session_gc.purge('slow')");
    assert_eq!(error.code, "57014", "cancelled by the timeout: {error:?}");
    c.batch_execute(
        "RESET statement_timeout;
         INSERT INTO sessions (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 10);",
    )
    .unwrap();
    let started = Instant::now();
    c.batch_execute("CALL session_gc.purge('sessions')")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the cancelled batch's rows came back to the budget: {:?}",
        started.elapsed()
    );
    assert_eq!(count(c, "sessions"), 5);
}

/// A statement-level AFTER DELETE trigger (here with a transition table, as audit and CDC
/// triggers have) fires for every batch, each seeing the rows its batch deleted: a statement
/// stopped at its row limit never fires them, so such a table's heap walk runs every batch as
/// a statement that runs to its end.
#[test]
fn statement_triggers_fire_for_every_batch() {
    let cluster = Cluster::start("w_statement_triggers", &[]);
    let db = cluster.fresh_db("w_statement_triggers");
    let mut c = cluster.connect(&db);
    sessions_table(&mut c, "sessions", 2500, 10);
    c.batch_execute(
        "CREATE TABLE batches (xid xid8, deleted int8);
         CREATE FUNCTION note_batch() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO public.batches SELECT pg_catalog.pg_current_xact_id(), count(*) FROM gone; RETURN NULL; END $$;
         CREATE TRIGGER note_batch AFTER DELETE ON sessions REFERENCING OLD TABLE AS gone
             FOR EACH STATEMENT EXECUTE FUNCTION note_batch();",
    )
    .unwrap();
    c.batch_execute("CALL session_gc.purge(batch_size => 500)")
        .unwrap();
    assert_eq!(count(&mut c, "sessions"), 10);
    let (noted, batches): (i64, i64) = {
        let row = c
            .query_one(
                "SELECT coalesce(sum(deleted), 0)::int8, count(DISTINCT xid) FROM batches",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(noted, 2500, "every deleted row seen by a statement trigger");
    assert!(batches >= 5, "one firing per batch transaction: {batches}");
}

/// How long a statement takes, from this client.
fn timed(client: &mut Client, sql: &str) -> Duration {
    let started = Instant::now();
    client
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    started.elapsed()
}

/// session_gc.max_duty_cycle: after a batch of t ms a purge rests t x (100 - d) / d ms before
/// its next batch, outside any transaction, in purge() and in cleanup()'s worker; inside the
/// caller's transaction it never rests (it would hold the caller's locks); a cancel ends a
/// rest at once.
#[test]
fn the_duty_cycle_rests_between_batches_and_a_cancel_ends_the_rest() {
    let cluster = Cluster::start("w_duty", &[]);
    let db = cluster.fresh_db("w_duty");
    let mut c = cluster.connect(&db);
    // Every batch's DELETE takes at least 40 ms: five batches of 500 rows take 200 ms or more.
    c.batch_execute(
        "CREATE FUNCTION slow_batch() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_catalog.pg_sleep(0.04); RETURN NULL; END $$;",
    )
    .unwrap();
    let refill = "INSERT INTO sessions (expires) SELECT now() - interval '1 minute' FROM generate_series(1, 2500)";
    sessions_table(&mut c, "sessions", 2500, 10);
    c.batch_execute(
        "CREATE TRIGGER slow_batch AFTER DELETE ON sessions FOR EACH STATEMENT EXECUTE FUNCTION slow_batch()",
    )
    .unwrap();
    let full_speed = timed(&mut c, "CALL session_gc.purge(batch_size => 500)");
    assert_eq!(count(&mut c, "sessions"), 10);
    // At 20% each batch earns four times its time in rest: four rests of at least 160 ms
    // before the second to fifth batches.
    c.batch_execute(refill).unwrap();
    // (SET apart: statements sent together run in one implicit transaction, where CALL
    // cannot commit its batches and so never rests.)
    c.batch_execute("SET session_gc.max_duty_cycle = 20")
        .unwrap();
    let at_20 = timed(&mut c, "CALL session_gc.purge(batch_size => 500)");
    assert_eq!(count(&mut c, "sessions"), 10);
    assert!(
        at_20 >= Duration::from_millis(840) && at_20 > full_speed * 2,
        "purge() at 20%: {at_20:?}, at 100%: {full_speed:?}"
    );
    assert!(
        at_20 < full_speed * 6 + Duration::from_secs(1),
        "no more rest than earned: {at_20:?} against {full_speed:?} at full speed"
    );
    // cleanup() carries the caller's setting to its worker.
    c.batch_execute(refill).unwrap();
    let cleanup_at_20 = timed(
        &mut c,
        "SELECT * FROM session_gc.cleanup(batch_size => 500)",
    );
    assert_eq!(count(&mut c, "sessions"), 10);
    assert!(
        cleanup_at_20 >= Duration::from_millis(840),
        "cleanup() at 20%: {cleanup_at_20:?}"
    );
    // Inside the caller's transaction: no rest.
    c.batch_execute(refill).unwrap();
    let in_transaction = timed(
        &mut c,
        "BEGIN; CALL session_gc.purge('sessions', batch_size => 500); COMMIT;",
    );
    assert!(
        in_transaction < Duration::from_millis(840),
        "in a transaction block: {in_transaction:?}"
    );
    c.batch_execute("RESET session_gc.max_duty_cycle").unwrap();

    // At 1% a 40 ms batch earns about 4 s of rest; a cancel during it ends the call at once.
    c.batch_execute(refill).unwrap();
    let pid: i32 = scalar(&mut c, "SELECT pg_backend_pid()");
    let mut watcher = cluster.connect(&db);
    let purging = std::thread::spawn({
        let mut purger = c;
        move || {
            purger
                .batch_execute("SET session_gc.max_duty_cycle = 1")
                .unwrap();
            purger
                .batch_execute("CALL session_gc.purge(batch_size => 500)")
                .err()
                .and_then(|e| e.as_db_error().map(|e| e.code().code().to_string()))
        }
    });
    wait_until("the first batch committed", DEADLINE, || {
        count(&mut watcher, "sessions") < 2510
    });
    let cancelled_at = Instant::now();
    watcher
        .batch_execute(&format!("SELECT pg_cancel_backend({pid})"))
        .unwrap();
    let code = purging.join().expect("the purging thread");
    assert_eq!(code.as_deref(), Some("57014"), "cancelled");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(2),
        "the rest ended at the cancel: {:?}",
        cancelled_at.elapsed()
    );
    assert!(count(&mut watcher, "sessions") > 10, "stopped mid-purge");
}

#[test]
fn the_worker_drops_expired_partitions_caps_users_and_notifies() {
    let cluster = Cluster::start(
        "w_features",
        &[
            PRELOAD,
            "session_gc.interval = '1s'",
            "session_gc.notify = on",
        ],
    );
    let db = cluster.fresh_db("w_features");
    let mut listener = cluster.connect(&db);
    listener.batch_execute("LISTEN session_gc").unwrap();
    let mut c = cluster.connect(&db);
    c.batch_execute(
        "CREATE TABLE psessions (id bigint, user_id int, last_seen timestamptz DEFAULT now(), expires timestamptz NOT NULL)
             PARTITION BY RANGE (expires);
         CREATE TABLE psessions_old PARTITION OF psessions FOR VALUES FROM ('-infinity') TO (now() - interval '1 day');
         CREATE TABLE psessions_now PARTITION OF psessions FOR VALUES FROM (now() - interval '1 day') TO ('infinity');
         CREATE INDEX ON psessions (expires);
         CREATE INDEX ON psessions (user_id);
         INSERT INTO psessions (id, expires) SELECT g, now() - interval '3 days' FROM generate_series(1, 3000) g;
         INSERT INTO psessions (id, expires) SELECT g, now() - interval '1 hour' FROM generate_series(1, 200) g;
         INSERT INTO psessions (id, user_id, last_seen, expires)
              SELECT g, 7, now() - g * interval '1 minute', now() + interval '1 day' FROM generate_series(1, 5) g;
         SELECT session_gc.register('psessions', expires_column => 'expires', strategy => 'drop_partitions',
                                    user_column => 'user_id', max_per_user => 2, activity_column => 'last_seen');",
    )
    .unwrap();
    wait_until(
        "the worker drops the old partition and purges the rest",
        DEADLINE,
        || count(&mut c, "psessions") == 2,
    );
    assert_eq!(count(&mut c, "pg_class WHERE relname = 'psessions_old'"), 0);
    assert_eq!(
        count(
            &mut c,
            "psessions WHERE user_id = 7 AND last_seen > now() - interval '2 minutes' - interval '30 seconds'"
        ),
        2,
        "the two newest of user 7 are kept"
    );
    let run = c
        .query_one(
            "SELECT id, deleted, over_cap, partitions_dropped FROM session_gc.history WHERE trigger = 'worker'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            run.get::<_, i64>(1),
            run.get::<_, i64>(2),
            run.get::<_, i32>(3)
        ),
        (203, 3, 1)
    );
    let mut notifications = listener.notifications();
    let mut waiting = notifications.timeout_iter(DEADLINE);
    let note = fallible_iterator::FallibleIterator::next(&mut waiting)
        .unwrap()
        .expect("a notification from the worker");
    let payload: serde_json::Value = serde_json::from_str(note.payload()).unwrap();
    assert_eq!(payload["run_id"], run.get::<_, i64>(0));
    // The run's figures are read by the table's owner, not carried in the payload.
    let (trigger, dropped): (String, i32) = {
        let row = c
            .query_one(
                "SELECT trigger, partitions_dropped FROM session_gc.run($1)",
                &[&run.get::<_, i64>(0)],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((trigger.as_str(), dropped), ("worker", 1));
    assert!(!cluster.log().contains("ERROR"), "{}", cluster.log());
}

/// A batch timeout cancels batches, not the worker's bookkeeping: with
/// `session_gc.batch_timeout = 1ms` every batch fails, and each failure is recorded in history
/// and in the pass the worker reports (0.2.0 recorded nothing, its cancel leaking onward).
#[test]
fn a_batch_timeout_fails_the_batch_and_the_failure_is_recorded() {
    let cluster = Cluster::start(
        "w_batch_timeout",
        &[
            PRELOAD,
            "session_gc.interval = '1h'",
            "session_gc.batch_timeout = '1ms'",
        ],
    );
    let db = cluster.fresh_db("w_batch_timeout");
    let mut c = cluster.connect(&db);
    sessions_table(&mut c, "sessions", 1_000, 10);
    // Every batch takes far longer than 1 ms: each deleted row sleeps 1 ms.
    c.batch_execute(
        "CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_catalog.pg_sleep(0.001); RETURN OLD; END $$;
         CREATE TRIGGER slow_delete BEFORE DELETE ON sessions FOR EACH ROW EXECUTE FUNCTION slow_delete();",
    )
    .unwrap();
    let mut admin = cluster.connect("postgres");
    reload(&mut admin, &[("session_gc.interval", "1s")]);
    wait_until("a timed-out run is recorded", DEADLINE, || {
        count(
            &mut c,
            "session_gc.history WHERE status = 'error' AND error LIKE '%statement timeout%'",
        ) >= 1
    });
    wait_until("the pass reports its error", DEADLINE, || {
        scalar::<Option<i64>>(
            &mut c,
            "SELECT last_pass_errors FROM session_gc.worker_status()",
        )
        .is_some_and(|errors| errors >= 1)
    });
    assert_eq!(
        count(&mut c, "sessions"),
        1_010,
        "every batch was cancelled"
    );
}

/// Whether the worker of this database says it waits for a standby.
fn worker_waits_for_a_standby(client: &mut Client) -> bool {
    count(
        client,
        "pg_stat_activity WHERE backend_type = 'session_gc worker'
           AND query LIKE 'session_gc: waiting for a standby%'",
    ) == 1
}

fn pause_replay(standby: &mut Client) {
    standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .unwrap();
    wait_until("replay is paused", DEADLINE, || {
        scalar::<String>(standby, "SELECT pg_get_wal_replay_pause_state()") == "paused"
    });
}

/// With `session_gc.max_replica_lag`, the worker stops deleting while a standby's replay is
/// paused (within what the limit lets through), purge() waits until its max_runtime and says
/// so in history, and both go on once the standby replays again, or disconnects.
#[test]
fn purges_wait_for_a_standby_that_is_behind() {
    let primary = Cluster::start(
        "w_lag_primary",
        &[
            PRELOAD,
            "session_gc.interval = 1",
            "session_gc.enabled = off",
            "session_gc.max_replica_lag = '256kB'",
        ],
    );
    let db = primary.fresh_db("w_lag");
    let mut p = primary.connect(&db);
    sessions_table(&mut p, "sessions", 100_000, 10);
    p.batch_execute("CHECKPOINT").unwrap();
    let standby = Cluster::replica_of(&primary, "w_lag_standby", &["hot_standby = on"]);
    let mut s = standby.connect(&db);
    wait_until("the standby has the sessions", DEADLINE, || {
        s.query_one("SELECT count(*) FROM sessions", &[])
            .map(|row| row.get::<_, i64>(0) == 100_010)
            .unwrap_or(false)
    });
    pause_replay(&mut s);
    // A standby that has not reported a replay position yet is not counted (a base backup's
    // walsender never does): the worker must start once this one has, or it may purge freely
    // until the first report comes.
    wait_until(
        "the standby has reported its replay position",
        DEADLINE,
        || count(&mut p, "pg_stat_replication WHERE replay_lsn IS NOT NULL") == 1,
    );
    reload(&mut p, &[("session_gc.enabled", "on")]);
    wait_until("the worker waits for the standby", DEADLINE, || {
        worker_waits_for_a_standby(&mut p)
    });
    let left = count(&mut p, "sessions");
    assert!(
        left > 90_000,
        "at most what 256kB of WAL holds went before the wait: {left} left"
    );
    // purge() waits too, after its first batch (a table with nothing to purge never waits),
    // until its max_runtime, and history says how long.
    let started = Instant::now();
    p.batch_execute("CALL session_gc.purge('sessions', max_runtime => '2 seconds')")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    let (status, deleted, waited): (String, i64, f64) = {
        let row = p
            .query_one(
                "SELECT status, deleted, extract(epoch FROM replica_wait)::float8
                   FROM session_gc.history WHERE trigger = 'manual'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(status, "partial");
    assert!(deleted <= 500, "one batch, then the wait: {deleted}");
    assert!(waited >= 1.5, "waited {waited} s");
    assert!(worker_waits_for_a_standby(&mut p), "still waiting");
    assert_eq!(
        count(&mut p, "sessions"),
        left - deleted,
        "nothing deleted while waiting"
    );

    s.batch_execute("SELECT pg_wal_replay_resume()").unwrap();
    wait_until(
        "the worker finishes once the standby replays",
        DEADLINE,
        || count(&mut p, "sessions") == 10,
    );
    let waited_total: f64 = scalar(
        &mut p,
        "SELECT replica_wait_seconds_total FROM session_gc.metrics()",
    );
    assert!(waited_total >= 1.5, "metrics: {waited_total} s");

    // A standby that goes away holds nothing. Paused first: the new rows alone put it behind.
    pause_replay(&mut s);
    p.batch_execute(
        "INSERT INTO sessions (expires) SELECT now() - interval '1 minute'
           FROM generate_series(1, 50000)",
    )
    .unwrap();
    wait_until("the worker waits again", DEADLINE, || {
        worker_waits_for_a_standby(&mut p)
    });
    drop(s);
    standby.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    wait_until("the worker finishes without the standby", DEADLINE, || {
        count(&mut p, "sessions") == 10
    });
}

/// The worker purges a table's policies together, each only the rows its filter selects.
#[test]
fn the_worker_purges_policies_with_row_filters() {
    let cluster = Cluster::start("w_filters", &[PRELOAD, "session_gc.interval = 1"]);
    let db = cluster.fresh_db("w_filters");
    let mut c = cluster.connect(&db);
    c.batch_execute(
        "CREATE TABLE tokens (id bigserial PRIMARY KEY, context text NOT NULL,
                              inserted_at timestamptz NOT NULL);
         CREATE INDEX ON tokens (context, inserted_at);
         CREATE INDEX ON tokens (inserted_at);
         INSERT INTO tokens (context, inserted_at)
         SELECT c, now() - make_interval(hours => h)
           FROM unnest(ARRAY['session', 'reset_password', 'api']) c,
                generate_series(1, 2000) h;
         SELECT session_gc.register('tokens', policy_name => 'session',
                  row_filter => $$context = 'session'$$,
                  created_column => 'inserted_at', max_age => '60 days');
         SELECT session_gc.register('tokens', policy_name => 'reset_password',
                  row_filter => $$context = 'reset_password'$$,
                  created_column => 'inserted_at', max_age => '1 day');",
    )
    .unwrap();
    // Sessions up to 60 days (1440 hours) stay, reset tokens up to a day, api tokens all.
    wait_until("the worker purges each kind at its age", DEADLINE, || {
        count(&mut c, "tokens WHERE context = 'session'") == 1439
            && count(&mut c, "tokens WHERE context = 'reset_password'") == 23
    });
    assert_eq!(count(&mut c, "tokens WHERE context = 'api'"), 2000);
    assert_eq!(
        count(
            &mut c,
            "session_gc.history WHERE trigger = 'worker' AND status = 'ok'"
        ),
        1,
        "one run for the table's policies"
    );
}
