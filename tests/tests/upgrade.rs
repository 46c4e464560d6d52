//! Upgrading a database from the previous release: `ALTER EXTENSION session_gc UPDATE` must give
//! the same objects as a fresh install, keep policies, history and grants, and the library must
//! refuse cleanly to work on the old objects before the update.
//!
//! The old release's install script is `sql/archive/session_gc--0.1.0.sql`, installed next to
//! the current one by the test command. With the current library loaded, the 0.1.0 functions
//! only say that an update is needed, so the policy and history rows a 0.1.0 installation would
//! hold are written directly into its tables.

use postgres::Client;
use session_gc_integration::{column, count, expect_error, scalar, shared_cluster};

/// The releases a database can be updated from, each with the totals columns it has and its
/// cleanup() signature.
const PREVIOUS: [(&str, &str, &str); 5] = [
    ("0.1.0", "", OLD_CLEANUP),
    ("0.2.0", ", errors_total", OLD_CLEANUP),
    ("0.3.0", ", errors_total", CLEANUP),
    ("0.4.0", ", errors_total", CLEANUP),
    ("0.5.0", ", errors_total", CLEANUP),
];

/// 'EST' as a fixed offset, a POSIX zone.
const EASTERN: &str = "<-05>+5:00:00";

/// cleanup()'s signature before 0.3.0.
const OLD_CLEANUP: &str = "session_gc.cleanup(regclass, boolean, integer, interval)";

/// cleanup()'s signature in this release.
const CLEANUP: &str = "session_gc.cleanup(regclass, boolean, integer, interval, boolean)";

/// Every object of the extension, described with what matters to callers: signatures, result
/// types, properties, privileges (in a stable order), columns, defaults, constraints, indexes,
/// comments.
const DESCRIBE_OBJECTS: &str = "
WITH ext AS (SELECT oid, extconfig FROM pg_extension WHERE extname = 'session_gc'),
members AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
tables AS (SELECT objid AS oid FROM members WHERE classid = 'pg_class'::regclass)
SELECT format('function %s(%s) returns %s kind=%s volatile=%s strict=%s secdef=%s parallel=%s config=%s src=%s acl=%s comment=%s',
              p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), p.prokind,
              p.provolatile, p.proisstrict, p.prosecdef, p.proparallel, p.proconfig, p.prosrc, (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(p.proacl) x),
              obj_description(p.oid, 'pg_proc'))
  FROM members m JOIN pg_proc p ON p.oid = m.objid WHERE m.classid = 'pg_proc'::regclass
UNION ALL
SELECT format('relation %s kind=%s acl=%s comment=%s', c.oid::regclass, c.relkind, (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(c.relacl) x),
              obj_description(c.oid, 'pg_class'))
  FROM tables t JOIN pg_class c ON c.oid = t.oid
UNION ALL
SELECT format('column %s.%s #%s %s notnull=%s default=%s identity=%s', a.attrelid::regclass, a.attname,
              a.attnum, format_type(a.atttypid, a.atttypmod), a.attnotnull,
              pg_get_expr(ad.adbin, ad.adrelid), a.attidentity)
  FROM tables t JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
UNION ALL
SELECT format('constraint %s on %s: %s', co.conname, co.conrelid::regclass, pg_get_constraintdef(co.oid))
  FROM tables t JOIN pg_constraint co ON co.conrelid = t.oid
UNION ALL
SELECT format('index %s', pg_get_indexdef(i.indexrelid))
  FROM tables t JOIN pg_index i ON i.indrelid = t.oid
UNION ALL
SELECT format('view %s: %s', t.oid::regclass, pg_get_viewdef(t.oid))
  FROM tables t JOIN pg_class c ON c.oid = t.oid WHERE c.relkind = 'v'
UNION ALL
SELECT format('trigger %s', pg_get_triggerdef(tg.oid))
  FROM tables t JOIN pg_trigger tg ON tg.tgrelid = t.oid AND NOT tg.tgisinternal
UNION ALL
SELECT format('event trigger %s on %s runs %s', e.evtname, e.evtevent, e.evtfoid::regproc)
  FROM members m JOIN pg_event_trigger e ON e.oid = m.objid WHERE m.classid = 'pg_event_trigger'::regclass
UNION ALL
SELECT format('schema session_gc acl=%s', (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(n.nspacl) x)) FROM pg_namespace n WHERE n.nspname = 'session_gc'
UNION ALL
SELECT format('dumped configuration %s', ext.extconfig::regclass[]) FROM ext
ORDER BY 1";

fn describe(client: &mut Client) -> Vec<String> {
    column(client, DESCRIBE_OBJECTS)
}

const SESSIONS: &str = "
    CREATE TABLE sessions (id bigserial PRIMARY KEY, expires timestamptz NOT NULL);
    CREATE INDEX ON sessions (expires);
    INSERT INTO sessions (expires) SELECT now() - interval '1 hour' FROM generate_series(1, 50);
    INSERT INTO sessions (expires) SELECT now() + interval '1 hour' FROM generate_series(1, 20);";

#[test]
fn update_from_0_1_0_equals_a_fresh_install_and_keeps_the_data() {
    update_from(PREVIOUS[0]);
}

#[test]
fn update_from_0_2_0_equals_a_fresh_install_and_keeps_the_data() {
    update_from(PREVIOUS[1]);
}

#[test]
fn update_from_0_3_0_equals_a_fresh_install_and_keeps_the_data() {
    update_from(PREVIOUS[2]);
}

#[test]
fn update_from_0_4_0_equals_a_fresh_install_and_keeps_the_data() {
    update_from(PREVIOUS[3]);
}

#[test]
fn update_from_0_5_0_equals_a_fresh_install_and_keeps_the_data() {
    update_from(PREVIOUS[4]);
}

fn update_from((previous, errors_column, old_cleanup): (&str, &str, &str)) {
    let suffix = previous.replace('.', "_");
    let cluster = shared_cluster();
    let mut admin = cluster.connect("postgres");
    let available: i64 = scalar(
        &mut admin,
        &format!(
            "SELECT count(*) FROM pg_available_extension_versions
              WHERE name = 'session_gc' AND version = '{previous}'"
        ),
    );
    assert_eq!(
        available, 1,
        "sql/archive/session_gc--{previous}.sql must be installed (the test command does it)"
    );
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS u_app_{suffix}; CREATE ROLE u_app_{suffix};"
        ))
        .unwrap();
    let app = format!("u_app_{suffix}");

    // A database at the previous release, with a policy, history, totals and a grant.
    let old = cluster.empty_db(&format!("u_old_{suffix}"));
    let mut o = cluster.connect(&old);
    o.batch_execute(&format!(
        "CREATE EXTENSION session_gc VERSION '{previous}';
         {SESSIONS}
         INSERT INTO session_gc.policies (table_name, expires_column, time_zone, batch_size)
              VALUES ('sessions', 'expires', 'UTC', 1000);
         CREATE TABLE eastern (id bigserial PRIMARY KEY, expires timestamp NOT NULL);
         INSERT INTO session_gc.policies (table_name, expires_column, time_zone)
              VALUES ('eastern', 'expires', '{eastern}');
         INSERT INTO session_gc.history (relid, table_name, trigger, status, deleted, expired, batches, finished_at)
              VALUES ('sessions'::regclass, 'sessions', 'worker', 'ok', 120, 120, 1, now()),
                     ('sessions'::regclass, 'sessions', 'manual', 'error', 0, 0, 0, now());
         INSERT INTO session_gc.totals (table_name, runs, deleted_total, last_run, last_deleted, last_status{errors_column})
              VALUES ('sessions', 2, 120, now(), 0, 'error'{errors_value});
         GRANT USAGE ON SCHEMA session_gc TO {app};
         GRANT EXECUTE ON FUNCTION {old_cleanup} TO {app};",
        errors_value = if errors_column.is_empty() { "" } else { ", 1" },
        // Since 0.3.0 register() stores an abbreviation as the offset it stands for.
        eastern = if previous < "0.3.0" { "EST" } else { EASTERN },
    ))
    .unwrap();
    // The current library refuses to work on the old objects, and says what to do.
    for call in [
        "SELECT * FROM session_gc.cleanup()",
        "SELECT * FROM session_gc.stats()",
        "SELECT session_gc.register('sessions', expires_column => 'expires')",
        "SELECT session_gc.unregister('sessions')",
        "CALL session_gc.purge()",
    ] {
        let error = expect_error(&mut o, call);
        assert_eq!(error.code, "55000", "{call}: {}", error.message);
        assert!(
            error
                .hint
                .as_deref()
                .is_some_and(|h| h.contains("ALTER EXTENSION session_gc UPDATE")),
            "{call}: {:?}",
            error.hint
        );
    }
    assert_eq!(count(&mut o, "sessions"), 70, "nothing was deleted");

    o.batch_execute("ALTER EXTENSION session_gc UPDATE")
        .unwrap();
    let version: String = scalar(
        &mut o,
        "SELECT extversion FROM pg_extension WHERE extname = 'session_gc'",
    );
    let cargo =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml")).unwrap();
    assert!(
        cargo.contains(&format!("version = \"{version}\"")),
        "updated to the current version, {version}"
    );

    // The same objects as a fresh install given the same grant.
    let fresh = cluster.fresh_db(&format!("u_fresh_{suffix}"));
    let mut f = cluster.connect(&fresh);
    f.batch_execute(&format!(
        "GRANT USAGE ON SCHEMA session_gc TO {app};
         GRANT EXECUTE ON FUNCTION {CLEANUP} TO {app};"
    ))
    .unwrap();
    let (upgraded, installed) = (describe(&mut o), describe(&mut f));
    let only_upgraded: Vec<&String> = upgraded.iter().filter(|l| !installed.contains(l)).collect();
    let only_fresh: Vec<&String> = installed.iter().filter(|l| !upgraded.contains(l)).collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "objects differ\nonly after the update:\n{}\nonly in a fresh install:\n{}",
        only_upgraded
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        only_fresh
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        upgraded.len() > 50,
        "the description covers the objects: {}",
        upgraded.len()
    );

    // The data survived, and the new counters start from what history knows.
    let policy = o
        .query_one(
            "SELECT expires_column::text, batch_size, strategy, user_column IS NULL
               FROM session_gc.policies WHERE table_name = 'sessions'::regclass",
            &[],
        )
        .unwrap();
    assert_eq!(policy.get::<_, String>(0), "expires");
    assert_eq!(policy.get::<_, Option<i32>>(1), Some(1000));
    assert_eq!(policy.get::<_, String>(2), "delete_rows");
    assert!(policy.get::<_, bool>(3));
    // A zone abbreviation became the fixed offset it stood for.
    let zone: String = scalar(
        &mut o,
        "SELECT time_zone FROM session_gc.policies WHERE table_name = 'eastern'::regclass",
    );
    assert_eq!(zone, EASTERN);
    assert_eq!(count(&mut o, "session_gc.history"), 2);
    let totals = o
        .query_one(
            "SELECT runs, deleted_total, errors_total FROM session_gc.totals",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            totals.get::<_, i64>(0),
            totals.get::<_, i64>(1),
            totals.get::<_, i64>(2)
        ),
        (2, 120, 1)
    );

    // And it works: the grant carried over, the purge deletes the expired rows only.
    let can_execute: bool = scalar(
        &mut o,
        &format!("SELECT has_function_privilege('{app}', '{CLEANUP}', 'EXECUTE')"),
    );
    assert!(can_execute, "{app} keeps EXECUTE on cleanup()");
    // And nothing is executable by PUBLIC, procedures included (0.2.0 left purge() open), but
    // the purge of a Citus shard, which refuses a role without the shard owner's privileges.
    let public_routines: i64 = scalar(
        &mut o,
        "SELECT count(*) FROM pg_proc p
          WHERE p.pronamespace = 'session_gc'::regnamespace
            AND has_function_privilege('public', p.oid, 'EXECUTE')
            AND p.proname NOT IN ('purge_shard', 'purge_shard_step')",
    );
    assert_eq!(public_routines, 0, "routines executable by PUBLIC");
    let deleted: i64 = scalar(
        &mut o,
        "SELECT deleted FROM session_gc.cleanup() WHERE table_name = 'sessions'::regclass",
    );
    assert_eq!(deleted, 50);
    assert_eq!(count(&mut o, "sessions"), 20);
    // The two runs of this cleanup() (one per policy) beside the two written before.
    assert_eq!(count(&mut o, "session_gc.history"), 4);
}
