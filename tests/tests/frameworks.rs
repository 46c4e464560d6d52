//! The README's framework recipes, run as written: each store's table as the framework creates
//! it, rows in the framework's own value formats (sessions expired and live, on both sides of
//! the cutoff), the recipe's index and register() call, a purge; then what is left is checked
//! against the framework's own expiry rule. And register() without a rule on each store's
//! table hints a call that, run as given from a session in another zone than the app's, is
//! either refused (a zone only the app knows is left as `:'app_zone'`) or deletes no valid
//! session; so do the hints on the naive variants of stores whose zone is the app's.

use postgres::Client;
use session_gc_integration::{expect_error, scalar, shared_cluster};

/// Seconds from now: far past, around a month, a day, the two hours of Laravel's default, a few
/// minutes, and the same ahead. No value lies within a minute of any rule's cutoff.
const OFFSETS: &str = "ARRAY[-10368000, -2599200, -864000, -86400, -7320, -3600, -600, -120,
                             120, 600, 3600, 7320, 86400, 864000]";

/// One table of a store: how the framework writes its rows (`o`: seconds from now, `n`: a row
/// number, from `unnest(OFFSETS) WITH ORDINALITY`), and when the framework holds a row valid.
struct Table {
    name: &'static str,
    insert: &'static str,
    valid: &'static str,
}

struct Store {
    /// The README heading starts with this.
    heading: &'static str,
    tables: &'static [Table],
}

/// The zone the test's apps write naive times in where the library writes its own local time
/// (what a recipe's `:'app_zone'` is filled in with); no session of the tests runs in it.
const APP_ZONE: &str = "America/Los_Angeles";

/// The placeholder a recipe or hint leaves for a zone only the app knows.
const APP_ZONE_PLACEHOLDER: &str = ":'app_zone'";

fn with_app_zone(sql: &str) -> String {
    sql.replace(APP_ZONE_PLACEHOLDER, &format!("'{APP_ZONE}'"))
}

/// A table shape no README recipe shows, whose naive column holds the app's own zone: the
/// hint must not name a zone for it.
struct NaiveVariant {
    name: &'static str,
    ddl: &'static str,
    table: Table,
}

const NAIVE_VARIANTS: &[NaiveVariant] = &[
    NaiveVariant {
        name: "better_auth_before_1_3_11",
        // Better Auth 1.3.10's migration: "expiresAt" timestamp, written in Node's local zone.
        ddl: "CREATE TABLE \"user\" (id text NOT NULL PRIMARY KEY);
              CREATE TABLE \"session\" (id text NOT NULL PRIMARY KEY, \"expiresAt\" timestamp NOT NULL,
                                         token text NOT NULL UNIQUE, \"updatedAt\" timestamp NOT NULL,
                                         \"userId\" text NOT NULL REFERENCES \"user\" (id))",
        table: table(
            "\"session\"",
            "INSERT INTO \"user\" VALUES ('u1');
             INSERT INTO \"session\" (id, \"expiresAt\", token, \"updatedAt\", \"userId\")
             SELECT 's' || n, (now() AT TIME ZONE 'America/Los_Angeles') + make_interval(secs => o), 't' || n,
                    now() AT TIME ZONE 'America/Los_Angeles', 'u1' FROM rows",
            "\"expiresAt\" > now() AT TIME ZONE 'America/Los_Angeles'",
        ),
    },
    NaiveVariant {
        name: "lucia_naive",
        ddl: "CREATE TABLE auth_user (id text PRIMARY KEY);
              CREATE TABLE user_session (id text PRIMARY KEY, expires_at timestamp NOT NULL,
                                         user_id text NOT NULL REFERENCES auth_user (id))",
        table: table(
            "user_session",
            "INSERT INTO auth_user VALUES ('u1');
             INSERT INTO user_session SELECT 's' || n, (now() AT TIME ZONE 'America/Los_Angeles') + make_interval(secs => o), 'u1' FROM rows",
            "expires_at > now() AT TIME ZONE 'America/Los_Angeles'",
        ),
    },
    NaiveVariant {
        name: "scs_naive",
        ddl: "CREATE TABLE sessions (token text PRIMARY KEY, data bytea NOT NULL, expiry timestamp NOT NULL)",
        table: table(
            "sessions",
            "INSERT INTO sessions SELECT 'token' || n, '\\x00', (now() AT TIME ZONE 'America/Los_Angeles') + make_interval(secs => o) FROM rows",
            "expiry > now() AT TIME ZONE 'America/Los_Angeles'",
        ),
    },
    NaiveVariant {
        name: "django_naive",
        ddl: "CREATE TABLE django_session (session_key varchar(40) NOT NULL PRIMARY KEY,
                                           session_data text NOT NULL, expire_date timestamp NOT NULL)",
        table: table(
            "django_session",
            "INSERT INTO django_session SELECT 'key' || n, 'data', (now() AT TIME ZONE 'America/Los_Angeles') + make_interval(secs => o) FROM rows",
            "expire_date > now() AT TIME ZONE 'America/Los_Angeles'",
        ),
    },
];

const fn table(name: &'static str, insert: &'static str, valid: &'static str) -> Table {
    Table {
        name,
        insert,
        valid,
    }
}

const STORES: &[Store] = &[
    Store {
        heading: "Django",
        tables: &[table(
            "django_session",
            "INSERT INTO django_session SELECT 'key' || n, 'data', now() + make_interval(secs => o) FROM rows",
            "expire_date > now()",
        )],
    },
    Store {
        heading: "Flask-Session",
        tables: &[table(
            "sessions",
            "INSERT INTO sessions (session_id, data, expiry)
             SELECT 'session:' || n, '\\x00', (now() AT TIME ZONE 'UTC') + make_interval(secs => o) FROM rows",
            "expiry > now() AT TIME ZONE 'UTC'",
        )],
    },
    Store {
        heading: "express-session",
        // Written by the app's connection, whose TimeZone is America/Los_Angeles (APP_ZONE).
        tables: &[table(
            "\"session\"",
            "SET TimeZone = 'America/Los_Angeles';
             INSERT INTO \"session\" SELECT 'sid' || n, '{}', to_timestamp(extract(epoch FROM now()) + o) FROM rows;
             SET TimeZone = 'Asia/Tokyo'",
            "expire >= now() AT TIME ZONE 'America/Los_Angeles'",
        )],
    },
    Store {
        heading: "Auth.js / NextAuth, pg adapter",
        tables: &[
            table(
                "sessions",
                "INSERT INTO sessions (\"userId\", expires, \"sessionToken\")
                 SELECT 1, now() + make_interval(secs => o), 'token' || n FROM rows",
                "expires > now()",
            ),
            table(
                "verification_token",
                "INSERT INTO verification_token SELECT 'user@example.com', now() + make_interval(secs => o), 'token' || n FROM rows",
                "expires > now()",
            ),
        ],
    },
    Store {
        heading: "Auth.js / NextAuth, Prisma adapter",
        tables: &[
            table(
                "\"Session\"",
                "INSERT INTO \"User\" VALUES ('u1') ON CONFLICT DO NOTHING;
                 INSERT INTO \"Session\" (\"sessionToken\", \"userId\", expires, \"updatedAt\")
                 SELECT 'token' || n, 'u1', (now() AT TIME ZONE 'UTC') + make_interval(secs => o), now() AT TIME ZONE 'UTC' FROM rows",
                "expires > now() AT TIME ZONE 'UTC'",
            ),
            table(
                "\"VerificationToken\"",
                "INSERT INTO \"VerificationToken\"
                 SELECT 'user@example.com', 'token' || n, (now() AT TIME ZONE 'UTC') + make_interval(secs => o) FROM rows",
                "expires > now() AT TIME ZONE 'UTC'",
            ),
        ],
    },
    Store {
        heading: "Better Auth",
        tables: &[table(
            "\"session\"",
            "INSERT INTO \"user\" VALUES ('u1');
             INSERT INTO \"session\" (id, \"expiresAt\", token, \"updatedAt\", \"userId\")
             SELECT 's' || n, now() + make_interval(secs => o), 't' || n, now(), 'u1' FROM rows",
            "\"expiresAt\" > now()",
        )],
    },
    Store {
        heading: "Lucia",
        tables: &[table(
            "user_session",
            "INSERT INTO auth_user VALUES ('u1');
             INSERT INTO user_session SELECT 's' || n, now() + make_interval(secs => o), 'u1' FROM rows",
            "expires_at > now()",
        )],
    },
    Store {
        heading: "Rails",
        tables: &[table(
            "sessions",
            "INSERT INTO sessions (session_id, data, created_at, updated_at)
             SELECT 's' || n, 'data', (now() AT TIME ZONE 'UTC') + make_interval(secs => o) - interval '1 day',
                    (now() AT TIME ZONE 'UTC') + make_interval(secs => o) FROM rows",
            // What db:sessions:trim keeps.
            "updated_at >= (now() AT TIME ZONE 'UTC') - interval '30 days'",
        )],
    },
    Store {
        heading: "Laravel",
        tables: &[table(
            "sessions",
            "INSERT INTO sessions (id, payload, last_activity)
             SELECT 's' || n, 'payload', extract(epoch FROM now())::int + o FROM rows",
            // Laravel's read: last_activity within SESSION_LIFETIME (120 minutes) of now.
            "last_activity > extract(epoch FROM now())::int - 120 * 60",
        )],
    },
    Store {
        heading: "Symfony",
        tables: &[table(
            "sessions",
            "INSERT INTO sessions SELECT 's' || n, '\\x00', extract(epoch FROM now())::int + o,
                                         extract(epoch FROM now())::int FROM rows",
            "sess_lifetime >= extract(epoch FROM now())",
        )],
    },
    Store {
        heading: "Spring Session JDBC",
        tables: &[table(
            "spring_session",
            "INSERT INTO spring_session
             SELECT lpad(n::text, 36, '0'), lpad(n::text, 36, 'x'), 0, 0, 1800,
                    (extract(epoch FROM now()) * 1000)::bigint + o::bigint * 1000, NULL FROM rows;
             INSERT INTO spring_session_attributes SELECT primary_id, 'cart', '\\x00' FROM spring_session",
            "expiry_time >= (extract(epoch FROM now()) * 1000)::bigint",
        )],
    },
    Store {
        heading: "Go `scs`",
        tables: &[table(
            "sessions",
            "INSERT INTO sessions SELECT 'token' || n, '\\x00', now() + make_interval(secs => o) FROM rows",
            "expiry > now()",
        )],
    },
    Store {
        heading: "Phoenix",
        tables: &[table(
            "users_tokens",
            // 37 s older than the offsets: one falls on reset_password's validity of one day.
            "INSERT INTO users VALUES (1);
             INSERT INTO users_tokens (user_id, token, context, inserted_at)
             SELECT 1, ('\\x' || lpad(to_hex(n * 10 + c), 8, '0'))::bytea, context,
                    (now() AT TIME ZONE 'UTC') + make_interval(secs => o - 37)
               FROM rows, unnest(ARRAY['session', 'confirm', 'reset_password', 'change:a@b.c'])
                    WITH ORDINALITY k(context, c)",
            // Phoenix 1.7's UserToken validity per context.
            "inserted_at > (now() AT TIME ZONE 'UTC') - CASE context
                 WHEN 'session' THEN interval '60 days'
                 WHEN 'reset_password' THEN interval '1 day'
                 ELSE interval '7 days' END",
        )],
    },
];

/// A recipe from the README: the framework's DDL, then what the user runs.
struct Recipe {
    ddl: String,
    setup: String,
}

/// The README's "Frameworks" section.
fn frameworks_section() -> String {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .expect("README.md");
    readme
        .split("\n## Frameworks\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Frameworks section")
        .to_string()
}

fn readme_recipe(heading: &str) -> Recipe {
    let section = frameworks_section();
    let recipe = section
        .split("\n### ")
        .skip(1)
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no README recipe headed {heading}"));
    let blocks: Vec<&str> = recipe
        .split("```sql\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or(""))
        .collect();
    assert_eq!(blocks.len(), 2, "{heading}: the table, then the recipe");
    Recipe {
        ddl: blocks[0].to_string(),
        setup: blocks[1].to_string(),
    }
}

/// Runs statements one by one: CREATE INDEX CONCURRENTLY cannot share a transaction.
fn run_each(c: &mut Client, sql: &str) {
    for statement in sql.split(";\n").map(str::trim).filter(|s| {
        s.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
    }) {
        c.batch_execute(statement)
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

fn database_for(heading: &str, suffix: &str) -> Client {
    let cluster = shared_cluster();
    let name: String = heading
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_lowercase();
    let db = cluster.fresh_db(&format!("fw_{name}_{suffix}"));
    let mut c = cluster.connect(&db);
    // A zone no store writes in: a recipe that leaned on the session's zone would show.
    c.batch_execute("SET TimeZone = 'Asia/Tokyo'").unwrap();
    c
}

fn purge_matches_the_framework(store: &Store) {
    let recipe = readme_recipe(store.heading);
    let mut c = database_for(store.heading, "recipe");
    run_each(&mut c, &recipe.ddl);
    if recipe.setup.contains(APP_ZONE_PLACEHOLDER) {
        // As written (without psql's \set) the call is refused, never run in a wrong zone.
        let register = recipe
            .setup
            .split(";\n")
            .find(|s| s.contains(APP_ZONE_PLACEHOLDER))
            .unwrap_or_default();
        let error = expect_error(&mut c, register);
        assert_eq!(error.code, "42601", "{register}: {error:?}");
    }
    run_each(&mut c, &with_app_zone(&recipe.setup));
    purge_keeps_every_valid_session(&mut c, store.heading, store.tables, true);
}

/// Writes each table's rows as its framework does, purges, and checks that no session the
/// framework holds valid was deleted; with `all_expired_go`, also that every expired one was.
fn purge_keeps_every_valid_session(
    c: &mut Client,
    heading: &str,
    tables: &[Table],
    all_expired_go: bool,
) {
    for (i, table) in tables.iter().enumerate() {
        c.batch_execute(&format!(
            "CREATE TEMP VIEW rows AS SELECT o, n FROM unnest({OFFSETS}) WITH ORDINALITY t(o, n);
             {};
             DROP VIEW rows;",
            table.insert
        ))
        .unwrap_or_else(|e| panic!("{}: {e:?}", table.name));
        // The rows valid now, kept aside: a row the framework holds valid may expire while the
        // test runs (a context's validity can fall on an offset), so counts would not compare.
        c.batch_execute(&format!(
            "CREATE TEMP TABLE valid_{i} AS SELECT r::text AS r FROM {} r WHERE {}",
            table.name, table.valid
        ))
        .unwrap_or_else(|e| panic!("{}: {e:?}", table.name));
        let valid: i64 = scalar(c, &format!("SELECT count(*) FROM valid_{i}"));
        let total: i64 = scalar(c, &format!("SELECT count(*) FROM {}", table.name));
        assert!(
            valid > 0 && valid < total,
            "{}: both kinds of rows",
            table.name
        );
    }
    let deleted: i64 = scalar(c, "SELECT sum(deleted)::int8 FROM session_gc.cleanup()");
    assert!(deleted > 0, "{heading}: the purge deleted");
    for (i, table) in tables.iter().enumerate() {
        let deleted_valid: i64 = scalar(
            c,
            &format!(
                "SELECT count(*) FROM (SELECT r FROM valid_{i} EXCEPT ALL SELECT r::text FROM {} r) gone",
                table.name
            ),
        );
        assert_eq!(deleted_valid, 0, "{}: no valid session deleted", table.name);
        if !all_expired_go {
            continue;
        }
        let valid: i64 = scalar(
            c,
            &format!("SELECT count(*) FROM {} WHERE {}", table.name, table.valid),
        );
        let left: i64 = scalar(c, &format!("SELECT count(*) FROM {}", table.name));
        assert_eq!(left, valid, "{}: every expired session purged", table.name);
    }
    if heading == "Spring Session JDBC" {
        let orphans: i64 = scalar(
            c,
            "SELECT count(*) FROM spring_session_attributes a
              WHERE NOT EXISTS (SELECT FROM spring_session s WHERE s.primary_id = a.session_primary_id)",
        );
        let attributes: i64 = scalar(c, "SELECT count(*) FROM spring_session_attributes");
        let sessions: i64 = scalar(c, "SELECT count(*) FROM spring_session");
        assert_eq!((orphans, attributes), (0, sessions), "attributes cascade");
    }
}

/// register() with no rule on each table: the hint names the store and a call. Run as given
/// from this session (in a zone the app does not write in), the call is refused where the
/// hint leaves the zone to the app, and filled in then it registers; either way the purge that
/// follows deletes no session the framework holds valid.
fn hint_is_refused_or_harmless(heading: &str, ddl: &str, tables: &[Table]) {
    let mut c = database_for(heading, "hint");
    run_each(&mut c, ddl);
    for table in tables {
        let error = expect_error(
            &mut c,
            &format!("SELECT session_gc.register($${}$$)", table.name),
        );
        assert_eq!(error.code, "22023", "{error:?}");
        let hint = error.hint.unwrap_or_default();
        assert!(hint.contains("This looks like the table of"), "{hint}");
        let call = hint
            .split_once("SELECT session_gc.register(")
            .and_then(|(_, rest)| rest.split_once(");"))
            .map(|(arguments, _)| format!("SELECT session_gc.register({arguments})"))
            .unwrap_or_else(|| panic!("no call in: {hint}"));
        if call.contains(APP_ZONE_PLACEHOLDER) {
            let error = expect_error(&mut c, &call);
            assert_eq!(error.code, "42601", "{call}: refused as given: {error:?}");
            assert!(
                hint.contains("no zone is guessed"),
                "the hint says where to read the zone: {hint}"
            );
        }
        c.batch_execute(&with_app_zone(&call))
            .unwrap_or_else(|e| panic!("{call}: {e}"));
    }
    purge_keeps_every_valid_session(&mut c, heading, tables, false);
}

fn hint_of_the_readme_table(store: &Store) {
    let recipe = readme_recipe(store.heading);
    hint_is_refused_or_harmless(store.heading, &recipe.ddl, store.tables);
}

/// The stores whose naive column holds the app's zone, in the shapes no recipe shows.
#[test]
fn hints_on_naive_tables_in_the_apps_zone_are_refused_or_harmless() {
    for variant in NAIVE_VARIANTS {
        hint_is_refused_or_harmless(
            variant.name,
            variant.ddl,
            std::slice::from_ref(&variant.table),
        );
    }
}

macro_rules! recipe_tests {
    ($($test:ident, $hint_test:ident => $heading:expr;)*) => {$(
        #[test]
        fn $test() {
            purge_matches_the_framework(store($heading));
        }

        #[test]
        fn $hint_test() {
            hint_of_the_readme_table(store($heading));
        }
    )*};
}

fn store(heading: &str) -> &'static Store {
    STORES
        .iter()
        .find(|s| s.heading == heading)
        .expect("a store")
}

recipe_tests! {
    django, django_hint => "Django";
    flask_session, flask_session_hint => "Flask-Session";
    connect_pg_simple, connect_pg_simple_hint => "express-session";
    authjs_pg, authjs_pg_hint => "Auth.js / NextAuth, pg adapter";
    authjs_prisma, authjs_prisma_hint => "Auth.js / NextAuth, Prisma adapter";
    better_auth, better_auth_hint => "Better Auth";
    lucia, lucia_hint => "Lucia";
    rails, rails_hint => "Rails";
    laravel, laravel_hint => "Laravel";
    symfony, symfony_hint => "Symfony";
    spring_session, spring_session_hint => "Spring Session JDBC";
    scs, scs_hint => "Go `scs`";
    phoenix, phoenix_hint => "Phoenix";
}

/// Every README recipe has a test, and every test a recipe.
#[test]
fn every_recipe_in_the_readme_is_tested() {
    let section = frameworks_section();
    let headings: Vec<&str> = section
        .split("\n### ")
        .skip(1)
        .map(|s| s.lines().next().unwrap_or(""))
        .collect();
    assert_eq!(headings.len(), STORES.len(), "{headings:?}");
    for heading in headings {
        assert!(
            STORES.iter().any(|s| heading.starts_with(s.heading)),
            "README recipe without a test: {heading}"
        );
    }
}
