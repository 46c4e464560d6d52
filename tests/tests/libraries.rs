//! The real session libraries, through their own APIs: each creates its sessions (expired and
//! live) in a database, which is copied; the library's own cleanup runs on one copy and
//! session_gc, registered as the README's recipe says, on the other. The surviving keys must be
//! identical, and every survivor must still load through the library.
//!
//! The Python and Node.js libraries are installed at pinned versions by `scripts/libraries.sh`
//! into the directory `SESSION_GC_LIBRARIES` names (the test command sets it); the PHP ones
//! (Symfony 5.4, Laravel 8.83) are Debian bookworm's packages, which `scripts/setup.sh`
//! installs outside the trixie root: the test command sets `SESSION_GC_PHP=1` where they are.

use session_gc_integration::{shared_cluster, Cluster};
use std::path::PathBuf;
use std::process::Command;

fn libraries() -> PathBuf {
    PathBuf::from(std::env::var("SESSION_GC_LIBRARIES").expect(
        "SESSION_GC_LIBRARIES: the directory scripts/libraries.sh installed the libraries into",
    ))
}

fn script(name: &str) -> String {
    format!("{}/libraries/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// How to run one library's driver script.
enum Driver {
    Python(&'static str),
    Node(&'static str),
    /// A Node.js driver with its environment: (file, [(name, value)]).
    NodeWith(&'static str, &'static [(&'static str, &'static str)]),
    Php(&'static str),
}

/// The command of a Node.js driver, with its environment.
fn node(file: &str, environment: &[(&str, &str)]) -> Command {
    let mut c = Command::new("node");
    c.arg(script(file))
        .env("NODE_PATH", libraries().join("node/node_modules"))
        .envs(environment.iter().copied());
    c
}

/// Whether this run has the PHP libraries (Debian bookworm's packages, outside the trixie root);
/// says so when it has not.
fn php_libraries_here() -> bool {
    let here = std::env::var("SESSION_GC_PHP").is_ok_and(|v| v == "1");
    if !here {
        eprintln!("skipped: SESSION_GC_PHP is not 1 (Debian bookworm's PHP packages are outside the trixie root)");
    }
    here
}

impl Driver {
    fn run(&self, cluster: &Cluster, database: &str, action: &str, keys: &[String]) -> Vec<String> {
        let mut command = match self {
            Driver::Python(file) => {
                let mut c = Command::new(libraries().join("venv/bin/python"));
                c.arg(script(file));
                c
            }
            Driver::Node(file) => node(file, &[]),
            Driver::NodeWith(file, environment) => node(file, environment),
            Driver::Php(file) => {
                let mut c = Command::new("php");
                c.arg(script(file));
                c
            }
        };
        let output = command
            .arg(cluster.dir.to_str().unwrap())
            .arg(cluster.port.to_string())
            .arg(database)
            .arg(action)
            .args(keys)
            .output()
            .expect("the driver runs");
        assert!(
            output.status.success(),
            "{action}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let last = stdout.lines().last().unwrap_or("[]");
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{action}: {e}: {stdout}"))
    }
}

/// The library's cleanup on one copy, session_gc on the other: the same keys survive.
fn same_survivors(
    name: &str,
    driver: Driver,
    cleanup: &str,
    app_time_zone: &str,
    register: &str,
    keys_query: &str,
) {
    let cluster = shared_cluster();
    let theirs = cluster.fresh_db(&format!("lib_{name}_theirs"));
    let ours = format!("lib_{name}_ours");
    let mut admin = cluster.connect("postgres");
    // The app's connections run in this zone (what the library writes naive times in).
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {theirs} SET TimeZone = '{app_time_zone}'"
        ))
        .unwrap();
    let keys = driver.run(cluster, &theirs, "create", &[]);
    assert!(keys.len() >= 60, "{keys:?}");
    // One statement each: CREATE DATABASE cannot share a transaction.
    for statement in [
        format!("DROP DATABASE IF EXISTS {ours}"),
        format!("CREATE DATABASE {ours} TEMPLATE {theirs}"),
        format!("ALTER DATABASE {ours} SET TimeZone = '{app_time_zone}'"),
    ] {
        admin.batch_execute(&statement).unwrap();
    }
    driver.run(cluster, &theirs, cleanup, &[]);
    let mut c = cluster.connect(&ours);
    // Registered from a session in a zone no library writes in.
    c.batch_execute("SET TimeZone = 'Asia/Tokyo'").unwrap();
    c.batch_execute(register).unwrap();
    c.batch_execute("SELECT * FROM session_gc.cleanup()")
        .unwrap();
    let survivors = |client: &mut postgres::Client| -> Vec<String> {
        client
            .query(keys_query, &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let ours_left = survivors(&mut c);
    let theirs_left = survivors(&mut cluster.connect(&theirs));
    assert_eq!(ours_left, theirs_left, "the same sessions survive");
    assert!(
        !ours_left.is_empty() && ours_left.len() < keys.len(),
        "{name}: some purged, some kept"
    );
    let loaded = driver.run(cluster, &ours, "load", &ours_left);
    assert_eq!(
        loaded, ours_left,
        "every survivor loads through the library"
    );
}

#[test]
fn django_clearsessions_and_session_gc_keep_the_same_sessions() {
    same_survivors(
        "django",
        Driver::Python("django_sessions.py"),
        "clear",
        "UTC",
        "SELECT session_gc.register('django_session', expires_column => 'expire_date')",
        "SELECT session_key::text FROM django_session ORDER BY 1",
    );
}

#[test]
fn connect_pg_simple_pruning_and_session_gc_keep_the_same_sessions() {
    same_survivors(
        "connect_pg_simple",
        Driver::Node("connect_pg_simple.js"),
        "prune",
        "America/New_York",
        "SELECT session_gc.register('session', expires_column => 'expire', time_zone => 'America/New_York')",
        "SELECT sid::text FROM session ORDER BY 1",
    );
}

#[test]
fn flask_session_cleanup_and_session_gc_keep_the_same_sessions() {
    // Flask-Session writes naive UTC whatever the connection's zone.
    same_survivors(
        "flask_session",
        Driver::Python("flask_sessions.py"),
        "clear",
        "America/New_York",
        "SELECT session_gc.register('sessions', expires_column => 'expiry', time_zone => 'UTC')",
        "SELECT session_id::text FROM sessions ORDER BY 1",
    );
}

#[test]
fn authjs_presenting_every_session_and_session_gc_keep_the_same_sessions() {
    // Auth.js has no cleanup of its own: it deletes an expired session when it is presented.
    same_survivors(
        "authjs_pg",
        Driver::Node("authjs_pg.mjs"),
        "present",
        "UTC",
        "SELECT session_gc.register('sessions', expires_column => 'expires')",
        "SELECT \"sessionToken\"::text FROM sessions ORDER BY 1",
    );
}

#[test]
fn symfony_pdo_session_handler_gc_and_session_gc_keep_the_same_sessions() {
    if !php_libraries_here() {
        return;
    }
    same_survivors(
        "symfony",
        Driver::Php("symfony_sessions.php"),
        "gc",
        "America/Los_Angeles",
        "SELECT session_gc.register('sessions', expires_column => 'sess_lifetime', epoch_unit => 's')",
        "SELECT sess_id::text FROM sessions ORDER BY 1",
    );
}

#[test]
fn laravel_database_session_handler_gc_and_session_gc_keep_the_same_sessions() {
    if !php_libraries_here() {
        return;
    }
    same_survivors(
        "laravel",
        Driver::Php("laravel_sessions.php"),
        "gc",
        "America/Los_Angeles",
        "SELECT session_gc.register('sessions', idle_column => 'last_activity', idle_timeout => '120 minutes', epoch_unit => 's')",
        "SELECT id::text FROM sessions ORDER BY 1",
    );
}

/// Better Auth 1.3.10 makes "expiresAt" a naive timestamp and writes the Node process's local
/// time into it (here New York, while the database's connections run in Los Angeles): the
/// recipe passes the process's zone.
#[test]
fn better_auth_1_3_10_presenting_every_session_and_session_gc_keep_the_same_sessions() {
    same_survivors(
        "better_auth_1_3_10",
        Driver::NodeWith(
            "better_auth.mjs",
            &[("BETTER_AUTH_PACKAGE", "better-auth-1-3-10"), ("TZ", "America/New_York")],
        ),
        "present",
        "America/Los_Angeles",
        "SELECT session_gc.register('\"session\"', expires_column => 'expiresAt', time_zone => 'America/New_York')",
        "SELECT token FROM \"session\" ORDER BY 1",
    );
}

/// The current Better Auth makes "expiresAt" timestamptz: no zone.
#[test]
fn better_auth_current_presenting_every_session_and_session_gc_keep_the_same_sessions() {
    same_survivors(
        "better_auth_current",
        Driver::NodeWith(
            "better_auth.mjs",
            &[
                ("BETTER_AUTH_PACKAGE", "better-auth-current"),
                ("TZ", "America/New_York"),
            ],
        ),
        "present",
        "America/Los_Angeles",
        "SELECT session_gc.register('\"session\"', expires_column => 'expiresAt')",
        "SELECT token FROM \"session\" ORDER BY 1",
    );
}
