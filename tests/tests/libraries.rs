//! The real session libraries, through their own APIs: each creates its sessions (expired and
//! live) in a database, which is copied; the library's own cleanup runs on one copy and
//! session_gc, registered as the README's recipe says, on the other. The surviving keys must be
//! identical, and every survivor must still load through the library.
//!
//! The libraries are installed at pinned versions by `scripts/libraries.sh` into the directory
//! `SESSION_GC_LIBRARIES` names (the test command sets it).

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
}

impl Driver {
    fn run(&self, cluster: &Cluster, database: &str, action: &str, keys: &[String]) -> Vec<String> {
        let mut command = match self {
            Driver::Python(file) => {
                let mut c = Command::new(libraries().join("venv/bin/python"));
                c.arg(script(file));
                c
            }
            Driver::Node(file) => {
                let mut c = Command::new("node");
                c.arg(script(file))
                    .env("NODE_PATH", libraries().join("node/node_modules"));
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
