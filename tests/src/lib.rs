//! A harness for client-driven tests: throwaway PostgreSQL clusters run by the unprivileged
//! `postgres` user, one database per test, and helpers to read errors and notices.
//!
//! `SESSION_GC_PG_BIN` names the server's bin directory (default: Debian's PostgreSQL 15).
//! The extension must already be installed into that server (`cargo pgrx install`).

use postgres::{Client, Config, NoTls};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub fn pg_bin() -> PathBuf {
    PathBuf::from(std::env::var("SESSION_GC_PG_BIN").unwrap_or_else(|_| DEFAULT_PG_BIN.into()))
}

/// The user clusters run as: PostgreSQL refuses to run as root.
const CLUSTER_USER: &str = "postgres";

static CLUSTERS_TO_STOP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

extern "C" fn stop_all_clusters() {
    let dirs = CLUSTERS_TO_STOP
        .lock()
        .map(|d| d.clone())
        .unwrap_or_default();
    for dir in dirs {
        let _ = run_as_cluster_user(&[
            pg_bin().join("pg_ctl").to_str().unwrap_or("pg_ctl"),
            "stop",
            "-D",
            dir.join("data").to_str().unwrap_or(""),
            "-m",
            "immediate",
            "-w",
        ]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn run_as_cluster_user(args: &[&str]) -> std::io::Result<std::process::Output> {
    let running_as_root = unsafe { libc::geteuid() } == 0;
    if running_as_root {
        Command::new("runuser")
            .arg("-u")
            .arg(CLUSTER_USER)
            .arg("--")
            .args(args)
            .output()
    } else {
        Command::new(args[0]).args(&args[1..]).output()
    }
}

fn must(output: std::io::Result<std::process::Output>, what: &str) {
    match output {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{what} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("{what} could not start: {e}"),
    }
}

/// A running throwaway cluster. Stopped when the test process exits.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

impl Cluster {
    /// Creates and starts a cluster with extra `postgresql.conf` lines.
    pub fn start(name: &str, conf: &[&str]) -> Cluster {
        let base = std::env::temp_dir().join("session_gc_tests");
        let dir = base.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        chown_to_cluster_user(&base);
        chown_to_cluster_user(&dir);
        let data = dir.join("data");
        must(
            run_as_cluster_user(&[
                pg_bin().join("initdb").to_str().unwrap(),
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                CLUSTER_USER,
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]),
            "initdb",
        );
        let port = free_port();
        let mut lines = vec![
            format!("port = {port}"),
            "listen_addresses = ''".to_string(),
            format!("unix_socket_directories = '{}'", dir.display()),
            "fsync = off".into(),
            "synchronous_commit = off".into(),
            "full_page_writes = off".into(),
            "max_connections = 60".into(),
            // cleanup() purges from a background worker: room for the tests running at once.
            "max_worker_processes = 32".into(),
            "log_min_messages = warning".into(),
        ];
        lines.extend(conf.iter().map(|l| l.to_string()));
        append_conf(&data, &lines);
        let cluster = Cluster {
            dir: dir.clone(),
            port,
        };
        {
            let mut dirs = CLUSTERS_TO_STOP.lock().unwrap();
            if dirs.is_empty() {
                unsafe { libc::atexit(stop_all_clusters) };
            }
            dirs.push(dir);
        }
        cluster.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            cluster.log_path().to_str().unwrap(),
        ]);
        cluster
    }

    /// A streaming replica of `primary`, made by pg_basebackup and started in recovery.
    pub fn replica_of(primary: &Cluster, name: &str, conf: &[&str]) -> Cluster {
        let base = std::env::temp_dir().join("session_gc_tests");
        let dir = base.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create replica dir");
        chown_to_cluster_user(&dir);
        let data = dir.join("data");
        let port = primary.port.to_string();
        must(
            run_as_cluster_user(&[
                pg_bin().join("pg_basebackup").to_str().unwrap(),
                "-h",
                primary.dir.to_str().unwrap(),
                "-p",
                &port,
                "-U",
                CLUSTER_USER,
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ]),
            "pg_basebackup",
        );
        let port = free_port();
        let mut lines = vec![
            format!("port = {port}"),
            format!("unix_socket_directories = '{}'", dir.display()),
        ];
        lines.extend(conf.iter().map(|l| l.to_string()));
        append_conf(&data, &lines);
        CLUSTERS_TO_STOP.lock().unwrap().push(dir.clone());
        let replica = Cluster { dir, port };
        replica.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            replica.log_path().to_str().unwrap(),
        ]);
        replica
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn pg_ctl(&self, args: &[&str]) {
        let data = self.data_dir();
        let mut all = vec![
            pg_bin().join("pg_ctl").to_string_lossy().into_owned(),
            "-D".into(),
        ];
        all.push(data.to_string_lossy().into_owned());
        all.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        must(
            run_as_cluster_user(&refs),
            &format!("pg_ctl {}", args.join(" ")),
        );
    }

    pub fn config(&self, dbname: &str) -> Config {
        let mut config = Config::new();
        config
            .host_path(&self.dir)
            .port(self.port)
            .user(CLUSTER_USER)
            .dbname(dbname)
            .application_name("session_gc_tests")
            .connect_timeout(Duration::from_secs(20));
        config
    }

    pub fn connect(&self, dbname: &str) -> Client {
        self.config(dbname).connect(NoTls).expect("connect")
    }

    /// Connects and collects every notice and warning the server sends.
    pub fn connect_with_notices(&self, dbname: &str) -> (Client, Arc<Mutex<Vec<Notice>>>) {
        let notices = Arc::new(Mutex::new(Vec::new()));
        let sink = notices.clone();
        let mut config = self.config(dbname);
        config.notice_callback(move |n| {
            if let Ok(mut all) = sink.lock() {
                all.push(Notice {
                    severity: n.severity().to_string(),
                    message: n.message().to_string(),
                    detail: n.detail().map(str::to_string),
                    hint: n.hint().map(str::to_string),
                });
            }
        });
        (config.connect(NoTls).expect("connect"), notices)
    }

    /// A fresh database with the extension created in it.
    pub fn fresh_db(&self, name: &str) -> String {
        self.empty_db(name);
        let mut client = self.connect(name);
        client.batch_execute("CREATE EXTENSION session_gc").unwrap();
        name.to_string()
    }

    /// A fresh database without the extension.
    pub fn empty_db(&self, name: &str) -> String {
        let mut admin = self.connect("postgres");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        name.to_string()
    }
}

#[derive(Debug, Clone)]
pub struct Notice {
    pub severity: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

/// Appends settings to a cluster's postgresql.conf (later lines win).
fn append_conf(data: &Path, lines: &[String]) {
    let conf_path = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
    text.push('\n');
    text.push_str(&lines.join("\n"));
    text.push('\n');
    std::fs::write(&conf_path, text).expect("write postgresql.conf");
}

fn chown_to_cluster_user(path: &Path) {
    if unsafe { libc::geteuid() } == 0 {
        let _ = Command::new("chown").arg(CLUSTER_USER).arg(path).output();
    }
}

fn free_port() -> u16 {
    let offset = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
    let base = 20000 + (std::process::id() % 2000) as u16 * 10;
    for candidate in 0..2000u16 {
        let port = base.wrapping_add(offset as u16).wrapping_add(candidate * 7) % 30000 + 20000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && !Path::new(&format!("/tmp/.s.PGSQL.{port}")).exists()
        {
            return port;
        }
    }
    panic!("no free port");
}

/// The cluster shared by the tests of one test binary (each test uses its own database).
pub fn shared_cluster() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| Cluster::start("shared", &[]))
}

/// A server error's parts, for asserting on SQLSTATE, detail and hint.
#[derive(Debug)]
pub struct ServerError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

/// Runs `sql`, expecting it to fail; returns the error's parts.
pub fn expect_error(client: &mut Client, sql: &str) -> ServerError {
    match client.batch_execute(sql) {
        Ok(()) => panic!("expected an error from: {sql}"),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("not a server error: {e}"));
            ServerError {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
            }
        }
    }
}

/// Polls `condition` until it holds or `deadline` passes; never a fixed sleep.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {deadline:?} waiting for: {what}");
}

/// A one-value query.
pub fn scalar<T>(client: &mut Client, sql: &str) -> T
where
    T: for<'a> postgres::types::FromSql<'a>,
{
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The first column of every row a query returns.
pub fn column<T>(client: &mut Client, sql: &str) -> Vec<T>
where
    T: for<'a> postgres::types::FromSql<'a>,
{
    client
        .query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `SELECT count(*) FROM <from_where>`.
pub fn count(client: &mut Client, from_where: &str) -> i64 {
    scalar(client, &format!("SELECT count(*) FROM {from_where}"))
}

/// One row of `session_gc.cleanup(...)`, for a call that purges one table.
#[derive(Debug, Clone)]
pub struct CleanupRow {
    pub deleted: i64,
    pub expired: i64,
    pub idle: i64,
    pub aged: i64,
    pub inactive: i64,
    pub over_cap: i64,
    pub partitions_dropped: i32,
    pub batches: i32,
    pub status: String,
}

/// Calls `session_gc.cleanup(args)` and reads its one row.
pub fn cleanup_row(client: &mut Client, args: &str) -> CleanupRow {
    let row = client
        .query_one(
            &format!(
                "SELECT deleted, expired, idle, aged, inactive, over_cap, partitions_dropped,
                        batches, status
                   FROM session_gc.cleanup({args})"
            ),
            &[],
        )
        .unwrap_or_else(|e| panic!("cleanup({args}): {e}"));
    CleanupRow {
        deleted: row.get(0),
        expired: row.get(1),
        idle: row.get(2),
        aged: row.get(3),
        inactive: row.get(4),
        over_cap: row.get(5),
        partitions_dropped: row.get(6),
        batches: row.get(7),
        status: row.get(8),
    }
}
