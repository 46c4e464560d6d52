//! What 0.2.0 added, on a real cluster: per-user session caps, the `drop_partitions` strategy,
//! NOTIFY after runs, the metrics function with the postgres_exporter queries shipped in
//! `docs/`, and the packaging metadata.

use postgres::Client;
use session_gc_integration::{
    cleanup_row as cleanup, column, count, expect_error, scalar, shared_cluster, CleanupRow,
    Cluster,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn db(name: &str) -> Client {
    let cluster = shared_cluster();
    let db = cluster.fresh_db(name);
    cluster.connect(&db)
}

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// A session table whose `last_seen` may be NULL (never active), with the indexes caps use.
const CAPPED: &str = "
    CREATE TABLE sessions (
        id         bigserial PRIMARY KEY,
        user_id    int,
        last_seen  timestamptz,
        expires    timestamptz NOT NULL DEFAULT now() + interval '1 day'
    );
    CREATE INDEX ON sessions (user_id);
    CREATE INDEX ON sessions (expires);";

#[test]
fn per_user_cap_keeps_the_newest_sessions_of_each_user() {
    let mut c = db("f_cap");
    c.batch_execute(CAPPED).unwrap();
    // 400 users with 1..=11 sessions each, all distinct in time; user 0 has ties only; NULL users
    // (anonymous sessions) are never capped; user -1 has sessions never active (NULL last_seen).
    c.batch_execute(
        "INSERT INTO sessions (user_id, last_seen)
              SELECT u, now() - (u * 100 + k) * interval '1 second'
                FROM generate_series(1, 400) u, generate_series(1, 1 + u % 11) k;
         INSERT INTO sessions (user_id, last_seen) SELECT 0, '2026-01-01 00:00+00' FROM generate_series(1, 7);
         INSERT INTO sessions (user_id, last_seen) SELECT NULL, now() FROM generate_series(1, 30);
         INSERT INTO sessions (user_id, last_seen) VALUES (-1, NULL), (-1, NULL), (-1, now()), (-1, now() - interval '1 day');
         CREATE TABLE expected AS
              SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY last_seen DESC NULLS LAST) AS rank
                                FROM sessions WHERE user_id > 0) r
               WHERE rank <= 4;",
    )
    .unwrap();
    let registered: String = scalar(
        &mut c,
        "SELECT session_gc.register('sessions', expires_column => 'expires', user_column => 'user_id',
                                    max_per_user => 4, activity_column => 'last_seen')",
    );
    assert!(registered.contains("4 newer sessions"), "{registered}");
    let over_cap_before: i64 = scalar(&mut c, "SELECT over_cap FROM session_gc.stats('sessions')");
    let CleanupRow {
        deleted,
        expired,
        over_cap,
        batches,
        status,
        ..
    } = cleanup(&mut c, "batch_size => 50");
    assert_eq!(status, "ok");
    assert_eq!(expired, 0);
    assert_eq!(deleted, over_cap);
    assert_eq!(over_cap, over_cap_before);
    assert!(batches > 10, "small batches: {batches}");
    // Every user keeps exactly min(sessions, 4); the ones kept are the newest.
    assert_eq!(
        count(
            &mut c,
            "(SELECT user_id FROM sessions WHERE user_id IS NOT NULL GROUP BY 1 HAVING count(*) > 4) x"
        ),
        0
    );
    assert_eq!(
        count(&mut c, "sessions WHERE user_id > 0"),
        count(&mut c, "expected")
    );
    assert_eq!(
        count(
            &mut c,
            "sessions s WHERE s.user_id > 0 AND NOT EXISTS (SELECT 1 FROM expected e WHERE e.id = s.id)"
        ),
        0
    );
    assert_eq!(count(&mut c, "sessions WHERE user_id = 0"), 4, "ties");
    assert_eq!(count(&mut c, "sessions WHERE user_id IS NULL"), 30);
    // Of user -1's four sessions all are kept; with a cap of 2 the never-active ones go first.
    assert_eq!(count(&mut c, "sessions WHERE user_id = -1"), 4);
    c.batch_execute(
        "SELECT session_gc.register('sessions', user_column => 'user_id', max_per_user => 2,
                                    activity_column => 'last_seen')",
    )
    .unwrap();
    cleanup(&mut c, "");
    assert_eq!(
        count(
            &mut c,
            "sessions WHERE user_id = -1 AND last_seen IS NOT NULL"
        ),
        2
    );
    assert_eq!(count(&mut c, "sessions WHERE user_id = -1"), 2);
    // Nothing beyond the cap left: a second run deletes nothing.
    assert_eq!(cleanup(&mut c, "").deleted, 0);
}

#[test]
fn per_user_cap_applies_after_the_time_rules_and_skips_locked_rows() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("f_cap_rules");
    let mut c = cluster.connect(&name);
    c.batch_execute(CAPPED).unwrap();
    // User 1: three expired and three live sessions; a cap of three leaves the live ones.
    // User 2: five live sessions, the oldest held by the application.
    c.batch_execute(
        "INSERT INTO sessions (user_id, last_seen, expires)
              SELECT 1, now() - g * interval '1 minute', now() - interval '1 hour' FROM generate_series(1, 3) g;
         INSERT INTO sessions (user_id, last_seen) SELECT 1, now() - g * interval '1 hour' FROM generate_series(1, 3) g;
         INSERT INTO sessions (user_id, last_seen) SELECT 2, now() - g * interval '1 hour' FROM generate_series(1, 5) g;
         SELECT session_gc.register('sessions', expires_column => 'expires', user_column => 'user_id',
                                    max_per_user => 3, activity_column => 'last_seen');",
    )
    .unwrap();
    let mut app = cluster.connect(&name);
    app.batch_execute(
        "BEGIN; SELECT * FROM sessions WHERE user_id = 2 ORDER BY last_seen LIMIT 1 FOR UPDATE",
    )
    .unwrap();
    let started = Instant::now();
    let CleanupRow {
        deleted,
        expired,
        over_cap,
        status,
        ..
    } = cleanup(&mut c, "");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the purge did not wait for the application's lock: {:?}",
        started.elapsed()
    );
    assert_eq!(status, "ok");
    assert_eq!((deleted, expired, over_cap), (4, 3, 1));
    assert_eq!(
        count(&mut c, "sessions WHERE user_id = 1 AND expires > now()"),
        3
    );
    assert_eq!(count(&mut c, "sessions WHERE user_id = 2"), 4);
    app.batch_execute("COMMIT").unwrap();
    assert_eq!(cleanup(&mut c, "").over_cap, 1);
    assert_eq!(count(&mut c, "sessions WHERE user_id = 2"), 3);
    assert_eq!(
        count(
            &mut c,
            "sessions WHERE user_id = 2 AND last_seen < now() - interval '3 hours' - interval '1 minute'"
        ),
        0,
        "the newest three are kept"
    );
}

#[test]
fn per_user_cap_bad_input_is_refused() {
    let mut c = db("f_cap_errors");
    c.batch_execute(CAPPED).unwrap();
    c.batch_execute("ALTER TABLE sessions ADD COLUMN flag boolean")
        .unwrap();
    let cases = [
        ("user_column => 'user_id'", "22023", "max_per_user"),
        ("max_per_user => 3", "22023", "user_column"),
        (
            "user_column => 'user_id', max_per_user => 0, activity_column => 'last_seen'",
            "22023",
            "at least 1",
        ),
        (
            "user_column => 'nobody', max_per_user => 3, activity_column => 'last_seen'",
            "42703",
            "nobody",
        ),
        (
            "user_column => 'user_id', max_per_user => 3",
            "22023",
            "rank",
        ),
        (
            "expires_column => 'expires', activity_column => 'last_seen'",
            "22023",
            "activity_column",
        ),
        (
            "user_column => 'user_id', max_per_user => 3, activity_column => 'flag'",
            "42804",
            "flag",
        ),
    ];
    for (args, code, mentions) in cases {
        let error = expect_error(
            &mut c,
            &format!("SELECT session_gc.register('sessions', {args})"),
        );
        assert_eq!(error.code, code, "{args}: {}", error.message);
        assert!(
            error.message.contains(mentions),
            "{args}: {}",
            error.message
        );
        assert!(error.detail.is_some() && error.hint.is_some(), "{args}");
    }
    assert_eq!(count(&mut c, "session_gc.policies"), 0);
}

/// A table partitioned by day on `expires`, six days back to two ahead, and a default
/// partition; 8,000 rows over the last six days, ten long expired, ten far in the future.
fn partitioned_table(c: &mut Client) {
    c.batch_execute(
        "CREATE TABLE psessions (id bigint NOT NULL, expires timestamptz NOT NULL, data text)
             PARTITION BY RANGE (expires);",
    )
    .unwrap();
    let partitions: Vec<String> = column(
        c,
        "SELECT format('CREATE TABLE %I PARTITION OF psessions FOR VALUES FROM (%L) TO (%L)',
                       'psessions_' || to_char(d, 'YYYYMMDD'), d, d + interval '1 day')
           FROM generate_series(date_trunc('day', now()) - interval '6 days',
                                date_trunc('day', now()) + interval '2 days', interval '1 day') d",
    );
    for statement in partitions {
        c.batch_execute(&statement).unwrap();
    }
    c.batch_execute(
        "CREATE TABLE psessions_default PARTITION OF psessions DEFAULT;
         CREATE INDEX ON psessions (expires);
         INSERT INTO psessions SELECT g, now() - interval '6 days' + g * interval '1 minute', 'x'
           FROM generate_series(1, 8000) g;
         INSERT INTO psessions SELECT g, now() - interval '30 days', 'old' FROM generate_series(1, 10) g;
         INSERT INTO psessions SELECT g, now() + interval '30 days', 'future' FROM generate_series(1, 10) g;",
    )
    .unwrap();
}

fn partitions(c: &mut Client) -> Vec<String> {
    column(
        c,
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'psessions'::regclass ORDER BY 1",
    )
}

#[test]
fn drop_partitions_drops_whole_expired_partitions_and_deletes_the_rest() {
    let mut c = db("f_partitions");
    partitioned_table(&mut c);
    let live = count(&mut c, "psessions WHERE expires >= now()");
    let before = partitions(&mut c);
    assert_eq!(before.len(), 10);
    // With two days of grace, only partitions ending more than two days ago go.
    c.batch_execute(
        "SELECT session_gc.register('psessions', expires_column => 'expires', grace => '2 days',
                                    strategy => 'drop_partitions')",
    )
    .unwrap();
    let CleanupRow {
        partitions_dropped: dropped,
        status,
        ..
    } = cleanup(&mut c, "");
    assert_eq!(status, "ok");
    assert_eq!(
        dropped,
        4,
        "the days from six to three days back: {:?}",
        partitions(&mut c)
    );
    assert_eq!(
        count(
            &mut c,
            "psessions WHERE expires < now() - interval '2 days'"
        ),
        0
    );
    assert!(count(&mut c, "psessions WHERE expires < now()") > 0);
    // Without grace: every partition that ended before now goes; the current partition's and
    // the default partition's expired rows are deleted row by row; live rows all stay. Some of
    // today's sessions have expired whatever the time of day.
    c.batch_execute(
        "INSERT INTO psessions
         SELECT g, date_trunc('day', now()) + (now() - date_trunc('day', now())) * (g / 20.0), 'today'
           FROM generate_series(1, 19) g;
         SELECT session_gc.register('psessions', expires_column => 'expires', strategy => 'drop_partitions')",
    )
    .unwrap();
    let CleanupRow {
        deleted,
        expired,
        partitions_dropped: dropped,
        status,
        ..
    } = cleanup(&mut c, "");
    assert_eq!(status, "ok");
    assert_eq!(dropped, 2, "the day before yesterday and yesterday");
    assert!(deleted > 0 && deleted == expired);
    assert_eq!(count(&mut c, "psessions WHERE expires < now()"), 0);
    assert_eq!(count(&mut c, "psessions WHERE expires >= now()"), live);
    let after = partitions(&mut c);
    assert_eq!(after.len(), 4, "{after:?}");
    assert!(after.contains(&"psessions_default".to_string()));
    let totals: i64 = scalar(
        &mut c,
        "SELECT partitions_dropped_total FROM session_gc.totals",
    );
    assert_eq!(totals, 6);
    let history: i64 = scalar(
        &mut c,
        "SELECT sum(partitions_dropped)::int8 FROM session_gc.history",
    );
    assert_eq!(history, 6);
}

#[test]
fn drop_partitions_skips_a_locked_partition_and_never_drops_a_detached_one() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("f_partition_locks");
    let mut c = cluster.connect(&name);
    partitioned_table(&mut c);
    c.batch_execute(
        "SELECT session_gc.register('psessions', expires_column => 'expires', strategy => 'drop_partitions')",
    )
    .unwrap();
    let expired_partitions: Vec<String> = partitions(&mut c)
        .into_iter()
        .filter(|p| p != "psessions_default")
        .take(3)
        .collect();
    let (oldest, detached) = (&expired_partitions[0], &expired_partitions[1]);
    // The application reads the oldest partition in an open transaction; the DBA detaches another.
    let mut app = cluster.connect(&name);
    app.batch_execute(&format!("BEGIN; SELECT count(*) FROM {oldest}"))
        .unwrap();
    c.batch_execute(&format!(
        "ALTER TABLE psessions DETACH PARTITION {detached}"
    ))
    .unwrap();
    let started = Instant::now();
    let CleanupRow {
        partitions_dropped: dropped,
        status,
        ..
    } = cleanup(&mut c, "");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no long wait for the application's lock: {:?}",
        started.elapsed()
    );
    assert_eq!(status, "ok");
    let left = partitions(&mut c);
    assert!(
        left.contains(oldest),
        "the locked partition is left: {left:?}"
    );
    assert_eq!(
        dropped, 4,
        "the six expired partitions but the locked and the detached one"
    );
    let detached_rows = count(&mut c, detached);
    assert!(detached_rows > 0, "the detached table is untouched");
    app.batch_execute("COMMIT").unwrap();
    assert_eq!(
        cleanup(&mut c, "").partitions_dropped,
        1,
        "dropped on the next run"
    );
    assert!(!partitions(&mut c).contains(oldest));
    assert_eq!(count(&mut c, detached), detached_rows);
}

#[test]
fn drop_partitions_is_refused_for_tables_not_partitioned_that_way() {
    let mut c = db("f_partition_errors");
    c.batch_execute(
        "CREATE TABLE plain (id int PRIMARY KEY, expires timestamptz);
         CREATE TABLE hashed (id int, expires timestamptz) PARTITION BY HASH (id);
         CREATE TABLE by_id (id int, expires timestamptz) PARTITION BY RANGE (id);
         CREATE TABLE two_keys (id int, expires timestamptz) PARTITION BY RANGE (expires, id);
         CREATE TABLE referenced (id int, expires timestamptz, PRIMARY KEY (id, expires)) PARTITION BY RANGE (expires);
         CREATE TABLE child (id int, expires timestamptz, FOREIGN KEY (id, expires) REFERENCES referenced ON DELETE CASCADE);",
    )
    .unwrap();
    let cases = [
        ("plain", "expires_column => 'expires'", "42809"),
        ("hashed", "expires_column => 'expires'", "42809"),
        ("by_id", "expires_column => 'expires'", "42809"),
        ("two_keys", "expires_column => 'expires'", "42809"),
        ("referenced", "expires_column => 'expires'", "0A000"),
    ];
    for (table, args, code) in cases {
        let error = expect_error(
            &mut c,
            &format!(
                "SELECT session_gc.register('{table}', {args}, strategy => 'drop_partitions')"
            ),
        );
        assert_eq!(error.code, code, "{table}: {}", error.message);
        assert!(error.detail.is_some() && error.hint.is_some(), "{table}");
    }
    let error = expect_error(
        &mut c,
        "SELECT session_gc.register('plain', expires_column => 'expires', strategy => 'truncate')",
    );
    assert_eq!(error.code, "22023");
    assert_eq!(count(&mut c, "session_gc.policies"), 0);
}

#[test]
fn notify_after_runs_that_deleted_when_enabled() {
    let cluster = shared_cluster();
    let name = cluster.fresh_db("f_notify");
    let mut c = cluster.connect(&name);
    let mut listener = cluster.connect(&name);
    listener.batch_execute("LISTEN session_gc").unwrap();
    c.batch_execute(
        "CREATE TABLE sessions (id bigserial PRIMARY KEY, expires timestamptz NOT NULL);
         CREATE INDEX ON sessions (expires);
         INSERT INTO sessions (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 25);
         SELECT session_gc.register('sessions', expires_column => 'expires');
         SET session_gc.notify = on;",
    )
    .unwrap();
    cleanup(&mut c, "");
    // A run with nothing to delete sends nothing; with notify off neither. A marker ends the wait.
    cleanup(&mut c, "");
    c.batch_execute(
        "SET session_gc.notify = off;
         INSERT INTO sessions (expires) VALUES (now() - interval '1 hour');",
    )
    .unwrap();
    cleanup(&mut c, "");
    c.batch_execute("NOTIFY session_gc, 'marker'").unwrap();
    let mut received = Vec::new();
    let mut notifications = listener.notifications();
    let mut waiting = notifications.timeout_iter(Duration::from_secs(10));
    while let Ok(Some(note)) = fallible_iterator::FallibleIterator::next(&mut waiting) {
        let payload = note.payload().to_string();
        let done = payload == "marker";
        received.push(payload);
        if done {
            break;
        }
    }
    drop(waiting);
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received[1], "marker");
    // Anyone who can connect may LISTEN: the payload names no table and no volume.
    let payload: serde_json::Value = serde_json::from_str(&received[0]).unwrap();
    let keys: Vec<&String> = payload.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["database", "run_id"], "{payload}");
    assert_eq!(payload["database"], name.as_str());
    let run_id: i64 = scalar(&mut c, "SELECT min(id) FROM session_gc.history");
    assert_eq!(payload["run_id"], run_id);
    // The table's owner reads the run; another role sees nothing of it.
    let row = c
        .query_one(
            "SELECT table_name::text, deleted, partitions_dropped, status FROM session_gc.run($1)",
            &[&run_id],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i64>(1),
            row.get::<_, i32>(2),
            row.get::<_, String>(3)
        ),
        ("sessions".to_string(), 25, 0, "ok".to_string())
    );
    c.batch_execute(
        "DROP ROLE IF EXISTS f_notify_other; CREATE ROLE f_notify_other;
         GRANT USAGE ON SCHEMA session_gc TO f_notify_other;
         GRANT EXECUTE ON FUNCTION session_gc.run(bigint) TO f_notify_other;
         SET ROLE f_notify_other;",
    )
    .unwrap();
    let seen: i64 = scalar(
        &mut c,
        &format!("SELECT count(*) FROM session_gc.run({run_id})"),
    );
    c.batch_execute("RESET ROLE").unwrap();
    assert_eq!(seen, 0, "another role learns nothing of the run");
}

/// One query of the exporter file: its name, its SQL, and `(column, usage)` per metric.
#[derive(Debug)]
struct ExporterQuery {
    name: String,
    query: String,
    columns: Vec<(String, String)>,
}

/// The queries of docs/postgres_exporter.yml.
fn exporter_queries() -> Vec<ExporterQuery> {
    let text = std::fs::read_to_string(repo_file("docs/postgres_exporter.yml"))
        .expect("docs/postgres_exporter.yml");
    let mut queries: Vec<ExporterQuery> = Vec::new();
    let mut column: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        if !line.starts_with(' ') && trimmed.ends_with(':') {
            queries.push(ExporterQuery {
                name: trimmed.trim_end_matches(':').into(),
                query: String::new(),
                columns: Vec::new(),
            });
        } else if let Some(query) = trimmed.strip_prefix("query: ") {
            if let Some(last) = queries.last_mut() {
                last.query = query.trim_matches('"').to_string();
            }
        } else if let Some(name) = trimmed.strip_prefix("- ") {
            column = Some(name.trim_end_matches(':').to_string());
        } else if let Some(usage) = trimmed.strip_prefix("usage: ") {
            if let (Some(last), Some(name)) = (queries.last_mut(), column.take()) {
                last.columns
                    .push((name, usage.trim_matches('"').to_string()));
            }
        }
    }
    queries
}

#[test]
fn metrics_and_the_exporter_queries_work_for_a_monitoring_role() {
    let mut c = db("f_metrics");
    c.batch_execute(
        "CREATE TABLE sessions (id bigserial PRIMARY KEY, expires timestamptz NOT NULL);
         CREATE INDEX ON sessions (expires);
         INSERT INTO sessions (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 40);
         SELECT session_gc.register('sessions', expires_column => 'expires');
         SELECT * FROM session_gc.cleanup();
         INSERT INTO sessions (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 7);
         DROP ROLE IF EXISTS f_metrics_monitor;
         CREATE ROLE f_metrics_monitor LOGIN IN ROLE pg_monitor;",
    )
    .unwrap();
    let row = c
        .query_one(
            "SELECT deleted_total, expired_backlog, runs_total, errors_total, last_run_ok,
                    last_run_age_seconds < 60, table_bytes > 0
               FROM session_gc.metrics()",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 40);
    assert_eq!(row.get::<_, Option<i64>>(1), Some(7));
    assert_eq!((row.get::<_, i64>(2), row.get::<_, i64>(3)), (1, 0));
    assert_eq!(row.get::<_, Option<bool>>(4), Some(true));
    assert_eq!(row.get::<_, Option<bool>>(5), Some(true));
    assert_eq!(row.get::<_, Option<bool>>(6), Some(true));
    // A monitoring role may not read the sessions or purge, but gets every metric.
    c.batch_execute("SET ROLE f_metrics_monitor").unwrap();
    assert_eq!(
        expect_error(&mut c, "SELECT count(*) FROM sessions").code,
        "42501"
    );
    assert_eq!(
        expect_error(&mut c, "SELECT * FROM session_gc.cleanup()").code,
        "42501"
    );
    let queries = exporter_queries();
    assert!(queries.len() >= 2, "{queries:?}");
    for ExporterQuery {
        name,
        query,
        columns,
    } in &queries
    {
        assert!(!query.is_empty(), "{name} has a query");
        let rows = c
            .query(query.as_str(), &[])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!rows.is_empty(), "{name} returns rows");
        let returned: Vec<(String, String)> = rows[0]
            .columns()
            .iter()
            .map(|col| (col.name().to_string(), col.type_().name().to_string()))
            .collect();
        assert_eq!(returned.len(), columns.len(), "{name}: {returned:?}");
        for (column, usage) in columns {
            let Some((_, ty)) = returned.iter().find(|(n, _)| n == column) else {
                panic!("{name}: column {column} not returned: {returned:?}");
            };
            if usage == "LABEL" {
                assert_eq!(ty, "text", "{name}.{column}");
            } else {
                assert!(
                    ["int4", "int8", "float8", "numeric"].contains(&ty.as_str()),
                    "{name}.{column} is a number for Prometheus: {ty}"
                );
            }
        }
    }
}

#[test]
fn packaging_metadata_matches_the_release() {
    let cargo = std::fs::read_to_string(repo_file("Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("version in Cargo.toml");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_file("META.json")).unwrap())
            .expect("META.json is JSON");
    assert_eq!(meta["name"], "session_gc");
    assert_eq!(meta["version"], version.as_str());
    assert_eq!(meta["provides"]["session_gc"]["version"], version.as_str());
    assert_eq!(meta["meta-spec"]["version"], "1.0.0");
    for key in ["abstract", "maintainer", "license"] {
        assert!(meta[key].is_string() || meta[key].is_array(), "{key}");
    }
    // The supported range covers every major Cargo.toml has a feature for, and the one tested.
    let range = meta["prereqs"]["runtime"]["requires"]["PostgreSQL"]
        .as_str()
        .expect("a PostgreSQL range");
    let bound = |op: &str| -> u32 {
        range
            .split(',')
            .find_map(|part| part.trim().strip_prefix(op))
            .and_then(|v| v.trim().split('.').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{range}: no {op} bound"))
    };
    let (lowest, beyond) = (bound(">="), bound("<"));
    let featured: Vec<u32> = cargo
        .lines()
        .filter_map(|l| l.strip_prefix("pg")?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(featured, (lowest..beyond).collect::<Vec<_>>(), "{range}");
    let mut c = db("f_meta_major");
    let tested: i32 = scalar(
        &mut c,
        "SELECT current_setting('server_version_num')::int / 10000",
    );
    assert!(
        featured.contains(&(tested as u32)),
        "{tested} not in {range}"
    );
    // Every archived release has an upgrade path to this one.
    for entry in std::fs::read_dir(repo_file("sql/archive")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let Some(old) = file
            .strip_prefix("session_gc--")
            .and_then(|f| f.strip_suffix(".sql"))
        else {
            continue;
        };
        let mut at = old.to_string();
        while at != version {
            let next = std::fs::read_dir(repo_file("sql"))
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .find_map(|f| {
                    f.strip_prefix(&format!("session_gc--{at}--"))
                        .and_then(|rest| rest.strip_suffix(".sql"))
                        .map(str::to_string)
                })
                .unwrap_or_else(|| panic!("no upgrade script from {at}"));
            at = next;
        }
    }
}

/// A table just filled or copied has no statistics; the planner would guess its rows from column
/// widths (1,339 for these 3,000 sessions), so stats() counts it.
#[test]
fn stats_counts_the_rows_of_a_table_without_statistics() {
    let mut c = db("f_stats_fresh");
    c.batch_execute(
        "CREATE TABLE s (sid varchar NOT NULL PRIMARY KEY, sess json NOT NULL, expire timestamptz NOT NULL)
             WITH (autovacuum_enabled = off);
         CREATE INDEX ON s (expire);
         INSERT INTO s SELECT 'sid' || g, json_build_object('cookie', repeat('c', 300)), now() + interval '1 day'
           FROM generate_series(1, 3000) g;
         SELECT session_gc.register('s', expires_column => 'expire');",
    )
    .unwrap();
    let never_analyzed: f64 = scalar(
        &mut c,
        "SELECT reltuples::float8 FROM pg_class WHERE relname = 's'",
    );
    assert!(never_analyzed < 0.0, "no statistics yet: {never_analyzed}");
    let total: i64 = scalar(&mut c, "SELECT total_rows FROM session_gc.stats()");
    assert_eq!(total, 3000);
}

#[test]
fn stats_counts_exactly_up_to_a_limit_and_estimates_beyond() {
    let mut c = db("f_stats_estimate");
    c.batch_execute(
        "CREATE TABLE sessions (id bigserial PRIMARY KEY, expires timestamptz NOT NULL);
         CREATE INDEX ON sessions (expires);
         INSERT INTO sessions (expires) SELECT now() - g * interval '1 second' FROM generate_series(1, 6000) g;
         INSERT INTO sessions (expires) SELECT now() + g * interval '1 second' FROM generate_series(1, 4000) g;
         ANALYZE sessions;
         SELECT session_gc.register('sessions', expires_column => 'expires');",
    )
    .unwrap();
    let row = |c: &mut Client, exact: &str| {
        let r = c
            .query_one(
                &format!("SELECT expired_rows, exact FROM session_gc.stats('sessions', exact => {exact})"),
                &[],
            )
            .unwrap();
        (r.get::<_, i64>(0), r.get::<_, bool>(1))
    };
    // A small range is counted by default; asked for, an estimate comes from the statistics.
    assert_eq!(row(&mut c, "NULL"), (6000, true));
    assert_eq!(row(&mut c, "true"), (6000, true));
    let (estimated, exact) = row(&mut c, "false");
    assert!(!exact);
    assert!(
        (5400..=6600).contains(&estimated),
        "the planner's estimate is close: {estimated}"
    );
    let dry_run: i64 = scalar(
        &mut c,
        "SELECT deleted FROM session_gc.cleanup(dry_run => true)",
    );
    assert_eq!(dry_run, 6000, "dry runs always count");
}

#[test]
fn a_partition_detached_but_not_dropped_is_dropped_by_the_next_run() {
    let mut c = db("f_pending_drops");
    partitioned_table(&mut c);
    c.batch_execute(
        "SELECT session_gc.register('psessions', expires_column => 'expires', strategy => 'drop_partitions')",
    )
    .unwrap();
    let expired: Vec<String> = partitions(&mut c).into_iter().take(2).collect();
    // As a run that stopped between its two steps leaves them: detached and recorded. The
    // second one has been renamed since: it is somebody's table now and is left alone.
    for name in &expired {
        c.batch_execute(&format!(
            "ALTER TABLE psessions DETACH PARTITION {name};
             INSERT INTO session_gc.pending_drops (relid, parent, schema_name, table_name)
                  VALUES ('{name}'::regclass, 'psessions', 'public', '{name}');"
        ))
        .unwrap();
    }
    c.batch_execute(&format!(
        "ALTER TABLE {} RENAME TO kept_by_the_dba",
        expired[1]
    ))
    .unwrap();
    let dropped: i32 = scalar(
        &mut c,
        "SELECT partitions_dropped FROM session_gc.cleanup('psessions')",
    );
    assert_eq!(dropped, 5, "the pending one and the four still attached");
    assert_eq!(
        count(
            &mut c,
            &format!("pg_class WHERE relname = '{}'", expired[0])
        ),
        0
    );
    assert!(count(&mut c, "kept_by_the_dba") > 0);
    assert_eq!(count(&mut c, "session_gc.pending_drops"), 0);
}

/// WAL a `CALL session_gc.purge()` of 20,000 expired sessions writes right after a checkpoint,
/// when every page it changes is logged whole, with `session_gc.wal_compression = setting`.
fn purge_wal_bytes(c: &mut Client, setting: &str) -> i64 {
    c.batch_execute(&format!(
        "SET session_gc.wal_compression = {setting};
         TRUNCATE sessions;
         INSERT INTO sessions (expires, data)
         SELECT now() - interval '1 hour', repeat('payload of a session ', 15)
           FROM generate_series(1, 20000);
         CHECKPOINT;"
    ))
    .unwrap();
    let before: String = scalar(c, "SELECT pg_current_wal_insert_lsn()::text");
    c.batch_execute("CALL session_gc.purge()").unwrap();
    assert_eq!(
        count(c, "sessions"),
        0,
        "the purge with {setting} left rows"
    );
    scalar(
        c,
        &format!("SELECT (pg_current_wal_insert_lsn() - '{before}'::pg_lsn)::int8"),
    )
}

#[test]
fn purge_batches_compress_their_wal_and_leave_the_callers_settings_alone() {
    // Its own cluster: WAL is measured server-wide, and the shared one logs no full pages.
    let cluster = Cluster::start("walcompression", &["full_page_writes = on"]);
    let name = cluster.fresh_db("f_wal_compression");
    let mut c = cluster.connect(&name);
    c.batch_execute(
        "CREATE TABLE sessions (id bigserial PRIMARY KEY, expires timestamptz NOT NULL,
                                data text NOT NULL);
         CREATE INDEX ON sessions (expires);
         SELECT session_gc.register('sessions', expires_column => 'expires');",
    )
    .unwrap();
    let default: String = scalar(&mut c, "SHOW session_gc.wal_compression");
    assert_eq!(default, "auto");
    let plain = purge_wal_bytes(&mut c, "off");
    let pglz = purge_wal_bytes(&mut c, "pglz");
    let auto = purge_wal_bytes(&mut c, "auto");
    // pglz is in every build; auto means lz4 where the server has it, and nothing otherwise.
    assert!(
        pglz * 2 < plain,
        "pglz {pglz} bytes against {plain} uncompressed"
    );
    let has_lz4 = c
        .batch_execute("SET wal_compression = lz4; RESET wal_compression")
        .is_ok();
    if has_lz4 {
        assert!(auto * 2 < plain, "auto (lz4) {auto} bytes against {plain}");
    } else {
        assert!(
            auto * 10 > plain * 9,
            "auto without lz4 {auto} bytes against {plain}"
        );
    }
    // Only the batches compressed: the session's own setting is as it was.
    let session: String = scalar(&mut c, "SHOW wal_compression");
    assert_eq!(session, "off");

    // Inside the caller's transaction block, purge() and cleanup() leave its settings as they
    // were: its commit still waits for the WAL flush, its own pages are not compressed.
    c.batch_execute(
        "SET synchronous_commit = on;
         SET session_gc.wal_compression = pglz;
         BEGIN;
         INSERT INTO sessions (expires, data) SELECT now() - interval '1 hour', 'x'
           FROM generate_series(1, 100);
         CALL session_gc.purge();",
    )
    .unwrap();
    let sync: String = scalar(&mut c, "SHOW synchronous_commit");
    let compression: String = scalar(&mut c, "SHOW wal_compression");
    c.batch_execute("COMMIT").unwrap();
    assert_eq!((sync.as_str(), compression.as_str()), ("on", "off"));
    assert_eq!(count(&mut c, "sessions"), 0);
    c.batch_execute(
        "INSERT INTO sessions (expires, data) VALUES (now() - interval '1 hour', 'x');
         BEGIN;",
    )
    .unwrap();
    assert_eq!(cleanup(&mut c, "in_transaction => true").deleted, 1);
    let compression: String = scalar(&mut c, "SHOW wal_compression");
    c.batch_execute("COMMIT").unwrap();
    assert_eq!(compression, "off");
}

/// Tokens of three kinds, each 12 hours, 2, 10 and 70 days old.
const TOKENS: &str = "
    CREATE TABLE tokens (id bigserial PRIMARY KEY, context text NOT NULL,
                         inserted_at timestamptz NOT NULL);
    CREATE INDEX ON tokens (inserted_at);
    INSERT INTO tokens (context, inserted_at)
    SELECT c, now() - make_interval(hours => h)
      FROM unnest(ARRAY['session', 'reset_password', 'confirm']) c,
           unnest(ARRAY[12, 48, 240, 1680]) h;";

/// One policy per kind of token, as Phoenix's users_tokens needs.
const TOKEN_POLICIES: &str = "
    SELECT session_gc.register('tokens', policy_name => 'session',
             row_filter => $$context = 'session'$$,
             created_column => 'inserted_at', max_age => '60 days');
    SELECT session_gc.register('tokens', policy_name => 'reset_password',
             row_filter => $$context = 'reset_password'$$,
             created_column => 'inserted_at', max_age => '1 day');
    SELECT session_gc.register('tokens', policy_name => 'other',
             row_filter => $$context NOT IN ('session', 'reset_password')$$,
             created_column => 'inserted_at', max_age => '7 days');";

fn tokens_left(c: &mut Client) -> Vec<String> {
    column(
        c,
        "SELECT context || ':' || count(*) FROM tokens GROUP BY context ORDER BY context",
    )
}

#[test]
fn policies_with_row_filters_share_a_table_and_purge_only_their_rows() {
    // Few live rows: the heap walk; many: each rule's index.
    for (name, live) in [("f_filter_heap", 0), ("f_filter_index", 20_000)] {
        let mut c = db(name);
        c.batch_execute(TOKENS).unwrap();
        c.batch_execute(&format!(
            "INSERT INTO tokens (context, inserted_at)
             SELECT 'session', now() FROM generate_series(1, {live}); ANALYZE tokens;"
        ))
        .unwrap();
        c.batch_execute(TOKEN_POLICIES).unwrap();
        let answer: String = scalar(
            &mut c,
            "SELECT session_gc.register('tokens', policy_name => 'reset_password',
                      row_filter => $$context = 'reset_password'$$,
                      created_column => 'inserted_at', max_age => '1 day')",
        );
        assert!(
            answer.contains("(policy 'reset_password')")
                && answer.contains("where context = 'reset_password'"),
            "{answer}"
        );
        let policies: i64 = scalar(&mut c, "SELECT count(*) FROM session_gc.policies");
        assert_eq!(
            policies, 3,
            "registering again replaced the policy of that name"
        );
        let counted = cleanup(&mut c, "'tokens', dry_run => true");
        assert_eq!(counted.aged, 6, "{name}: dry run");
        let run = cleanup(&mut c, "'tokens'");
        assert_eq!(
            (run.deleted, run.aged, run.status.as_str()),
            (6, 6, "ok"),
            "{name}"
        );
        assert_eq!(
            tokens_left(&mut c),
            [
                "confirm:2".to_string(),
                "reset_password:1".into(),
                format!("session:{}", 3 + live)
            ],
            "{name}: each kind kept for its own time"
        );
        let stats_rows: i64 = scalar(&mut c, "SELECT count(*) FROM session_gc.stats()");
        let metric_rows: i64 = scalar(&mut c, "SELECT count(*) FROM session_gc.metrics()");
        assert_eq!((stats_rows, metric_rows), (1, 1), "one table, one row");
    }
}

#[test]
fn disabled_and_unregistered_policies_of_a_shared_table() {
    let mut c = db("f_filter_manage");
    c.batch_execute(TOKENS).unwrap();
    c.batch_execute(TOKEN_POLICIES).unwrap();
    // Disabled: its rows stay while the others purge.
    c.batch_execute(
        "SELECT session_gc.register('tokens', policy_name => 'other', enabled => false,
                  row_filter => $$context NOT IN ('session', 'reset_password')$$,
                  created_column => 'inserted_at', max_age => '7 days')",
    )
    .unwrap();
    assert_eq!(cleanup(&mut c, "'tokens'").deleted, 4);
    assert_eq!(
        tokens_left(&mut c),
        ["confirm:4", "reset_password:1", "session:3"]
    );
    let error = expect_error(
        &mut c,
        "SELECT session_gc.unregister('tokens', policy_name => 'nope')",
    );
    assert_eq!(error.code, "42704", "{error:?}");
    c.batch_execute("SELECT session_gc.unregister('tokens', policy_name => 'session')")
        .unwrap();
    let (policies, totals): (i64, i64) = (
        scalar(&mut c, "SELECT count(*) FROM session_gc.policies"),
        scalar(&mut c, "SELECT count(*) FROM session_gc.totals"),
    );
    assert_eq!(
        (policies, totals),
        (2, 1),
        "the table's totals stay with its policies"
    );
    c.batch_execute("SELECT session_gc.unregister('tokens')")
        .unwrap();
    let (policies, totals): (i64, i64) = (
        scalar(&mut c, "SELECT count(*) FROM session_gc.policies"),
        scalar(&mut c, "SELECT count(*) FROM session_gc.totals"),
    );
    assert_eq!((policies, totals), (0, 0), "and go with the last one");
    // Of several disabled policies a named purge runs none.
    c.batch_execute(TOKEN_POLICIES).unwrap();
    c.batch_execute(
        "UPDATE session_gc.policies SET enabled = false;
         INSERT INTO tokens (context, inserted_at) VALUES ('session', now() - interval '90 days');",
    )
    .unwrap();
    assert_eq!(cleanup(&mut c, "'tokens'").deleted, 0);
    // Beside other policies, a policy without a filter (its rules would reach every row), a
    // cap and partition drops (they act on every row) are refused, filtered or not.
    c.batch_execute("ALTER TABLE tokens ADD COLUMN user_id int; CREATE INDEX ON tokens (user_id);")
        .unwrap();
    for (call, code) in [
        (
            "SELECT session_gc.register('tokens', created_column => 'inserted_at', max_age => '1 day')",
            "22023",
        ),
        (
            "SELECT session_gc.register('tokens', policy_name => 'cap', user_column => 'user_id',
                      max_per_user => 3, activity_column => 'inserted_at')",
            "0A000",
        ),
        (
            "SELECT session_gc.register('tokens', policy_name => 'cap', user_column => 'user_id',
                      max_per_user => 3, activity_column => 'inserted_at',
                      row_filter => $$context = 'session'$$)",
            "0A000",
        ),
        (
            "SELECT session_gc.register('tokens', policy_name => '', expires_column => 'inserted_at')",
            "22023",
        ),
    ] {
        let error = expect_error(&mut c, call);
        assert_eq!(error.code, code, "{call}: {error:?}");
        assert!(error.hint.is_some(), "{call}: a hint");
    }
    let policies: i64 = scalar(&mut c, "SELECT count(*) FROM session_gc.policies");
    assert_eq!(policies, 3, "nothing registered");
    // A table's only policy may be unfiltered; then no other may join it.
    c.batch_execute("SELECT session_gc.unregister('tokens');
                     SELECT session_gc.register('tokens', created_column => 'inserted_at', max_age => '60 days');")
        .unwrap();
    let error = expect_error(
        &mut c,
        "SELECT session_gc.register('tokens', policy_name => 'reset_password',
                  row_filter => $$context = 'reset_password'$$,
                  created_column => 'inserted_at', max_age => '1 day')",
    );
    assert_eq!(error.code, "22023", "{error:?}");
}

#[test]
fn a_row_filter_is_one_condition_checked_as_the_table_owner() {
    let mut c = db("f_filter_checked");
    c.batch_execute(&format!(
        "DROP ROLE IF EXISTS f_filter_owner; CREATE ROLE f_filter_owner;
         GRANT CREATE ON SCHEMA public TO f_filter_owner;
         SET ROLE f_filter_owner;
         {TOKENS}
         CREATE FUNCTION public.seen_by_owner() RETURNS boolean STABLE LANGUAGE sql
             AS $$ SELECT current_user::text = 'f_filter_owner' $$;
         RESET ROLE;"
    ))
    .unwrap();
    for (filter, code) in [
        // Clauses of their own after the condition.
        ("true) UNION SELECT FROM pg_class WHERE (true", "22023"),
        ("true) ORDER BY (context", "22023"),
        // Other rows than the one checked: not a condition on the row.
        ("context IN (SELECT relname::text FROM pg_class)", "22023"),
        ("1 = 1) --", "42601"),
        ("context = $1", "42P02"),
        ("random() < 0.5", "22023"),
        ("contxt = 'session'", "42703"),
        ("context", "42804"),
        ("count(*) > 0", "42803"),
        // Not on the pinned search_path: functions of other schemas must be qualified.
        ("seen_by_owner()", "42883"),
        ("   ", "22023"),
    ] {
        let error = expect_error(
            &mut c,
            &format!(
                "SELECT session_gc.register('tokens', created_column => 'inserted_at',
                          max_age => '1 hour', row_filter => $f${filter}$f$)"
            ),
        );
        assert_eq!(error.code, code, "{filter}: {error:?}");
        assert!(error.hint.is_some(), "{filter}: a hint: {error:?}");
    }
    let policies: i64 = scalar(&mut c, "SELECT count(*) FROM session_gc.policies");
    assert_eq!(policies, 0, "nothing registered");
    assert_eq!(count(&mut c, "tokens"), 12, "nothing deleted");
    // Pasted into a statement, this would escape its parentheses: (true) OR (true) AND
    // inserted_at < cutoff. Rendered from its parsed form it is one condition, and the rule holds.
    c.batch_execute(
        "SELECT session_gc.register('tokens', created_column => 'inserted_at',
                  max_age => '1 day', row_filter => $$true) OR (true$$)",
    )
    .unwrap();
    assert_eq!(cleanup(&mut c, "'tokens', dry_run => true").aged, 9);
    c.batch_execute("SELECT session_gc.unregister('tokens')")
        .unwrap();
    // The filter runs as the table's owner, whoever purges: a superuser here.
    c.batch_execute(
        "SELECT session_gc.register('tokens', created_column => 'inserted_at',
                  max_age => '1 day', row_filter => $$public.seen_by_owner() AND context <> 'confirm'$$)",
    )
    .unwrap();
    assert_eq!(cleanup(&mut c, "'tokens'").deleted, 6);
    assert_eq!(
        tokens_left(&mut c),
        ["confirm:4", "reset_password:1", "session:1"]
    );
}
