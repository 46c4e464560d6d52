//! Trust, tried as a hostile tenant and a careless DBA would: objects planted to shadow what
//! session_gc's SQL uses never run, whoever calls it; nothing is executable by PUBLIC; no role
//! learns other tables' names or volumes; a policy changed, disabled or removed mid-run is
//! obeyed from the next batch on; batches keep their size; odd tables and faults are refused or
//! survived; cleanup() commits its batches and stops when cancelled.

use postgres::Client;
use session_gc_integration::{
    cleanup_row, count, expect_error, scalar, shared_cluster, wait_until, Cluster,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PRELOAD: &str = "shared_preload_libraries = 'session_gc'";
const DEADLINE: Duration = Duration::from_secs(60);

fn db(name: &str) -> Client {
    let cluster = shared_cluster();
    let name = cluster.fresh_db(name);
    cluster.connect(&name)
}

/// Operators session_gc's statements could resolve to a planted one when `pg_catalog` has no
/// exact match for the argument types (and exact duplicates, which must lose all the same).
const PLANTED_OPERATOR_TYPES: &[(&str, &str)] = &[
    ("oid", "integer"),
    ("integer", "oid"),
    ("oid", "bigint"),
    ("regclass", "oid"),
    ("oid", "regclass"),
    ("regclass", "text"),
    ("name", "text"),
    ("text", "name"),
    ("name", "name"),
    ("\"char\"", "text"),
    ("text", "\"char\""),
    ("double precision", "numeric"),
    ("numeric", "double precision"),
    ("double precision", "bigint"),
    ("bigint", "integer"),
    ("integer", "bigint"),
    ("bigint", "numeric"),
    ("timestamptz", "timestamp"),
    ("timestamp", "timestamptz"),
    ("timestamptz", "date"),
    ("date", "timestamptz"),
    ("timestamptz", "text"),
    ("interval", "text"),
    ("tid", "text"),
    ("tid", "tid"),
    ("boolean", "integer"),
    ("text", "text"),
    ("oid", "oid"),
];

const PLANTED_OPERATORS: &[&str] = &[
    "=", "<>", "<", "<=", ">", ">=", "+", "-", "*", "/", "~", "||",
];

/// Functions (and aggregates) with the names session_gc calls, for argument types that
/// `pg_catalog` matches only through a conversion, or exactly.
const PLANTED_FUNCTIONS: &[(&str, &str, &str)] = &[
    ("now", "", "timestamptz"),
    ("clock_timestamp", "", "timestamptz"),
    ("current_database", "", "name"),
    ("pg_backend_pid", "", "integer"),
    ("lower", "name", "text"),
    ("quote_ident", "name", "text"),
    ("current_setting", "name", "text"),
    ("current_setting", "name, boolean", "text"),
    ("format_type", "oid, bigint", "text"),
    ("pg_get_expr", "text, oid", "text"),
    ("pg_partition_tree", "oid", "SETOF oid"),
    ("pg_relation_size", "oid", "bigint"),
    ("pg_total_relation_size", "oid", "bigint"),
    ("pg_stat_get_dead_tuples", "regclass", "bigint"),
    ("to_timestamp", "bigint", "timestamptz"),
    ("to_timestamp", "numeric", "timestamptz"),
    ("replace", "name, text, text", "text"),
    ("substr", "name, integer, integer", "text"),
    ("length", "name", "integer"),
    ("make_interval", "secs double precision", "interval"),
    ("power", "integer, bigint", "double precision"),
    ("pg_notify", "name, text", "void"),
    ("pg_has_role", "oid, name, text", "boolean"),
    ("json_build_object", "text, name, text, bigint", "json"),
    ("concat_ws", "text, bigint, bigint, bigint, bigint", "text"),
    ("pg_is_in_recovery", "", "boolean"),
    ("quote_literal", "name", "text"),
];

/// Plants, in `schema`, a trap operator for every operator and type pair above and a trap
/// function for every function above. A trap records who ran it in `public.hits` and raises a
/// WARNING saying so.
fn plant(c: &mut Client, schema: &str) {
    let mut sql = String::new();
    let mut n = 0;
    for (left, right) in PLANTED_OPERATOR_TYPES {
        for op in PLANTED_OPERATORS {
            n += 1;
            let returns = match *op {
                "=" | "<>" | "<" | "<=" | ">" | ">=" | "~" => "boolean".to_string(),
                "||" => "text".to_string(),
                _ => left.to_string(),
            };
            let value = if returns == "boolean" {
                "false"
            } else {
                "NULL"
            };
            sql.push_str(&format!(
                "DO $plant$ BEGIN
                   CREATE FUNCTION {schema}.trap_op_{n}(l {left}, r {right}) RETURNS {returns}
                     LANGUAGE plpgsql AS $f$ BEGIN PERFORM public.trap('operator {op}({left}, {right}) in {schema}'); RETURN {value}; END $f$;
                   CREATE OPERATOR {schema}.{op} (LEFTARG = {left}, RIGHTARG = {right}, FUNCTION = {schema}.trap_op_{n});
                 EXCEPTION WHEN others THEN NULL;
                 END $plant$;\n"
            ));
        }
    }
    for (name, args, returns) in PLANTED_FUNCTIONS {
        let body = if returns.starts_with("SETOF") || *returns == "void" {
            "RETURN;"
        } else {
            "RETURN NULL;"
        };
        sql.push_str(&format!(
            "DO $plant$ BEGIN
               CREATE FUNCTION {schema}.{name}({args}) RETURNS {returns}
                 LANGUAGE plpgsql AS $f$ BEGIN PERFORM public.trap('function {name}({args}) in {schema}'); {body} END $f$;
             EXCEPTION WHEN others THEN NULL;
             END $plant$;\n"
        ));
    }
    for (aggregate, ty) in [("min", "name"), ("max", "name"), ("max", "\"char\"")] {
        sql.push_str(&format!(
            "DO $plant$ BEGIN
               CREATE FUNCTION {schema}.trap_agg_{aggregate}(s text, v {ty}) RETURNS text
                 LANGUAGE plpgsql AS $f$ BEGIN PERFORM public.trap('aggregate {aggregate}({ty}) in {schema}'); RETURN s; END $f$;
               CREATE AGGREGATE {schema}.{aggregate}({ty}) (SFUNC = {schema}.trap_agg_{aggregate}, STYPE = text);
             EXCEPTION WHEN others THEN NULL;
             END $plant$;\n"
        ));
    }
    c.batch_execute(&sql).unwrap();
}

fn hits(c: &mut Client) -> Vec<String> {
    c.query("SELECT who || ': ' || what FROM public.hits", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A tenant owning its database (and so `public`) plants shadowing objects in `public` and in
/// the schemas named like the superuser and the monitoring role (their `"$user"` schemas).
/// Every entry point run by the superuser, by a `pg_monitor` member, by `cleanup()`'s worker
/// and by the background worker must leave the traps untouched.
#[test]
fn planted_operators_functions_and_aggregates_never_run() {
    let cluster = Cluster::start(
        "t_planted",
        &[
            PRELOAD,
            "session_gc.interval = '1h'",
            "session_gc.notify = on",
        ],
    );
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "DROP ROLE IF EXISTS tenant; CREATE ROLE tenant LOGIN;
             DROP ROLE IF EXISTS watcher; CREATE ROLE watcher LOGIN IN ROLE pg_monitor;",
        )
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE t_planted OWNER tenant")
        .unwrap();
    let mut c = cluster.connect("t_planted");
    c.batch_execute(
        "CREATE EXTENSION session_gc;
         CREATE TABLE public.hits (who text, what text);
         GRANT ALL ON public.hits TO PUBLIC;
         CREATE FUNCTION public.trap(what text) RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO public.hits VALUES (current_user, what);
             RAISE WARNING 'planted % ran as %', what, current_user;
         END $$;
         ALTER FUNCTION public.trap(text) OWNER TO tenant;
         GRANT USAGE ON SCHEMA session_gc TO watcher;
         -- Session tables of every kind session_gc reads: owned by the tenant.
         SET ROLE tenant;
         CREATE TABLE s_tz (id bigserial PRIMARY KEY, expires timestamptz, seen timestamptz,
                            made date, active boolean, user_id int);
         CREATE INDEX ON s_tz (expires); CREATE INDEX ON s_tz (seen); CREATE INDEX ON s_tz (made);
         INSERT INTO s_tz (expires, seen, made, active, user_id)
              SELECT now() - interval '1 hour', now(), current_date, true, g % 5
                FROM generate_series(1, 300) g;
         INSERT INTO s_tz (expires, seen, made, active, user_id)
              SELECT now() + interval '1 hour', now() - interval '3 days', current_date - 30, g % 2 = 0, g % 5
                FROM generate_series(1, 300) g;
         CREATE TABLE s_naive (id bigserial PRIMARY KEY, expires timestamp);
         CREATE INDEX ON s_naive (expires);
         INSERT INTO s_naive (expires) SELECT (now() AT TIME ZONE '-05:00'::interval) - interval '1 hour' FROM generate_series(1, 200);
         CREATE TABLE s_epoch (id bigserial PRIMARY KEY, expires_ms bigint, expires_s integer);
         CREATE INDEX ON s_epoch (expires_ms);
         INSERT INTO s_epoch (expires_ms, expires_s)
              SELECT (extract(epoch FROM now()) * 1000)::bigint - 60000, extract(epoch FROM now())::int + 3600
                FROM generate_series(1, 200);
         CREATE TABLE s_parts (id bigserial, expires timestamptz NOT NULL) PARTITION BY RANGE (expires);
         CREATE TABLE s_parts_old PARTITION OF s_parts FOR VALUES FROM ('2000-01-01') TO ('2001-01-01');
         CREATE TABLE s_parts_new PARTITION OF s_parts FOR VALUES FROM ('2001-01-01') TO (MAXVALUE);
         CREATE INDEX ON s_parts (expires);
         INSERT INTO s_parts (expires) SELECT '2000-06-01'::timestamptz FROM generate_series(1, 100);
         INSERT INTO s_parts (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 100);
         RESET ROLE;",
    )
    .unwrap();
    // The traps: in public (the tenant owns it: it owns the database) and in "$user" schemas.
    c.batch_execute(
        "CREATE SCHEMA postgres AUTHORIZATION tenant; CREATE SCHEMA watcher AUTHORIZATION tenant;",
    )
    .unwrap();
    c.batch_execute("SET ROLE tenant").unwrap();
    for schema in ["public", "postgres", "watcher"] {
        plant(&mut c, schema);
    }
    c.batch_execute("RESET ROLE").unwrap();
    let planted: i64 = scalar(
        &mut c,
        "SELECT count(*) FROM pg_operator WHERE oprnamespace::regnamespace::text IN ('public', 'postgres', 'watcher')",
    );
    assert!(planted > 500, "the traps are in place: {planted} operators");
    // A trap does fire when something resolves to it: the test can fail.
    c.batch_execute("SELECT 1::oid = 1::integer").unwrap();
    assert_eq!(hits(&mut c).len(), 1, "a planted operator is reachable");
    c.batch_execute("DELETE FROM public.hits").unwrap();
    let log_from = cluster.log().len();

    // Every entry point, as the superuser (whose "$user" schema is planted too).
    c.batch_execute(
        "SELECT session_gc.register('s_tz', expires_column => 'expires', idle_column => 'seen',
                                    idle_timeout => '1 day', created_column => 'made',
                                    max_age => '10 days', active_column => 'active',
                                    user_column => 'user_id', max_per_user => 50,
                                    grace => '1 second', batch_size => 40, time_zone => 'UTC');
         SELECT session_gc.register('s_naive', expires_column => 'expires', time_zone => 'EST');
         SELECT session_gc.register('s_epoch', expires_column => 'expires_ms', epoch_unit => 'ms');
         SELECT session_gc.register('s_parts', expires_column => 'expires', strategy => 'drop_partitions');
         SELECT * FROM session_gc.stats();
         SELECT * FROM session_gc.stats(exact => true);
         SELECT * FROM session_gc.stats('s_tz', false);
         SELECT * FROM session_gc.cleanup(dry_run => true);
         SELECT * FROM session_gc.metrics();
         SELECT * FROM session_gc.worker_status();
         SELECT * FROM session_gc.cleanup('s_tz', max_runtime => '1 minute');
         SELECT * FROM session_gc.cleanup('s_naive', in_transaction => true, max_runtime => '1 minute');",
    )
    .unwrap();
    c.batch_execute("CALL session_gc.purge(max_runtime => '1 minute')")
        .unwrap();
    c.batch_execute(
        "SELECT * FROM session_gc.run((SELECT max(id) FROM session_gc.history));
         SELECT session_gc.unregister('s_epoch');",
    )
    .unwrap();
    assert_eq!(count(&mut c, "s_parts_new"), 0, "the purge ran");
    assert_eq!(count(&mut c, "s_naive"), 0, "the purge ran");
    assert_eq!(hits(&mut c), Vec::<String>::new(), "as the superuser");

    // As a monitoring role with a "$user" schema of its own.
    let mut watcher = cluster
        .config("t_planted")
        .user("watcher")
        .connect(postgres::NoTls)
        .unwrap();
    watcher
        .batch_execute(
            "SELECT * FROM session_gc.metrics(); SELECT * FROM session_gc.worker_status();",
        )
        .unwrap();
    assert_eq!(hits(&mut c), Vec::<String>::new(), "as a pg_monitor member");

    // Through the background worker (it connects as the bootstrap superuser, "postgres").
    c.batch_execute(
        "SET ROLE tenant;
         INSERT INTO s_tz (expires, seen, made, active, user_id)
              SELECT now() - interval '1 hour', now(), current_date, true, 1 FROM generate_series(1, 100);
         INSERT INTO s_naive (expires) SELECT (now() AT TIME ZONE '-05:00'::interval) - interval '1 hour' FROM generate_series(1, 100);
         RESET ROLE;",
    )
    .unwrap();
    let before = count(&mut c, "s_tz");
    reload(&mut admin, "session_gc.interval", "1s");
    wait_until("the worker purges", DEADLINE, || {
        count(&mut c, "s_tz") <= before - 100 && count(&mut c, "s_naive") == 0
    });
    wait_until("the worker's pass ends", DEADLINE, || {
        count(&mut c, "session_gc.history WHERE status = 'running'") == 0
    });
    assert_eq!(hits(&mut c), Vec::<String>::new(), "through the worker");
    let log = cluster.log();
    assert!(
        !log[log_from..].contains("planted"),
        "a trap warned in the log:\n{log}"
    );
}

fn reload(admin: &mut Client, name: &str, value: &str) {
    admin
        .batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
}

/// Every statement goes through `src/sql.rs`: no other source file may call SPI itself.
#[test]
fn only_the_sql_door_calls_spi() {
    let src = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../src"));
    let mut files = Vec::new();
    let mut folders = vec![src];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 10, "the sources were found: {files:?}");
    let mut offenders = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // The door itself, and the in-server unit tests (which run their own fixtures).
        if name == "sql.rs" || name == "tests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            if ["Spi::", "SPI_", "client.select", "client.update"]
                .iter()
                .any(|call| line.contains(call))
            {
                offenders.push(format!("{name}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "SPI outside the door:\n{offenders:#?}"
    );
}

#[test]
fn nothing_is_executable_by_public_procedures_included() {
    let mut c = db("t_public");
    let open: Vec<String> = c
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
              WHERE p.pronamespace = 'session_gc'::regnamespace
                AND has_function_privilege('public', p.oid, 'EXECUTE')
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // But for the purge of a Citus shard, which refuses a role without its owner's privileges.
    assert_eq!(open, PUBLIC_ROUTINES);
    c.batch_execute(
        "DROP ROLE IF EXISTS t_nobody; CREATE ROLE t_nobody;
         CREATE TABLE t_public_sessions (id bigserial PRIMARY KEY, expires timestamptz);
         INSERT INTO t_public_sessions (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 10);
         SET ROLE t_nobody",
    )
    .unwrap();
    let error = expect_error(&mut c, "CALL session_gc.purge()");
    assert_eq!(error.code, "42501");
    let error = expect_error(
        &mut c,
        r#"CALL session_gc.purge_shard('t_public_sessions', 1, '{"now": 0, "policies": [{"expires_column": "expires"}]}', NULL, 10, 10, NULL)"#,
    );
    assert_eq!(error.code, "42501", "{error:?}");
    c.batch_execute("RESET ROLE").unwrap();
    assert_eq!(count(&mut c, "t_public_sessions"), 10);
}

/// The routines every role may execute: the purge of a Citus shard, which refuses a role
/// without the privileges of the shard's owner.
const PUBLIC_ROUTINES: [&str; 2] = [
    "session_gc.purge_shard(regclass,bigint,text,text,integer,integer,text)",
    "session_gc.purge_shard_step(regclass,bigint,text,text,text,integer,integer)",
];

/// An application granted worker_status() sees that the worker runs, not which table it purges
/// nor the volumes of a pass over every tenant's tables.
#[test]
fn worker_status_shows_other_tables_only_to_roles_that_read_all_statistics() {
    let cluster = Cluster::start(
        "t_status",
        &[
            PRELOAD,
            "session_gc.interval = '1s'",
            "session_gc.batch_size = 20",
            "session_gc.batch_delay = '20ms'",
        ],
    );
    let db = cluster.fresh_db("t_status");
    let mut c = cluster.connect(&db);
    c.batch_execute(
        "DROP ROLE IF EXISTS t_app; CREATE ROLE t_app;
         GRANT USAGE ON SCHEMA session_gc TO t_app;
         GRANT EXECUTE ON FUNCTION session_gc.worker_status() TO t_app;
         CREATE TABLE big_secret_sessions (id bigserial PRIMARY KEY, expires timestamptz);
         CREATE INDEX ON big_secret_sessions (expires);
         INSERT INTO big_secret_sessions (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 4000);
         SELECT session_gc.register('big_secret_sessions', expires_column => 'expires');",
    )
    .unwrap();
    let activity = |c: &mut Client, role: Option<&str>| -> (Option<String>, Option<i64>) {
        if let Some(role) = role {
            c.batch_execute(&format!("SET ROLE {role}")).unwrap();
        }
        let row = c
            .query_one(
                "SELECT worker_activity, last_pass_deleted FROM session_gc.worker_status()",
                &[],
            )
            .unwrap();
        c.batch_execute("RESET ROLE").unwrap();
        (row.get(0), row.get(1))
    };
    wait_until("the worker is purging", DEADLINE, || {
        activity(&mut c, None)
            .0
            .is_some_and(|a| a.contains("big_secret_sessions"))
    });
    let (seen_by_app, _) = activity(&mut c, Some("t_app"));
    assert_eq!(seen_by_app.as_deref(), Some("session_gc: purging"));
    wait_until("a pass has finished", DEADLINE, || {
        activity(&mut c, None).1.is_some()
    });
    assert_eq!(activity(&mut c, Some("t_app")).1, None);
}

fn idle_table(c: &mut Client, table: &str, rows: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, seen timestamptz NOT NULL);
         CREATE INDEX ON {table} (seen);
         INSERT INTO {table} (seen) SELECT now() - interval '2 minutes' - g * interval '1 microsecond'
           FROM generate_series(1, {rows}) g;
         SELECT session_gc.register('{table}', idle_column => 'seen', idle_timeout => '1 minute');"
    ))
    .unwrap();
}

const CLEANUP: &str = "SELECT status FROM session_gc.cleanup(batch_size => 50)";
const PURGE: &str = "CALL session_gc.purge(batch_size => 50)";

/// A mistaken 1-minute idle timeout is corrected to a day while cleanup() is purging: once
/// register() returns, no further row is deleted. Disabling and unregistering likewise, and
/// DROP EXTENSION.
#[test]
fn a_policy_changed_mid_run_is_obeyed_from_the_next_batch() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("t_midrun");
    for (change, expected_status, call) in [
        (
            "SELECT session_gc.register('s', idle_column => 'seen', idle_timeout => '1 day')",
            "ok",
            CLEANUP,
        ),
        (
            "SELECT session_gc.register('s', idle_column => 'seen', idle_timeout => '1 minute', enabled => false)",
            "cancelled",
            CLEANUP,
        ),
        ("SELECT session_gc.unregister('s')", "cancelled", CLEANUP),
        // purge() commits its batches and holds nothing of the extension between them.
        ("DROP EXTENSION session_gc", "gone", PURGE),
    ] {
        let mut c = cluster.connect(&name);
        c.batch_execute("DROP TABLE IF EXISTS s; CREATE EXTENSION IF NOT EXISTS session_gc")
            .unwrap();
        idle_table(&mut c, "s", 100_000);
        let config = cluster.config(&name);
        let purging = std::thread::spawn(move || {
            let mut p = config.connect(postgres::NoTls).unwrap();
            p.query(call, &[])
                .map(|rows| rows.first().map(|r| r.get::<_, String>(0)))
        });
        wait_until("the purge is under way", DEADLINE, || {
            count(&mut c, "s") < 95_000
        });
        c.batch_execute(change).unwrap();
        let left_when_changed = count(&mut c, "s");
        let status = purging.join().unwrap();
        assert!(left_when_changed > 0, "{change}: the purge had not finished");
        assert_eq!(
            count(&mut c, "s"),
            left_when_changed,
            "{change}: rows deleted after the change returned"
        );
        match (expected_status, status) {
            ("gone", _) => {}
            (expected, Ok(Some(status))) => assert_eq!(status, expected, "{change}"),
            (expected, other) => panic!("{change}: expected {expected}, got {other:?}"),
        }
    }
}

/// 'EST' is -5 in the Default abbreviations and +10 in the Australia set: registered from one,
/// purged from the other, the policy reads the same.
#[test]
fn a_zone_abbreviation_reads_the_same_for_every_caller() {
    let mut c = db("t_abbrev");
    c.batch_execute(
        "CREATE TABLE s (id bigserial PRIMARY KEY, expires timestamp NOT NULL);
         CREATE INDEX ON s (expires);
         -- Wall-clock times at UTC-5: 100 expired an hour ago, 50 expire in two hours.
         INSERT INTO s (expires) SELECT (now() AT TIME ZONE '-05:00'::interval) - interval '1 hour' FROM generate_series(1, 100);
         INSERT INTO s (expires) SELECT (now() AT TIME ZONE '-05:00'::interval) + interval '2 hours' FROM generate_series(1, 50);
         SET timezone_abbreviations = 'Default';",
    )
    .unwrap();
    let answer: String = scalar(
        &mut c,
        "SELECT session_gc.register('s', expires_column => 'expires', time_zone => 'EST')",
    );
    let stored: String = scalar(&mut c, "SELECT time_zone FROM session_gc.policies");
    assert_eq!(stored, "<-05>+5:00:00", "{answer}");
    c.batch_execute("SET timezone_abbreviations = 'Australia'")
        .unwrap();
    let dry = cleanup_row(&mut c, "dry_run => true");
    assert_eq!(dry.deleted, 100);
    assert_eq!(cleanup_row(&mut c, "").deleted, 100);
    assert_eq!(count(&mut c, "s"), 50, "no live session deleted");
    // Registered from this session, which reads the Australia file, 'EST' is ten hours east.
    let _: String = scalar(
        &mut c,
        "SELECT session_gc.register('s', expires_column => 'expires', time_zone => 'EST')",
    );
    let stored: String = scalar(&mut c, "SELECT time_zone FROM session_gc.policies");
    assert!(stored.starts_with("<+10>"), "{stored}");
    // A zone set as an offset (what SET TIME ZONE INTERVAL leaves) is a POSIX zone, kept as
    // PostgreSQL spells it.
    c.batch_execute("SET TIME ZONE INTERVAL '+05:30' HOUR TO MINUTE")
        .unwrap();
    let posix: String = scalar(&mut c, "SELECT current_setting('TimeZone')");
    c.execute(
        "SELECT session_gc.register('s', expires_column => 'expires', time_zone => $1)",
        &[&posix],
    )
    .unwrap();
    let stored: String = scalar(&mut c, "SELECT time_zone FROM session_gc.policies");
    assert!(stored.starts_with('<'), "{stored}");
}

/// A naive timestamp or date column is read in the zone the application wrote it in, which the
/// registering session's TimeZone does not tell: register() wants it said, and says it back.
#[test]
fn a_naive_column_needs_an_explicit_time_zone() {
    let mut c = db("t_naive_zone");
    c.batch_execute(
        "CREATE TABLE s (id bigserial PRIMARY KEY, expires timestamp(6) NOT NULL, day date,
                         seen timestamptz);
         CREATE INDEX ON s (expires); CREATE INDEX ON s (day); CREATE INDEX ON s (seen);
         SET TimeZone = 'Asia/Tokyo';",
    )
    .unwrap();
    for (call, column) in [
        (
            "SELECT session_gc.register('s', expires_column => 'expires')",
            "column \"expires\" (timestamp without time zone)",
        ),
        (
            "SELECT session_gc.register('s', created_column => 'day', max_age => '1 day')",
            "column \"day\" (date)",
        ),
    ] {
        let error = expect_error(&mut c, call);
        assert_eq!(error.code, "22023", "{call}: {error:?}");
        assert!(error.message.contains(column), "{error:?}");
        assert!(
            error.detail.as_deref().unwrap_or("").contains("Asia/Tokyo"),
            "{error:?}"
        );
        let hint = error.hint.unwrap_or_default();
        assert!(hint.contains("time_zone => 'UTC'"), "{hint}");
    }
    assert_eq!(
        count(&mut c, "session_gc.policies"),
        0,
        "nothing registered"
    );
    // Said explicitly, the zone is stored and register()'s answer states it.
    let answer: String = scalar(
        &mut c,
        "SELECT session_gc.register('s', expires_column => 'expires', time_zone => 'UTC')",
    );
    // How the column is read is its own sentence, not another rule after an "or".
    assert!(
        answer.ends_with(
            "expires < now(). expires holds wall-clock time without a zone, read in 'UTC'"
        ),
        "{answer}"
    );
    assert!(!answer.contains(", or"), "{answer}");
    let stored: String = scalar(&mut c, "SELECT time_zone FROM session_gc.policies");
    assert_eq!(stored, "UTC");
    // A timestamptz column needs none: its values carry their moment. None is stored, whatever
    // the registering session's zone.
    let answer: String = scalar(
        &mut c,
        "SELECT session_gc.register('s', idle_column => 'seen', idle_timeout => '1 hour')",
    );
    assert!(!answer.contains("wall-clock"), "{answer}");
    let stored: Option<String> = scalar(&mut c, "SELECT time_zone FROM session_gc.policies");
    assert_eq!(stored, None, "no zone stored where none applies");
    // Given for no naive column, as epoch_unit for no integer one, time_zone is refused.
    c.batch_execute("ALTER TABLE s ADD COLUMN ms bigint")
        .unwrap();
    for call in [
        "SELECT session_gc.register('s', idle_column => 'seen', idle_timeout => '1 hour', time_zone => 'UTC')",
        "SELECT session_gc.register('s', expires_column => 'ms', epoch_unit => 'ms', time_zone => 'UTC')",
    ] {
        let error = expect_error(&mut c, call);
        assert_eq!(error.code, "22023", "{call}: {error:?}");
        assert!(
            error.message.contains("time_zone given but no rule column is a timestamp or date"),
            "{error:?}"
        );
        assert!(error.detail.is_some() && error.hint.is_some(), "{error:?}");
    }
    let stored: Option<String> = scalar(&mut c, "SELECT time_zone FROM session_gc.policies");
    assert_eq!(stored, None, "the refused calls changed nothing");
    // Retyped to a naive timestamp since (an ORM migration), the column is read in no zone
    // nobody chose: the purge refuses, saying what to do, and deletes nothing.
    c.batch_execute(
        "INSERT INTO s (expires, seen) SELECT now() + interval '1 hour', now() - interval '30 minutes'
           FROM generate_series(1, 20);
         SET TimeZone = 'UTC';
         ALTER TABLE s ALTER COLUMN seen TYPE timestamp USING seen AT TIME ZONE 'America/New_York';
         SET TimeZone = 'Asia/Tokyo';",
    )
    .unwrap();
    let outcome = c.query("SELECT status, error FROM session_gc.cleanup('s')", &[]);
    let said = match outcome {
        Err(error) => error
            .as_db_error()
            .map_or_else(|| error.to_string(), |e| e.message().to_string()),
        Ok(rows) => rows
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r.get::<_, String>(0),
                    r.get::<_, Option<String>>(1).unwrap_or_default()
                )
            })
            .collect(),
    };
    assert!(
        said.contains("has no time_zone for its naive column"),
        "{said}"
    );
    assert_eq!(count(&mut c, "s"), 20, "nothing deleted");
}

#[test]
fn hostile_registrations_are_refused_with_sqlstate_detail_and_hint() {
    let mut c = db("t_refused");
    c.batch_execute(
        "CREATE TABLE s (id bigserial PRIMARY KEY, ms integer, at timestamptz);
         CREATE TABLE child (sid bigint REFERENCES s DEFERRABLE INITIALLY DEFERRED);
         CREATE TABLE p (id bigserial, at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE p_local PARTITION OF p FOR VALUES FROM ('2000-01-01') TO ('2100-01-01');
         CREATE FOREIGN DATA WRAPPER t_dummy;
         CREATE SERVER t_nowhere FOREIGN DATA WRAPPER t_dummy;
         CREATE FOREIGN TABLE p_far PARTITION OF p FOR VALUES FROM ('1900-01-01') TO ('2000-01-01')
             SERVER t_nowhere;",
    )
    .unwrap();
    for (call, code, words) in [
        (
            "SELECT session_gc.register('s', expires_column => 'ms', epoch_unit => 'ms')",
            "22023",
            "too small for epoch milliseconds",
        ),
        (
            "SELECT session_gc.register('s', created_column => 'at', max_age => '10000 years')",
            "22023",
            "more than 100 years",
        ),
        (
            "SELECT session_gc.register('s', expires_column => 'at', grace => '101 years')",
            "22023",
            "more than 100 years",
        ),
        (
            "SELECT session_gc.register(NULL, expires_column => 'at')",
            "22004",
            "must not be NULL",
        ),
        (
            "SELECT session_gc.unregister(NULL)",
            "22004",
            "must not be NULL",
        ),
        (
            "SELECT session_gc.register('s', expires_column => 'at')",
            "0A000",
            "DEFERRABLE INITIALLY DEFERRED",
        ),
        (
            "SELECT session_gc.register('p', expires_column => 'at')",
            "0A000",
            "foreign table",
        ),
    ] {
        let error = expect_error(&mut c, call);
        assert_eq!(error.code, code, "{call}: {}", error.message);
        assert!(error.message.contains(words), "{call}: {}", error.message);
        assert!(
            error.detail.is_some() && error.hint.is_some(),
            "{call}: {error:?}"
        );
    }
    assert_eq!(count(&mut c, "session_gc.policies"), 0);
    // A deferrable constraint that checks at once is fine.
    c.batch_execute(
        "ALTER TABLE child ALTER CONSTRAINT child_sid_fkey INITIALLY IMMEDIATE;
         SELECT session_gc.register('s', expires_column => 'at');",
    )
    .unwrap();
}

/// The inactive rule walks no key: every batch takes the next rows, until none is left.
#[test]
fn the_inactive_rule_purges_every_batch_not_just_the_first() {
    let mut c = db("t_inactive");
    c.batch_execute(
        "CREATE TABLE s (id bigserial PRIMARY KEY, active boolean NOT NULL);
         CREATE INDEX ON s (active) WHERE active = false;
         INSERT INTO s (active) SELECT false FROM generate_series(1, 100);
         INSERT INTO s (active) SELECT true FROM generate_series(1, 7);
         SELECT session_gc.register('s', active_column => 'active');",
    )
    .unwrap();
    let row = cleanup_row(&mut c, "batch_size => 10");
    assert_eq!(
        (row.deleted, row.inactive, row.status.as_str()),
        (100, 100, "ok")
    );
    assert!(row.batches >= 10, "{row:?}");
    assert_eq!(count(&mut c, "s"), 7);
}

/// Rows sharing one key (a bulk insert's timestamp, a date) are split into batches of at most
/// batch_size, on the index walk and on the heap walk, analyzed or not.
#[test]
fn rows_sharing_a_key_are_purged_in_batches_of_the_batch_size() {
    let mut c = db("t_samekey");
    c.batch_execute(
        "CREATE TABLE few (id bigserial PRIMARY KEY, expires date NOT NULL, pad text);
         CREATE INDEX ON few (expires);
         INSERT INTO few (expires, pad) SELECT current_date - 3, 'x' FROM generate_series(1, 6000);
         INSERT INTO few (expires, pad) SELECT current_date + 3, 'x' FROM generate_series(1, 60000);
         ANALYZE few;
         SELECT session_gc.register('few', expires_column => 'expires', time_zone => 'UTC');
         CREATE TABLE most (id bigserial PRIMARY KEY, expires timestamptz NOT NULL);
         CREATE INDEX ON most (expires);
         INSERT INTO most (expires) SELECT now() - interval '1 day' FROM generate_series(1, 20000);
         SELECT session_gc.register('most', expires_column => 'expires');",
    )
    .unwrap();
    // Index walk (6,000 of 66,000 rows expired, one key).
    let row = cleanup_row(&mut c, "'few', batch_size => 100, in_transaction => true");
    assert_eq!(row.deleted, 6000);
    assert!(row.batches >= 60, "one key, {} batches", row.batches);
    // Heap walk on a table never analyzed (every row expired, one key).
    let row = cleanup_row(&mut c, "'most', batch_size => 100, in_transaction => true");
    assert_eq!(row.deleted, 20000);
    assert!(
        row.batches >= 200,
        "batches of at most the batch size: {} batches",
        row.batches
    );
}

/// A policy whose table vanished without the event trigger (session_replication_role =
/// replica) does not break stats(), cleanup() or purge() of the others, and can be removed.
#[test]
fn a_policy_whose_table_vanished_is_skipped_and_can_be_unregistered() {
    let mut c = db("t_vanished");
    c.batch_execute(
        "CREATE TABLE gone (id bigserial PRIMARY KEY, expires timestamptz);
         CREATE TABLE kept (id bigserial PRIMARY KEY, expires timestamptz);
         INSERT INTO kept (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 5);
         SELECT session_gc.register('gone', expires_column => 'expires');
         SELECT session_gc.register('kept', expires_column => 'expires');",
    )
    .unwrap();
    let gone: i64 = scalar(&mut c, "SELECT 'gone'::regclass::oid::int8");
    c.batch_execute(
        "SET session_replication_role = replica; DROP TABLE gone; RESET session_replication_role;",
    )
    .unwrap();
    assert_eq!(count(&mut c, "session_gc.policies"), 2);
    assert_eq!(count(&mut c, "session_gc.stats()"), 1);
    assert_eq!(cleanup_row(&mut c, "").deleted, 5);
    c.batch_execute("CALL session_gc.purge()").unwrap();
    c.batch_execute(&format!("SELECT session_gc.unregister({gone})"))
        .unwrap();
    assert_eq!(count(&mut c, "session_gc.policies"), 1);
}

/// stats() over all tables reports the ones it can count when one cannot; metrics() obeys the
/// caller's statement_timeout instead of swallowing the cancel.
#[test]
fn stats_survives_a_broken_table_and_metrics_obeys_statement_timeout() {
    let mut c = db("t_faults");
    c.batch_execute(
        "CREATE TABLE ok (id bigserial PRIMARY KEY, expires timestamptz);
         CREATE TABLE broken (id bigserial PRIMARY KEY, expires timestamptz);
         SELECT session_gc.register('ok', expires_column => 'expires');
         SELECT session_gc.register('broken', expires_column => 'expires');
         ALTER TABLE broken DROP COLUMN expires;",
    )
    .unwrap();
    assert_eq!(count(&mut c, "session_gc.stats()"), 1);
    // A census that takes a second (a row-security gate sleeps) is cancelled by the caller's
    // 200 ms statement_timeout, and the cancel reaches the caller instead of being taken for
    // one table's failure.
    c.batch_execute(
        "INSERT INTO ok (expires) VALUES (now() - interval '1 hour');
         CREATE FUNCTION public.slow_gate() RETURNS boolean LANGUAGE sql VOLATILE
             AS 'SELECT pg_catalog.pg_sleep(1) IS NOT NULL';
         -- Owned by a plain role: superusers bypass row security even when it is forced.
         DROP ROLE IF EXISTS t_faults_owner; CREATE ROLE t_faults_owner;
         ALTER TABLE ok OWNER TO t_faults_owner;
         ALTER TABLE ok ENABLE ROW LEVEL SECURITY; ALTER TABLE ok FORCE ROW LEVEL SECURITY;
         CREATE POLICY slow ON ok USING (public.slow_gate());
         SET statement_timeout = '200ms';",
    )
    .unwrap();
    let started = Instant::now();
    let error = expect_error(&mut c, "SELECT * FROM session_gc.metrics()");
    assert_eq!(error.code, "57014", "{}", error.message);
    assert!(started.elapsed() < Duration::from_millis(900));
}

/// A caller's stricter lock_timeout stands.
#[test]
fn a_callers_stricter_lock_timeout_stands() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("t_locktimeout");
    let mut c = cluster.connect(&name);
    c.batch_execute(
        "CREATE TABLE s (id bigserial PRIMARY KEY, expires timestamptz);
         CREATE INDEX ON s (expires);
         INSERT INTO s (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 10);
         SELECT session_gc.register('s', expires_column => 'expires');",
    )
    .unwrap();
    let mut holder = cluster.connect(&name);
    let mut txn = holder.transaction().unwrap();
    txn.batch_execute("LOCK TABLE s IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    for mode in ["in_transaction => true", "in_transaction => false"] {
        c.batch_execute("SET lock_timeout = '50ms'").unwrap();
        let started = Instant::now();
        let row = cleanup_row(&mut c, mode);
        assert_eq!(row.status, "error", "{mode}");
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "{mode}: waited {:?} for the lock",
            started.elapsed()
        );
    }
    txn.rollback().unwrap();
}

/// cleanup() commits every batch (other sessions see the rows go while it runs) and, cancelled,
/// stops its worker.
#[test]
fn cleanup_commits_each_batch_and_stops_when_cancelled() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("t_committed");
    let mut c = cluster.connect(&name);
    idle_table(&mut c, "s", 300_000);
    let config = cluster.config(&name);
    let caller = std::thread::spawn(move || {
        let mut p = config.connect(postgres::NoTls).unwrap();
        // Inside a transaction block, as applications call it.
        let mut txn = p.transaction().unwrap();
        let outcome = txn.query("SELECT * FROM session_gc.cleanup(batch_size => 20)", &[]);
        outcome.map(|_| ()).map_err(|e| {
            e.as_db_error()
                .map(|d| d.code().code().to_string())
                .unwrap_or_default()
        })
    });
    wait_until(
        "batches are visible before cleanup() returns",
        DEADLINE,
        || count(&mut c, "s") < 299_000,
    );
    let purging: i64 = count(
        &mut c,
        "pg_stat_activity WHERE backend_type = 'session_gc cleanup' AND datname = current_database()",
    );
    assert_eq!(purging, 1, "a cleanup worker runs");
    c.batch_execute(
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
          WHERE query LIKE '%session_gc.cleanup(batch_size => 20)%' AND pid <> pg_backend_pid()",
    )
    .unwrap();
    assert_eq!(caller.join().unwrap(), Err("57014".to_string()));
    wait_until("the worker stops", Duration::from_secs(5), || {
        count(
            &mut c,
            "pg_stat_activity WHERE backend_type = 'session_gc cleanup' AND datname = current_database()",
        ) == 0
    });
    let left = count(&mut c, "s");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&mut c, "s"), left, "nothing deleted after the stop");
    assert!(left > 0);
}

/// stats(), metrics() and dry runs work on a hot standby; a purge is refused there clearly.
#[test]
fn monitoring_a_standby_works() {
    let primary = Cluster::start("t_primary", &[]);
    let name = primary.fresh_db("t_standby");
    let mut c = primary.connect(&name);
    c.batch_execute(
        "CREATE TABLE s (id bigserial PRIMARY KEY, expires timestamptz);
         CREATE INDEX ON s (expires);
         INSERT INTO s (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 30);
         SELECT session_gc.register('s', expires_column => 'expires');
         CHECKPOINT;",
    )
    .unwrap();
    let standby = Cluster::replica_of(&primary, "t_standby", &["hot_standby = on"]);
    let mut r = standby.connect(&name);
    wait_until("the standby has the table", DEADLINE, || {
        r.query_one("SELECT count(*) FROM s", &[])
            .map(|row| row.get::<_, i64>(0) == 30)
            .unwrap_or(false)
    });
    let expired: i64 = scalar(&mut r, "SELECT expired_rows FROM session_gc.stats()");
    assert_eq!(expired, 30);
    let backlog: Option<i64> = scalar(&mut r, "SELECT expired_backlog FROM session_gc.metrics()");
    assert_eq!(backlog, Some(30));
    assert_eq!(cleanup_row(&mut r, "dry_run => true").deleted, 30);
    let error = expect_error(&mut r, "SELECT * FROM session_gc.cleanup()");
    assert_eq!(error.code, "25006");
    let error = expect_error(&mut r, "CALL session_gc.purge()");
    assert_eq!(error.code, "25006");
    let running: bool = scalar(&mut r, "SELECT in_recovery FROM session_gc.worker_status()");
    assert!(running);
}

/// Code of a table's owner that a purge runs (a trigger) cannot call back into session_gc: in
/// a security-restricted operation every entry point refuses.
#[test]
fn a_trigger_cannot_call_session_gc_from_inside_a_purge() {
    let mut c = db("t_reentry");
    c.batch_execute(
        "DROP ROLE IF EXISTS t_reentry_owner; CREATE ROLE t_reentry_owner;
         GRANT USAGE ON SCHEMA session_gc TO t_reentry_owner;
         GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA session_gc TO t_reentry_owner;
         CREATE TABLE s (id bigserial PRIMARY KEY, expires timestamptz);
         INSERT INTO s (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 5);
         CREATE FUNCTION public.call_back() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM * FROM session_gc.stats(); RETURN OLD; END $$;
         CREATE TRIGGER call_back BEFORE DELETE ON s FOR EACH ROW EXECUTE FUNCTION public.call_back();
         ALTER TABLE s OWNER TO t_reentry_owner;
         SELECT session_gc.register('s', expires_column => 'expires');",
    )
    .unwrap();
    let error = expect_error(&mut c, "SELECT * FROM session_gc.cleanup('s')");
    assert_eq!(error.code, "42501", "{}", error.message);
    assert!(
        error.message.contains("security-restricted"),
        "{}",
        error.message
    );
    assert_eq!(count(&mut c, "s"), 5);
}

#[test]
fn an_interval_with_a_negative_part_is_refused() {
    let mut c = db("t_mixed_interval");
    c.batch_execute("CREATE TABLE s (id bigserial PRIMARY KEY, seen timestamptz)")
        .unwrap();
    for call in [
        "SELECT session_gc.register('s', idle_column => 'seen', idle_timeout => '1 month -29 days')",
        "SELECT session_gc.register('s', created_column => 'seen', max_age => '1 day -1 hour')",
        "SELECT session_gc.register('s', idle_column => 'seen', idle_timeout => '1 day', grace => '1 month -29 days')",
    ] {
        let error = expect_error(&mut c, call);
        assert_eq!(error.code, "22023", "{call}");
        assert!(error.message.contains("negative part"), "{}", error.message);
    }
    // A wholly negative interval keeps its own message.
    for (call, words) in [
        (
            "SELECT session_gc.register('s', idle_column => 'seen', idle_timeout => '-30 minutes')",
            "must be positive",
        ),
        (
            "SELECT session_gc.register('s', idle_column => 'seen', idle_timeout => '1 day', grace => '-5 minutes')",
            "must not be negative",
        ),
    ] {
        let error = expect_error(&mut c, call);
        assert_eq!(error.code, "22023", "{call}");
        assert!(error.message.contains(words), "{call}: {}", error.message);
    }
}

/// A table renamed away (and another put in its place) while a purge runs: the policy follows
/// the table (its OID), and the newcomer is not touched.
#[test]
fn a_table_swapped_mid_run_is_not_purged_in_its_place() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("t_swap");
    let mut c = cluster.connect(&name);
    idle_table(&mut c, "s", 100_000);
    c.batch_execute(
        "CREATE TABLE s_new (id bigserial PRIMARY KEY, seen timestamptz NOT NULL);
         INSERT INTO s_new (seen) SELECT now() - interval '2 minutes' FROM generate_series(1, 1000);",
    )
    .unwrap();
    let config = cluster.config(&name);
    let purging = std::thread::spawn(move || {
        let mut p = config.connect(postgres::NoTls).unwrap();
        p.batch_execute(PURGE).unwrap();
    });
    wait_until("the purge is under way", DEADLINE, || {
        count(&mut c, "s") < 95_000
    });
    c.batch_execute("ALTER TABLE s RENAME TO s_old; ALTER TABLE s_new RENAME TO s;")
        .unwrap();
    purging.join().unwrap();
    assert_eq!(count(&mut c, "s"), 1000, "the newcomer is untouched");
    assert_eq!(count(&mut c, "s_old"), 0, "the registered table is purged");
}

/// A caller holding a lock on the table (here from writing to it) purges in its own
/// transaction (a worker would wait for that lock): its own uncommitted expired session is
/// purged too.
#[test]
fn a_caller_holding_the_table_purges_in_its_own_transaction() {
    let mut c = db("t_written");
    c.batch_execute(
        "CREATE TABLE s (id bigserial PRIMARY KEY, expires timestamptz);
         INSERT INTO s (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 3);
         SELECT session_gc.register('s', expires_column => 'expires');",
    )
    .unwrap();
    c.batch_execute("BEGIN; INSERT INTO s (expires) VALUES (now() - interval '1 hour');")
        .unwrap();
    assert_eq!(cleanup_row(&mut c, "").deleted, 4);
    c.batch_execute("COMMIT").unwrap();
}

/// A caller (or a role or database default) with session_replication_role = replica does not
/// make the purge skip the foreign keys' ON DELETE actions.
#[test]
fn a_replica_replication_role_does_not_skip_cascades() {
    let mut c = db("t_replica_role");
    c.batch_execute(
        "CREATE TABLE s (id bigserial PRIMARY KEY, expires timestamptz);
         CREATE TABLE child (sid bigint REFERENCES s ON DELETE CASCADE);
         INSERT INTO s (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 3);
         INSERT INTO child SELECT id FROM s;
         SELECT session_gc.register('s', expires_column => 'expires');
         SET session_replication_role = replica;",
    )
    .unwrap();
    assert_eq!(cleanup_row(&mut c, "in_transaction => true").deleted, 3);
    c.batch_execute("RESET session_replication_role").unwrap();
    assert_eq!(count(&mut c, "child"), 0, "the cascade ran");
}

/// A transaction changing a policy and left open does not hold a purge (nor, through it, the
/// table) for longer than session_gc.lock_timeout.
#[test]
fn a_policy_locked_by_an_open_transaction_holds_a_purge_no_longer_than_the_lock_timeout() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("t_policy_locked");
    let mut c = cluster.connect(&name);
    idle_table(&mut c, "s", 1000);
    let mut changer = cluster.connect(&name);
    let mut txn = changer.transaction().unwrap();
    txn.batch_execute(
        "SELECT session_gc.register('s', idle_column => 'seen', idle_timeout => '2 minutes')",
    )
    .unwrap();
    c.batch_execute("SET session_gc.lock_timeout = '200ms'")
        .unwrap();
    let started = Instant::now();
    c.batch_execute("CALL session_gc.purge()").unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        started.elapsed()
    );
    let status: String = scalar(
        &mut c,
        "SELECT status FROM session_gc.history ORDER BY id DESC LIMIT 1",
    );
    assert_eq!(status, "error");
    txn.rollback().unwrap();
    assert_eq!(
        count(&mut c, "s"),
        1000,
        "nothing deleted under the policy being changed"
    );
}

/// A caller that has written elsewhere still purges in committed batches: other sessions see
/// the purge before the caller commits.
#[test]
fn a_caller_that_wrote_elsewhere_still_purges_in_committed_batches() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("t_wrote_elsewhere");
    let mut c = cluster.connect(&name);
    c.batch_execute(
        "CREATE TABLE audit (note text);
         CREATE TABLE s (id bigserial PRIMARY KEY, expires timestamptz);
         INSERT INTO s (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 30);
         SELECT session_gc.register('s', expires_column => 'expires');",
    )
    .unwrap();
    c.batch_execute("BEGIN; INSERT INTO audit VALUES ('cleanup');")
        .unwrap();
    assert_eq!(cleanup_row(&mut c, "").deleted, 30);
    let mut other = cluster.connect(&name);
    assert_eq!(count(&mut other, "s"), 0, "the purge committed on its own");
    c.batch_execute("ROLLBACK").unwrap();
    assert_eq!(count(&mut c, "s"), 0);
}
