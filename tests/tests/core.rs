//! The SQL surface on a real cluster: every rule and column type, dry runs, batching,
//! concurrency with the application, cascades, partitions, bad input, ownership, security,
//! stats and history.

use postgres::Client;
use session_gc_integration::{
    cleanup_row, column, count, expect_error, scalar, shared_cluster, wait_until,
};
use std::time::{Duration, Instant};

fn db(name: &str) -> Client {
    let cluster = shared_cluster();
    let db = cluster.fresh_db(name);
    cluster.connect(&db)
}

const SESSIONS: &str = "
    CREATE TABLE sessions (
        id          bigserial PRIMARY KEY,
        token       text NOT NULL DEFAULT md5(random()::text),
        user_id     int,
        created_at  timestamptz NOT NULL DEFAULT now(),
        last_seen   timestamptz NOT NULL DEFAULT now(),
        expires     timestamptz NOT NULL DEFAULT now() + interval '1 day',
        active      boolean DEFAULT true
    );
    CREATE INDEX ON sessions (expires);
    CREATE INDEX ON sessions (last_seen);
    CREATE INDEX ON sessions (created_at);";

/// `(deleted, expired, idle, aged, inactive, batches, status)` of a cleanup() call on one table.
fn cleanup(client: &mut Client, args: &str) -> (i64, i64, i64, i64, i64, i32, String) {
    let row = cleanup_row(client, args);
    (
        row.deleted,
        row.expired,
        row.idle,
        row.aged,
        row.inactive,
        row.batches,
        row.status,
    )
}

#[test]
fn expires_rule_purges_expired_rows_only() {
    let mut c = db("t_expires");
    c.batch_execute(SESSIONS).unwrap();
    c.batch_execute(
        "INSERT INTO sessions (expires) SELECT now() - g * interval '1 minute' FROM generate_series(1, 30) g;
         INSERT INTO sessions (expires) SELECT now() + g * interval '1 minute' FROM generate_series(1, 20) g;
         SELECT session_gc.register('sessions', expires_column => 'expires');",
    )
    .unwrap();
    let (deleted, expired, idle, aged, inactive, _, status) = cleanup(&mut c, "");
    assert_eq!((deleted, expired, idle, aged, inactive), (30, 30, 0, 0, 0));
    assert_eq!(status, "ok");
    assert_eq!(count(&mut c, "sessions"), 20);
    assert_eq!(count(&mut c, "sessions WHERE expires < now()"), 0);
    // Nothing left: a second run deletes nothing.
    assert_eq!(cleanup(&mut c, "").0, 0);
}

#[test]
fn idle_age_inactive_and_grace_rules() {
    let mut c = db("t_rules");
    c.batch_execute(SESSIONS).unwrap();
    c.batch_execute(
        "INSERT INTO sessions (last_seen) VALUES (now() - interval '2 hours'), (now() - interval '30 minutes');
         INSERT INTO sessions (created_at) VALUES (now() - interval '10 days'), (now() - interval '1 day');
         INSERT INTO sessions (active) VALUES (false), (true), (NULL);
         SELECT session_gc.register('sessions', idle_column => 'last_seen', idle_timeout => '1 hour',
                created_column => 'created_at', max_age => '7 days', active_column => 'active');",
    )
    .unwrap();
    let (deleted, expired, idle, aged, inactive, _, _) = cleanup(&mut c, "'sessions'");
    assert_eq!((deleted, expired, idle, aged, inactive), (3, 0, 1, 1, 1));
    assert_eq!(count(&mut c, "sessions"), 4);
    assert_eq!(
        count(&mut c, "sessions WHERE active IS NULL"),
        1,
        "an unknown activity is not inactive"
    );

    // Grace keeps rows past expiry for a while.
    c.batch_execute(
        "TRUNCATE sessions;
         INSERT INTO sessions (expires) VALUES (now() - interval '5 minutes'), (now() - interval '20 minutes');
         SELECT session_gc.register('sessions', expires_column => 'expires', grace => '10 minutes');",
    )
    .unwrap();
    assert_eq!(cleanup(&mut c, "").0, 1);
    assert_eq!(
        count(
            &mut c,
            "sessions WHERE expires > now() - interval '6 minutes'"
        ),
        1
    );
}

#[test]
fn every_column_type() {
    let mut c = db("t_types");
    c.batch_execute(
        "CREATE TABLE naive (id int, expires timestamp);
         CREATE INDEX ON naive (expires);
         -- Read in New York time: a wall-clock value one hour behind New York's is expired,
         -- the same value one hour behind UTC is still hours in the future there.
         INSERT INTO naive VALUES
             (1, (now() AT TIME ZONE 'America/New_York') - interval '1 hour'),
             (2, (now() AT TIME ZONE 'America/New_York') + interval '1 hour'),
             (3, (now() AT TIME ZONE 'UTC') + interval '1 hour');
         SELECT session_gc.register('naive', expires_column => 'expires', time_zone => 'America/New_York');

         CREATE TABLE daily (id int, valid_until date);
         CREATE INDEX ON daily (valid_until);
         INSERT INTO daily VALUES (1, (now() AT TIME ZONE 'UTC')::date - 1),
                                  (2, (now() AT TIME ZONE 'UTC')::date),
                                  (3, (now() AT TIME ZONE 'UTC')::date + 1);
         SELECT session_gc.register('daily', expires_column => 'valid_until', time_zone => 'UTC');

         CREATE TABLE epoch_s (id int, exp integer);
         CREATE INDEX ON epoch_s (exp);
         INSERT INTO epoch_s VALUES (1, extract(epoch FROM now())::int - 60),
                                    (2, extract(epoch FROM now())::int + 60);
         SELECT session_gc.register('epoch_s', expires_column => 'exp', epoch_unit => 's');

         CREATE TABLE epoch_ms (id int, seen bigint);
         CREATE INDEX ON epoch_ms (seen);
         INSERT INTO epoch_ms VALUES (1, (extract(epoch FROM now()) * 1000)::bigint - 3600 * 1000 - 1000),
                                     (2, (extract(epoch FROM now()) * 1000)::bigint - 1000);
         SELECT session_gc.register('epoch_ms', idle_column => 'seen', idle_timeout => '1 hour', epoch_unit => 'ms');",
    )
    .unwrap();
    for table in ["naive", "daily", "epoch_s", "epoch_ms"] {
        let (deleted, ..) = cleanup(&mut c, &format!("'{table}'"));
        assert_eq!(deleted, 1, "{table}");
        let left: Vec<i32> = column(&mut c, &format!("SELECT id FROM {table} ORDER BY id"));
        assert!(!left.contains(&1), "{table}: expired row 1 kept: {left:?}");
        assert_eq!(
            left.len(),
            if table == "naive" || table == "daily" {
                2
            } else {
                1
            },
            "{table}"
        );
    }
    // The zone is stored with the policy, whatever the caller's TimeZone.
    let zone: String = scalar(
        &mut c,
        "SELECT time_zone FROM session_gc.policies WHERE table_name = 'naive'::regclass",
    );
    assert_eq!(zone, "America/New_York");
}

#[test]
fn quoted_mixed_case_identifiers() {
    let mut c = db("t_quoted");
    c.batch_execute(
        r#"CREATE SCHEMA "App Data";
           CREATE TABLE "App Data"."UserSessions" ("sessionToken" text, "EXPIRY_TIME" timestamptz, "Last Seen" timestamptz);
           CREATE INDEX ON "App Data"."UserSessions" ("EXPIRY_TIME");
           CREATE INDEX ON "App Data"."UserSessions" ("Last Seen");
           INSERT INTO "App Data"."UserSessions" VALUES
               ('a', now() - interval '1 hour', now()),
               ('b', now() + interval '1 hour', now() - interval '3 hours'),
               ('c', now() + interval '1 hour', now());
           SELECT session_gc.register('"App Data"."UserSessions"', expires_column => 'EXPIRY_TIME',
                                      idle_column => 'Last Seen', idle_timeout => '2 hours');"#,
    )
    .unwrap();
    let (deleted, expired, idle, ..) = cleanup(&mut c, r#"'"App Data"."UserSessions"'"#);
    assert_eq!((deleted, expired, idle), (2, 1, 1));
    let left: String = scalar(
        &mut c,
        r#"SELECT string_agg("sessionToken", ',') FROM "App Data"."UserSessions""#,
    );
    assert_eq!(left, "c");
    // Names are exact: the folded spelling is a different column.
    let e = expect_error(
        &mut c,
        r#"SELECT session_gc.register('"App Data"."UserSessions"', expires_column => 'expiry_time')"#,
    );
    assert_eq!(e.code, "42703");
    assert!(e.hint.unwrap().contains("case"));
}

#[test]
fn dry_run_counts_exactly_and_deletes_nothing() {
    let mut c = db("t_dry");
    c.batch_execute(SESSIONS).unwrap();
    c.batch_execute(
        "INSERT INTO sessions (expires, last_seen) SELECT now() - interval '1 minute', now() FROM generate_series(1, 10);
         INSERT INTO sessions (expires, last_seen) SELECT now() + interval '1 day', now() - interval '2 hours' FROM generate_series(1, 5);
         INSERT INTO sessions (expires, last_seen) SELECT now() - interval '1 minute', now() - interval '2 hours' FROM generate_series(1, 3);
         INSERT INTO sessions (expires, last_seen) SELECT now() + interval '1 day', now() FROM generate_series(1, 7);
         SELECT session_gc.register('sessions', expires_column => 'expires', idle_column => 'last_seen', idle_timeout => '1 hour');",
    )
    .unwrap();
    let dry = cleanup(&mut c, "dry_run => true");
    assert_eq!(
        (dry.0, dry.1, dry.2, dry.5, dry.6.as_str()),
        (18, 13, 5, 0, "dry_run")
    );
    assert_eq!(count(&mut c, "sessions"), 25);
    assert_eq!(
        count(&mut c, "session_gc.history"),
        0,
        "a dry run is not a run"
    );
    let real = cleanup(&mut c, "");
    assert_eq!(
        (real.0, real.1, real.2),
        (18, 13, 5),
        "a row matched by two rules is deleted once"
    );
    assert_eq!(count(&mut c, "sessions"), 7);
}

#[test]
fn batches_cover_more_rows_than_one_batch() {
    let mut c = db("t_batches");
    c.batch_execute(SESSIONS).unwrap();
    c.batch_execute(
        "INSERT INTO sessions (expires) SELECT now() - g * interval '1 second' FROM generate_series(1, 2500) g;
         INSERT INTO sessions (expires) SELECT now() + interval '1 hour' FROM generate_series(1, 100);
         SELECT session_gc.register('sessions', expires_column => 'expires', batch_size => 1000);",
    )
    .unwrap();
    // A small table is walked along its heap in block ranges sized to about one batch.
    let (deleted, _, _, _, _, batches, _) = cleanup(&mut c, "");
    assert_eq!(deleted, 2500);
    assert!(
        batches > 1,
        "2,500 rows in batches of 1,000 took {batches} batch"
    );
    c.batch_execute("INSERT INTO sessions (expires) SELECT now() - g * interval '1 second' FROM generate_series(1, 2100) g")
        .unwrap();
    // The call's batch size wins over the policy's.
    let (deleted, _, _, _, _, batches, _) = cleanup(&mut c, "batch_size => 300");
    assert_eq!(deleted, 2100);
    assert!(
        batches > 3,
        "2,100 rows in batches of 300 took {batches} batches"
    );
    assert_eq!(count(&mut c, "sessions"), 100);
    // Equal keys across a batch boundary are not lost.
    c.batch_execute("INSERT INTO sessions (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 250)")
        .unwrap();
    assert_eq!(cleanup(&mut c, "batch_size => 100").0, 250);
    // A time budget that ends at once leaves the backlog for the next run and says so.
    c.batch_execute("INSERT INTO sessions (expires) SELECT now() - g * interval '1 second' FROM generate_series(1, 500) g")
        .unwrap();
    let (_, _, _, _, _, _, status) =
        cleanup(&mut c, "batch_size => 1, max_runtime => '1 microsecond'");
    assert_eq!(status, "partial");
}

#[test]
fn rows_held_or_extended_by_the_application_are_kept() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("t_concurrent");
    let mut purger = cluster.connect(&name);
    let mut app = cluster.connect(&name);
    purger.batch_execute(SESSIONS).unwrap();
    purger
        .batch_execute(
            "INSERT INTO sessions (id, expires) SELECT g, now() - interval '1 minute' FROM generate_series(1, 50) g;
             SELECT session_gc.register('sessions', expires_column => 'expires', batch_size => 10);",
        )
        .unwrap();
    // The app extends session 1 and holds session 2, both expired, in an open transaction.
    let mut txn = app.transaction().unwrap();
    txn.batch_execute(
        "UPDATE sessions SET expires = now() + interval '1 hour' WHERE id = 1;
         SELECT 1 FROM sessions WHERE id = 2 FOR UPDATE;",
    )
    .unwrap();
    // The purge neither waits for the app's locks nor deletes the held rows.
    purger
        .batch_execute("SET statement_timeout = '20s'")
        .unwrap();
    let started = Instant::now();
    let (deleted, ..) = cleanup(&mut purger, "");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "purge waited on the app"
    );
    assert_eq!(deleted, 48);
    txn.commit().unwrap();
    // Session 1 was extended: it stays. Session 2 is still expired: the next run takes it.
    let (deleted, ..) = cleanup(&mut purger, "");
    assert_eq!(deleted, 1);
    let left: Vec<i64> = column(&mut purger, "SELECT id FROM sessions");
    assert_eq!(left, vec![1]);
}

#[test]
fn a_table_lock_held_by_the_app_times_out_instead_of_queueing() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("t_tablelock");
    let mut purger = cluster.connect(&name);
    let mut app = cluster.connect(&name);
    purger.batch_execute(SESSIONS).unwrap();
    purger
        .batch_execute(
            "INSERT INTO sessions (expires) SELECT now() - interval '1 minute' FROM generate_series(1, 5);
             CREATE TABLE other (expires timestamptz); CREATE INDEX ON other (expires);
             INSERT INTO other SELECT now() - interval '1 minute' FROM generate_series(1, 3);
             SELECT session_gc.register('sessions', expires_column => 'expires');
             SELECT session_gc.register('other', expires_column => 'expires');
             SET session_gc.lock_timeout = '200ms';",
        )
        .unwrap();
    let mut txn = app.transaction().unwrap();
    txn.batch_execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let started = Instant::now();
    let rows = purger
        .query(
            "SELECT table_name::text, deleted, status, error FROM session_gc.cleanup() ORDER BY 1",
            &[],
        )
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let other = &rows[0];
    let sessions = &rows[1];
    assert_eq!(
        (other.get::<_, String>(0), other.get::<_, i64>(1)),
        ("other".into(), 3)
    );
    assert_eq!(sessions.get::<_, String>(2), "error");
    assert!(
        sessions.get::<_, String>(3).contains("lock"),
        "{:?}",
        sessions.get::<_, String>(3)
    );
    txn.rollback().unwrap();
    let failed: i64 = scalar(
        &mut purger,
        "SELECT count(*) FROM session_gc.history WHERE status = 'error' AND error LIKE '%lock%'",
    );
    assert_eq!(failed, 1);
    assert_eq!(cleanup(&mut purger, "'sessions'").0, 5);
}

#[test]
fn cascades_to_child_tables() {
    let mut c = db("t_cascade");
    c.batch_execute(SESSIONS).unwrap();
    c.batch_execute(
        "CREATE TABLE refresh_tokens (id serial PRIMARY KEY,
             session_id bigint NOT NULL REFERENCES sessions ON DELETE CASCADE);
         CREATE INDEX ON refresh_tokens (session_id);
         INSERT INTO sessions (id, expires) VALUES (1, now() - interval '1 hour'), (2, now() + interval '1 hour');
         INSERT INTO refresh_tokens (session_id) VALUES (1), (1), (2);
         SELECT session_gc.register('sessions', expires_column => 'expires');",
    )
    .unwrap();
    assert_eq!(cleanup(&mut c, "").0, 1);
    let left: Vec<i64> = column(&mut c, "SELECT session_id FROM refresh_tokens");
    assert_eq!(left, vec![2]);
}

#[test]
fn partitioned_tables_never_confuse_rows_of_different_partitions() {
    let mut c = db("t_partitioned");
    c.batch_execute(
        "CREATE TABLE psessions (id int, region text, expires timestamptz) PARTITION BY LIST (region);
         CREATE TABLE psessions_eu PARTITION OF psessions FOR VALUES IN ('eu');
         CREATE TABLE psessions_us PARTITION OF psessions FOR VALUES IN ('us');
         CREATE TABLE psessions_other PARTITION OF psessions DEFAULT;
         CREATE INDEX ON psessions (expires);
         -- The first row of each partition has ctid (0,1): only the expired ones may go.
         INSERT INTO psessions VALUES (1, 'eu', now() - interval '1 hour'), (2, 'us', now() + interval '1 hour'),
                                      (3, 'xx', now() - interval '1 hour'), (4, 'eu', now() + interval '1 hour'),
                                      (5, 'us', now() - interval '2 hours');
         SELECT session_gc.register('psessions', expires_column => 'expires', batch_size => 1);",
    )
    .unwrap();
    assert_eq!(cleanup(&mut c, "").0, 3);
    let left: Vec<i32> = column(&mut c, "SELECT id FROM psessions ORDER BY id");
    assert_eq!(left, vec![2, 4]);
    let stats_bytes: i64 = scalar(
        &mut c,
        "SELECT table_bytes FROM session_gc.stats('psessions')",
    );
    assert!(stats_bytes > 0);
}

/// Every misuse: the right SQLSTATE, a detail and a hint, and the policies untouched.
#[test]
fn bad_input_is_refused_with_sqlstate_detail_and_hint() {
    let mut c = db("t_bad");
    c.batch_execute(SESSIONS).unwrap();
    c.batch_execute(
        "ALTER TABLE sessions ADD COLUMN note text, ADD COLUMN exp_epoch bigint;
         CREATE VIEW sessions_view AS SELECT * FROM sessions;
         CREATE MATERIALIZED VIEW sessions_mv AS SELECT * FROM sessions;
         CREATE FOREIGN DATA WRAPPER dummy_fdw;
         CREATE SERVER dummy_server FOREIGN DATA WRAPPER dummy_fdw;
         CREATE FOREIGN TABLE sessions_ft (expires timestamptz) SERVER dummy_server;
         CREATE TABLE unregistered (expires timestamptz);
         SELECT session_gc.register('sessions', expires_column => 'expires');",
    )
    .unwrap();
    let snapshot = |c: &mut Client| -> String {
        scalar(
            c,
            "SELECT coalesce(string_agg(p::text, '|'), '') FROM session_gc.policies p",
        )
    };
    let before = snapshot(&mut c);
    let reg = |args: &str| format!("SELECT session_gc.register('sessions', {args})");
    let cases: Vec<(String, &str)> = vec![
        (reg("expires_column => 'nope'"), "42703"),
        (reg("expires_column => 'note'"), "42804"),
        (reg("active_column => 'expires'"), "42804"),
        (reg("expires_column => 'exp_epoch'"), "22023"),
        (
            reg("expires_column => 'exp_epoch', epoch_unit => 'h'"),
            "22023",
        ),
        (
            reg("expires_column => 'expires', epoch_unit => 's'"),
            "22023",
        ),
        ("SELECT session_gc.register('sessions')".into(), "22023"),
        (reg("idle_column => 'last_seen'"), "22023"),
        (
            reg("expires_column => 'expires', idle_timeout => '1 hour'"),
            "22023",
        ),
        (
            reg("idle_column => 'last_seen', idle_timeout => '-1 hour'"),
            "22023",
        ),
        (
            reg("created_column => 'created_at', max_age => '0'"),
            "22023",
        ),
        (
            reg("expires_column => 'expires', grace => '-5 minutes'"),
            "22023",
        ),
        (reg("expires_column => 'expires', batch_size => 0"), "22023"),
        (
            reg("expires_column => 'expires', batch_size => -5"),
            "22023",
        ),
        (
            reg("expires_column => 'expires', time_zone => 'Mars/Olympus_Mons'"),
            "22023",
        ),
        (
            "SELECT session_gc.register('sessions_view', expires_column => 'expires')".into(),
            "42809",
        ),
        (
            "SELECT session_gc.register('sessions_mv', expires_column => 'expires')".into(),
            "42809",
        ),
        (
            "SELECT session_gc.register('sessions_ft', expires_column => 'expires')".into(),
            "42809",
        ),
        (
            "SELECT * FROM session_gc.cleanup('unregistered')".into(),
            "42704",
        ),
        (
            "SELECT * FROM session_gc.stats('unregistered')".into(),
            "42704",
        ),
        (
            "SELECT session_gc.unregister('unregistered')".into(),
            "42704",
        ),
        (
            "SELECT * FROM session_gc.cleanup(batch_size => 0)".into(),
            "22023",
        ),
        (
            "SELECT * FROM session_gc.cleanup(max_runtime => '-1 second')".into(),
            "22023",
        ),
    ];
    for (sql, code) in cases {
        let e = expect_error(&mut c, &sql);
        assert_eq!(e.code, code, "{sql}: {e:?}");
        assert!(
            e.detail.as_deref().is_some_and(|d| !d.is_empty()),
            "{sql}: no detail: {e:?}"
        );
        assert!(
            e.hint.as_deref().is_some_and(|h| !h.is_empty()),
            "{sql}: no hint: {e:?}"
        );
        assert_eq!(snapshot(&mut c), before, "{sql} changed the policies");
    }
    // Temporary tables cannot be purged by the worker: refused.
    c.batch_execute("CREATE TEMP TABLE tmp_sessions (expires timestamptz)")
        .unwrap();
    let e = expect_error(
        &mut c,
        "SELECT session_gc.register('tmp_sessions', expires_column => 'expires')",
    );
    assert_eq!(e.code, "0A000");
    // An unknown table is refused by regclass itself.
    let e = expect_error(
        &mut c,
        "SELECT session_gc.register('no_such_table', expires_column => 'expires')",
    );
    assert_eq!(e.code, "42P01");
    assert_eq!(snapshot(&mut c), before);
}

#[test]
fn only_owners_manage_policies_and_nothing_is_public() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("t_owner");
    let mut admin = cluster.connect(&name);
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
                 CREATE ROLE app_owner LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             DO $$ BEGIN
                 CREATE ROLE intruder LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT CREATE ON SCHEMA public TO app_owner;
             GRANT USAGE ON SCHEMA session_gc TO app_owner, intruder;
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA session_gc TO app_owner, intruder;
             SET ROLE app_owner;
             {SESSIONS}
             INSERT INTO sessions (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 4);
             RESET ROLE;"
        ))
        .unwrap();
    let mut intruder = cluster.connect(&name);
    intruder.batch_execute("SET ROLE intruder").unwrap();
    let e = expect_error(
        &mut intruder,
        "SELECT session_gc.register('sessions', expires_column => 'expires')",
    );
    assert_eq!(e.code, "42501");
    assert!(e.detail.is_some() && e.hint.is_some());

    let mut owner = cluster.connect(&name);
    owner.batch_execute("SET ROLE app_owner").unwrap();
    owner
        .batch_execute("SELECT session_gc.register('sessions', expires_column => 'expires')")
        .unwrap();
    assert_eq!(
        expect_error(
            &mut intruder,
            "SELECT * FROM session_gc.cleanup('sessions')"
        )
        .code,
        "42501"
    );
    assert_eq!(
        expect_error(&mut intruder, "SELECT session_gc.unregister('sessions')").code,
        "42501"
    );
    // cleanup() of every policy covers only the caller's tables.
    let seen: i64 = scalar(&mut intruder, "SELECT count(*) FROM session_gc.cleanup()");
    assert_eq!(seen, 0);
    assert_eq!(count(&mut owner, "sessions"), 4);
    // The owner, with the documented grants, purges its own table.
    assert_eq!(cleanup(&mut owner, "'sessions'").0, 4);
    // Without a grant nothing is callable.
    admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE nobody_special LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT USAGE ON SCHEMA session_gc TO nobody_special;",
        )
        .unwrap();
    let mut nobody = cluster.connect(&name);
    nobody.batch_execute("SET ROLE nobody_special").unwrap();
    for sql in [
        "SELECT * FROM session_gc.cleanup()",
        "SELECT * FROM session_gc.stats()",
        "SELECT session_gc.register('sessions', expires_column => 'expires')",
        "SELECT * FROM session_gc.policies",
        "SELECT * FROM session_gc.history",
    ] {
        assert_eq!(expect_error(&mut nobody, sql).code, "42501", "{sql}");
    }
}

#[test]
fn a_trigger_on_the_sessions_table_runs_as_its_owner_not_as_the_superuser() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("t_trigger");
    let mut admin = cluster.connect(&name);
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE mallory LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT CREATE ON SCHEMA public TO mallory;
             SET ROLE mallory;
             {SESSIONS}
             CREATE TABLE mallory_log (who name, is_super boolean, note text);
             CREATE FUNCTION steal() RETURNS trigger LANGUAGE plpgsql AS $f$
             BEGIN
                 -- Purges run with search_path = pg_catalog, pg_temp: owners qualify their names.
                 INSERT INTO public.mallory_log SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), 'ran';
                 BEGIN
                     ALTER ROLE mallory SUPERUSER;
                 EXCEPTION WHEN others THEN
                     INSERT INTO public.mallory_log VALUES (current_user, NULL, SQLERRM);
                 END;
                 BEGIN
                     SET ROLE postgres;
                     INSERT INTO public.mallory_log VALUES (current_user, NULL, 'became postgres');
                 EXCEPTION WHEN others THEN
                     INSERT INTO public.mallory_log VALUES (current_user, NULL, SQLERRM);
                 END;
                 RETURN OLD;
             END $f$;
             CREATE TRIGGER steal BEFORE DELETE ON sessions FOR EACH ROW EXECUTE FUNCTION steal();
             INSERT INTO sessions (expires) VALUES (now() - interval '1 hour');
             RESET ROLE;
             SELECT session_gc.register('sessions', expires_column => 'expires');"
        ))
        .unwrap();
    // A superuser runs the purge.
    let rows = admin
        .query("SELECT status, deleted FROM session_gc.cleanup()", &[])
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].get::<_, String>(0), rows[0].get::<_, i64>(1)),
        ("ok".to_string(), 1)
    );
    let is_super: bool = scalar(
        &mut admin,
        "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'",
    );
    assert!(!is_super, "the trigger made its owner a superuser");
    let who: Vec<String> = column(&mut admin, "SELECT who::text FROM mallory_log");
    assert!(!who.is_empty(), "the trigger did not run");
    assert!(who.iter().all(|w| w == "mallory"), "trigger ran as {who:?}");
    let became: i64 = scalar(
        &mut admin,
        "SELECT count(*) FROM mallory_log WHERE note = 'became postgres'",
    );
    assert_eq!(became, 0);
    // After the purge the caller is still who it was.
    let me: String = scalar(&mut admin, "SELECT current_user::text");
    assert_eq!(me, "postgres");
}

#[test]
fn stats_counts_exactly_through_the_index_and_reports_runs() {
    let mut c = db("t_stats");
    c.batch_execute(SESSIONS).unwrap();
    c.batch_execute(
        "INSERT INTO sessions (expires) SELECT now() - g * interval '1 minute' FROM generate_series(1, 50) g;
         INSERT INTO sessions (expires) SELECT now() + g * interval '1 minute' FROM generate_series(1, 950) g;
         SELECT session_gc.register('sessions', expires_column => 'expires');",
    )
    .unwrap();
    c.batch_execute("VACUUM ANALYZE sessions").unwrap();
    let row = c
        .query_one(
            "SELECT total_rows, expired_rows, oldest_expired < now() - interval '49 minutes',
                    oldest_expired > now() - interval '51 minutes', table_bytes, last_run IS NULL, deleted_total
               FROM session_gc.stats()",
            &[],
        )
        .unwrap();
    let total: i64 = row.get(0);
    assert!((900..=1100).contains(&total), "estimate {total}");
    assert_eq!(row.get::<_, i64>(1), 50);
    assert!(row.get::<_, bool>(2) && row.get::<_, bool>(3));
    assert!(row.get::<_, i64>(4) > 0);
    assert!(row.get::<_, bool>(5));
    assert_eq!(row.get::<_, i64>(6), 0);

    // stats() never reads the whole heap when an index serves the rule. The setup's own scans
    // (index builds) are flushed when its backend exits; only then is the baseline taken.
    let cluster = shared_cluster();
    let setup_pid: i32 = scalar(&mut c, "SELECT pg_backend_pid()");
    drop(c);
    let mut observer = cluster.connect("t_stats");
    wait_until("the setup backend exits", Duration::from_secs(30), || {
        let left: i64 = scalar(
            &mut observer,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {setup_pid}"),
        );
        left == 0
    });
    let scans = |o: &mut Client| -> (i64, i64) {
        o.batch_execute("SELECT pg_stat_clear_snapshot()").unwrap();
        let r = o
            .query_one("SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'sessions'", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    let (seq_before, idx_before) = scans(&mut observer);
    let mut c = cluster.connect("t_stats");
    c.batch_execute("SELECT * FROM session_gc.stats()").unwrap();
    wait_until(
        "stats() index scans become visible",
        Duration::from_secs(30),
        || {
            let _ = c.batch_execute("SELECT pg_stat_force_next_flush()");
            let _ = c.batch_execute("SELECT 1");
            scans(&mut observer).1 > idx_before
        },
    );
    assert_eq!(
        scans(&mut observer).0,
        seq_before,
        "stats() scanned the table sequentially"
    );

    assert_eq!(cleanup(&mut c, "").0, 50);
    let row = c
        .query_one("SELECT expired_rows, last_deleted, deleted_total, last_run IS NOT NULL FROM session_gc.stats('sessions')", &[])
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (0, 50, 50)
    );
    assert!(row.get::<_, bool>(3));
}

#[test]
fn history_records_runs_and_is_trimmed() {
    let mut c = db("t_history");
    c.batch_execute(SESSIONS).unwrap();
    c.batch_execute(
        "INSERT INTO sessions (expires) SELECT now() - interval '1 minute' FROM generate_series(1, 7);
         SELECT session_gc.register('sessions', expires_column => 'expires');",
    )
    .unwrap();
    cleanup(&mut c, "");
    let row = c
        .query_one(
            "SELECT trigger, status, deleted, expired, batches, finished_at >= started_at, table_name
               FROM session_gc.history",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "manual");
    assert_eq!(row.get::<_, String>(1), "ok");
    assert_eq!(row.get::<_, i64>(2), 7);
    assert_eq!(row.get::<_, i64>(3), 7);
    // One block: walked in a range or two (the planner guesses the size of a table never analyzed).
    assert!((1..=2).contains(&row.get::<_, i32>(4)));
    assert!(row.get::<_, bool>(5));
    // Schema-qualified whatever the caller's search_path (here the default, with public on it).
    assert_eq!(row.get::<_, String>(6), "public.sessions");
    c.batch_execute(
        "INSERT INTO session_gc.history (relid, table_name, trigger, started_at, status)
         VALUES ('sessions'::regclass, 'sessions', 'manual', now() - interval '30 days', 'ok');
         SET session_gc.history_retention = '1d';",
    )
    .unwrap();
    cleanup(&mut c, "");
    assert_eq!(
        count(
            &mut c,
            "session_gc.history WHERE started_at < now() - interval '1 day'"
        ),
        0
    );
    assert_eq!(count(&mut c, "session_gc.history"), 2);
}

#[test]
fn one_broken_policy_does_not_stop_the_others() {
    let mut c = db("t_broken");
    c.batch_execute(
        "CREATE TABLE a (expires timestamptz); CREATE INDEX ON a (expires);
         CREATE TABLE b (expires timestamptz, other timestamptz); CREATE INDEX ON b (expires);
         INSERT INTO a SELECT now() - interval '1 hour' FROM generate_series(1, 3);
         INSERT INTO b SELECT now() - interval '1 hour', now() FROM generate_series(1, 3);
         SELECT session_gc.register('a', expires_column => 'expires');
         SELECT session_gc.register('b', expires_column => 'expires');
         ALTER TABLE b DROP COLUMN expires;",
    )
    .unwrap();
    let rows = c
        .query(
            "SELECT table_name::text, deleted, status, error FROM session_gc.cleanup() ORDER BY 1",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].get::<_, i64>(1), rows[0].get::<_, String>(2)),
        (3, "ok".to_string())
    );
    assert_eq!(rows[1].get::<_, String>(2), "error");
    assert!(rows[1].get::<_, String>(3).contains("does not exist"));
    assert_eq!(
        count(&mut c, "b"),
        3,
        "nothing of the broken table was deleted"
    );
    assert_eq!(
        count(&mut c, "session_gc.history WHERE status = 'error'"),
        1
    );
    // Named explicitly, the failure is raised.
    let e = expect_error(&mut c, "SELECT * FROM session_gc.cleanup('b')");
    assert_eq!(e.code, "42703");
    assert!(e.hint.is_some());
}

#[test]
fn register_replaces_warns_about_missing_indexes_and_unregister_and_drop_forget() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("t_lifecycle");
    let (mut c, notices) = cluster.connect_with_notices(&name);
    c.batch_execute(
        "CREATE TABLE s (expires timestamptz, seen timestamptz, active boolean);
         CREATE INDEX ON s (expires);",
    )
    .unwrap();
    let text: String = scalar(
        &mut c,
        "SELECT session_gc.register('s', expires_column => 'expires')",
    );
    assert!(text.contains("expires < now()"), "{text}");
    assert!(
        notices
            .lock()
            .unwrap()
            .iter()
            .all(|n| n.severity != "WARNING"),
        "an index serves expires"
    );
    c.batch_execute("SELECT session_gc.register('s', idle_column => 'seen', idle_timeout => '1 hour', enabled => false)")
        .unwrap();
    let warning = notices
        .lock()
        .unwrap()
        .iter()
        .find(|n| n.severity == "WARNING")
        .cloned()
        .expect("a warning");
    assert!(warning.message.contains("seen"));
    assert!(warning.hint.unwrap().contains("CREATE INDEX CONCURRENTLY"));
    let row = c
        .query_one(
            "SELECT expires_column IS NULL, idle_column::text, enabled FROM session_gc.policies",
            &[],
        )
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "a second register() replaces the rules"
    );
    assert_eq!(row.get::<_, String>(1), "seen");
    assert!(!row.get::<_, bool>(2));
    // Disabled policies are skipped by cleanup() of all tables.
    assert_eq!(count(&mut c, "session_gc.cleanup()"), 0);
    assert!(scalar::<bool>(&mut c, "SELECT session_gc.unregister('s')"));
    assert_eq!(count(&mut c, "session_gc.policies"), 0);
    c.batch_execute(
        "SELECT session_gc.register('s', expires_column => 'expires');
         DROP TABLE s;",
    )
    .unwrap();
    assert_eq!(
        count(&mut c, "session_gc.policies"),
        0,
        "a dropped table keeps no policy"
    );
}

#[test]
fn few_expired_rows_among_many_are_walked_along_the_index() {
    let mut c = db("t_index_walk");
    c.batch_execute(SESSIONS).unwrap();
    c.batch_execute(
        "INSERT INTO sessions (expires) SELECT now() + interval '1 hour' FROM generate_series(1, 20000);
         INSERT INTO sessions (expires) SELECT now() - (g % 7) * interval '1 minute' - interval '1 second'
           FROM generate_series(1, 300) g;
         SELECT session_gc.register('sessions', expires_column => 'expires', batch_size => 100);",
    )
    .unwrap();
    c.batch_execute("VACUUM ANALYZE sessions").unwrap();
    // The planner reads few expired rows through the index: so does the purge, 100 at a time,
    // with many rows sharing a key across batch boundaries.
    let (deleted, expired, _, _, _, batches, _) = cleanup(&mut c, "");
    assert_eq!((deleted, expired), (300, 300));
    assert!(batches >= 3, "{batches} batches");
    assert_eq!(count(&mut c, "sessions"), 20000);
}

/// Waits until a backend waits for the advisory lock `key` (taken by `gate()` below).
fn wait_for_gate(c: &mut Client, key: i64) {
    wait_until(
        &format!("the purge to wait at gate {key}"),
        Duration::from_secs(20),
        || {
            let waiting: i64 = scalar(
                c,
                &format!(
                    "SELECT count(*) FROM pg_locks
                      WHERE locktype = 'advisory' AND NOT granted AND objid = {key}"
                ),
            );
            waiting > 0
        },
    );
}

#[test]
fn a_batch_meeting_a_row_moved_to_another_partition_is_redone_and_keeps_it() {
    // An application extending a session of a table partitioned by expiry moves its row to
    // another partition. A purge statement whose snapshot still shows the old row cannot lock
    // it, even skipping locked rows (SQLSTATE 40001): the batch must be redone with a new
    // snapshot, and the moved (now live) session kept.
    //
    // To move the row at a chosen moment, a row-level security policy calls gate() on every
    // row the purge reads: at row 1 it waits for the next advisory lock of a sequence. The
    // test holds the first two, so the first statement gives up after its short lock wait,
    // and the lock-skipping statement stops at row 1 until the row 50 has moved.
    let cluster = shared_cluster();
    let name = cluster.fresh_db("t_moved_rows");
    let mut c = cluster.connect(&name);
    c.batch_execute(
        "CREATE SEQUENCE gate_seq START 1001;
         CREATE FUNCTION public.gate(id bigint) RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN
             IF id = 1 AND pg_catalog.current_setting('gate.active', true) = 'on' THEN
                 PERFORM pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.nextval('public.gate_seq'));
             END IF;
             RETURN true;
         END $$;
         CREATE TABLE psessions (id bigint NOT NULL, expires timestamptz NOT NULL)
             PARTITION BY RANGE (expires);
         CREATE TABLE psessions_past PARTITION OF psessions
             FOR VALUES FROM (MINVALUE) TO ('2001-01-01');
         CREATE TABLE psessions_rest PARTITION OF psessions DEFAULT;
         CREATE INDEX ON psessions (expires);
         INSERT INTO psessions
         SELECT g, timestamptz '2000-01-01' + g * interval '1 minute' FROM generate_series(1, 100) g;
         ANALYZE psessions;
         ALTER TABLE psessions ENABLE ROW LEVEL SECURITY;
         ALTER TABLE psessions FORCE ROW LEVEL SECURITY;
         CREATE POLICY gated ON psessions USING (public.gate(id));
         -- The purge runs as the table's owner; a superuser would bypass the policy.
         DO $$ BEGIN CREATE ROLE moved_rows_owner; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         GRANT USAGE, UPDATE ON SEQUENCE gate_seq TO moved_rows_owner;
         ALTER TABLE psessions OWNER TO moved_rows_owner;
         ALTER TABLE psessions_past OWNER TO moved_rows_owner;
         ALTER TABLE psessions_rest OWNER TO moved_rows_owner;
         SELECT session_gc.register('psessions', expires_column => 'expires');",
    )
    .unwrap();
    let mut holder = cluster.connect(&name);
    holder
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(1001), pg_advisory_xact_lock(1002);")
        .unwrap();
    let purger_config = cluster.config(&name);
    let purge = std::thread::spawn(move || {
        let mut purger = purger_config.connect(postgres::NoTls).unwrap();
        purger
            .batch_execute(
                "SET gate.active = on; SET session_gc.lock_timeout = '60s';
                 CALL session_gc.purge();",
            )
            .map_err(|e| e.to_string())
    });
    wait_for_gate(&mut c, 1002);
    c.batch_execute("UPDATE psessions SET expires = now() + interval '1 day' WHERE id = 50")
        .unwrap();
    holder.batch_execute("COMMIT").unwrap();
    purge.join().unwrap().unwrap();

    let gates: i64 = scalar(&mut c, "SELECT last_value FROM gate_seq");
    assert!(gates > 1002, "the lock-skipping statement was not redone");
    let left: Vec<i64> = column(&mut c, "SELECT id FROM psessions ORDER BY id");
    assert_eq!(
        left,
        vec![50],
        "the moved session is live; every other row expired"
    );
    let row = c
        .query_one("SELECT status, deleted FROM session_gc.history", &[])
        .unwrap();
    let (status, deleted): (String, i64) = (row.get(0), row.get(1));
    assert_eq!((status.as_str(), deleted), ("ok", 99));
}
