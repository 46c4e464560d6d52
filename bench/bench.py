#!/usr/bin/env python3
"""session_gc benchmark: purge methods side by side on identical copies of a session table.

Per method, three runs on a fresh copy of the same table:
  A. no load: purge throughput, WAL per deleted row, table size after the purge and after
     VACUUM, the longest purge transaction;
  B. under a fixed-rate pgbench application load: application latency before/during the purge,
     failed transactions, the longest lock wait the application saw;
  C. under the same load, with a DELETE trigger counting deleted rows whose expiry was still in
     the future when they were deleted (sessions the load had just extended). Untimed.
Plus stats() against count(*) on the full table, and the drop_partitions strategy against a
single DELETE on a range-partitioned copy. Run through bench/run, which installs things.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
# The server: --pg-bin (bench/run passes the chosen major's); Debian's 15 by default.
PG_BIN = Path("/usr/lib/postgresql/15/bin")
METHODS = ["single_delete", "pg_cron", "batch_loop", "session_gc_worker", "session_gc_manual",
           "session_gc_cleanup"]
LABELS = {
    "single_delete": "single DELETE",
    "pg_cron": "pg_cron running that DELETE",
    "batch_loop": "client batch loop (1,000 ids)",
    "session_gc_worker": "session_gc worker (defaults)",
    "session_gc_manual": "session_gc CALL purge()",
    "session_gc_cleanup": "session_gc cleanup() in the app's transaction",
}


def as_postgres(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


class Cluster:
    def __init__(self, workdir: Path, port: int, wal_dir: Path | None = None):
        self.dir, self.port, self.wal_dir = workdir, port, wal_dir
        self.data = workdir / "data"

    def create(self, conf_lines):
        def owned_by_postgres(directory):
            if os.geteuid() == 0:
                subprocess.run(["chown", "postgres", str(directory)], check=True)

        subprocess.run(["rm", "-rf", str(self.dir)], check=True)
        self.dir.mkdir(parents=True)
        owned_by_postgres(self.dir)
        if self.wal_dir:
            # Only a WAL directory of an earlier run is removed: anything else in it is refused.
            others = [e.name for e in self.wal_dir.iterdir() if e.name != "pg_wal"] if self.wal_dir.exists() else []
            if others:
                raise SystemExit(f"--wal-dir {self.wal_dir} holds other files than pg_wal ({', '.join(others[:3])}): "
                                 "give an empty or new directory")
            subprocess.run(["rm", "-rf", str(self.wal_dir / "pg_wal")], check=True)
            self.wal_dir.mkdir(parents=True, exist_ok=True)
            owned_by_postgres(self.wal_dir)
        waldir = ["--waldir", str(self.wal_dir / "pg_wal")] if self.wal_dir else []
        subprocess.run(as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                    "--no-sync", "-E", "UTF8", "--locale=C"] + waldir), check=True, capture_output=True)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n".join([f"port = {self.port}", "listen_addresses = ''",
                                  f"unix_socket_directories = '{self.dir}'"] + conf_lines) + "\n")
        subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                                    "-w", "start"]), check=True, capture_output=True)

    def stop(self):
        subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
                       capture_output=True)

    def connect(self, dbname="bench"):
        return psycopg.connect(host=str(self.dir), port=self.port, user="postgres", dbname=dbname, autocommit=True)


def scalar(conn, sql, params=None):
    return conn.execute(sql, params).fetchone()[0]


def build_template(conn, rows, expired_fraction):
    """The rows every method starts from, built once: expiry spread over the last 10 days for the
    expired share, over the next 10 days for the rest, in random physical order."""
    print(f"== building the template: {rows:,} sessions, {expired_fraction:.0%} expired")
    conn.execute("DROP TABLE IF EXISTS template_sessions")
    conn.execute("""
        CREATE TABLE template_sessions AS
        SELECT g::bigint AS id, md5(g::text) AS token, mod(g, 50000)::int AS user_id,
               now() - interval '30 days' * random() AS created_at,
               now() - interval '1 hour' * random() AS last_seen,
               CASE WHEN random() < %s THEN now() - interval '1 minute' - interval '10 days' * random()
                    ELSE now() + interval '1 hour' + interval '10 days' * random() END AS expires,
               repeat(md5(g::text), 10)::text AS data
          FROM generate_series(1, %s) g""", (expired_fraction, rows))
    conn.execute("DROP TABLE IF EXISTS template_meta")
    conn.execute("CREATE TABLE template_meta AS SELECT now() AS built_at")


# The session table's shape: "cascade" (a refresh-token child with ON DELETE CASCADE) or "plain"
# (no foreign key, as most apps' session tables); set from --table.
TABLE_SHAPE = "cascade"


def fresh_copy(conn, rows):
    conn.execute("DROP TABLE IF EXISTS refresh_tokens, sessions CASCADE")
    conn.execute("DROP SEQUENCE IF EXISTS new_session_ids")
    conn.execute("""CREATE TABLE sessions (id bigint PRIMARY KEY, token text NOT NULL, user_id int NOT NULL,
                    created_at timestamptz NOT NULL, last_seen timestamptz NOT NULL,
                    expires timestamptz NOT NULL, data text NOT NULL)""")
    conn.execute("INSERT INTO sessions SELECT * FROM template_sessions ORDER BY id")
    conn.execute("CREATE UNIQUE INDEX ON sessions (token)")
    conn.execute("CREATE INDEX ON sessions (expires)")
    conn.execute("CREATE INDEX ON sessions (user_id)")
    conn.execute(f"CREATE SEQUENCE new_session_ids START {rows + 1}")
    conn.execute("VACUUM ANALYZE sessions")
    if TABLE_SHAPE == "cascade":
        conn.execute("""CREATE TABLE refresh_tokens (id bigserial PRIMARY KEY,
                        session_id bigint NOT NULL REFERENCES sessions ON DELETE CASCADE)""")
        conn.execute("INSERT INTO refresh_tokens (session_id) SELECT id FROM sessions WHERE id % 4 = 0")
        conn.execute("CREATE INDEX ON refresh_tokens (session_id)")
        conn.execute("VACUUM ANALYZE refresh_tokens")
    conn.execute("CHECKPOINT")
    conn.execute("SELECT session_gc.register('sessions', expires_column => 'expires')")


class LockWaitLog:
    """The application's lock waits from the server log: with log_lock_waits and a 1 ms
    deadlock_timeout, every wait of a pgbench backend longer than 1 ms is logged ("still
    waiting ... after", then "acquired ... after" with its full length), however short it is
    against a sampling interval."""

    LINE = re.compile(r"\] pgbench: LOG:  process \d+ (still waiting for|acquired) .*? after ([0-9.]+) ms")

    def __init__(self, cluster):
        self.path = cluster.dir / "server.log"
        self.offset = self.path.stat().st_size

    def collect(self):
        """(number of waits, longest wait in ms) logged since this object was made."""
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            text = log.read().decode("utf-8", "replace")
        waits, longest = 0, 0.0
        for match in self.LINE.finditer(text):
            waits += match.group(1) == "still waiting for"
            longest = max(longest, float(match.group(2)))
        return waits, longest


class Sampler(threading.Thread):
    """Samples pg_stat_activity every 10 ms: the oldest open purge transaction and the longest
    lock wait of an application (pgbench) backend; adds the lock waits the server logged.
    It polls from before the idle lead-in to after the lead-out, so that its own queries weigh
    on the idle seconds around a purge as much as on the purge, and it keeps figures only
    between measure() and done()."""

    def __init__(self, cluster, purger_filter):
        super().__init__(daemon=True)
        self.conn = cluster.connect()
        self.cluster = cluster
        self.purger_filter = purger_filter
        self.longest_txn_ms = 0.0
        self.longest_lock_wait_ms = 0.0
        self.lock_waits = 0
        self.lock_log = None
        # When the first purging backend seen while measuring started (epoch s): the worker
        # starts its own process, and its start belongs in the purge's window.
        self.first_backend_start = None
        self.measuring = threading.Event()
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            try:
                txn, wait, started = self.sample()
            except psycopg.Error:
                break
            if self.measuring.is_set():
                self.longest_txn_ms = max(self.longest_txn_ms, float(txn or 0))
                self.longest_lock_wait_ms = max(self.longest_lock_wait_ms, float(wait or 0))
                if started is not None and self.first_backend_start is None:
                    self.first_backend_start = float(started)
            time.sleep(0.01)

    def sample(self):
        return self.conn.execute(f"""
                SELECT (SELECT max(extract(epoch FROM clock_timestamp() - xact_start)) * 1000
                          FROM pg_stat_activity WHERE xact_start IS NOT NULL AND ({self.purger_filter})),
                       (SELECT max(extract(epoch FROM clock_timestamp() - query_start)) * 1000
                          FROM pg_stat_activity WHERE application_name = 'pgbench' AND wait_event_type = 'Lock'),
                       (SELECT min(extract(epoch FROM backend_start))
                          FROM pg_stat_activity WHERE datname = current_database() AND ({self.purger_filter}))
            """).fetchone()

    def measure(self):
        self.lock_log = LockWaitLog(self.cluster)
        self.measuring.set()

    def done(self):
        self.measuring.clear()
        self.lock_waits, logged_ms = self.lock_log.collect()
        self.longest_lock_wait_ms = max(self.longest_lock_wait_ms, logged_ms)

    def finish(self):
        self.stop_flag.set()
        self.join()
        self.conn.close()


class Load:
    """pgbench at a fixed rate, logging every transaction (start time and latency)."""

    def __init__(self, cluster, args, tag, script="app.sql"):
        self.logdir = Path(args.workdir) / "pgbench" / tag
        subprocess.run(["rm", "-rf", str(self.logdir)], check=True)
        self.logdir.mkdir(parents=True)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres", str(self.logdir.parent)], check=True)
        cmd = [str(PG_BIN / "pgbench"), "-h", str(cluster.dir), "-p", str(cluster.port), "-U", "postgres",
               "-n", "-c", "8", "-j", "2", "-R", str(args.rate), "-T", "3600", "-D", f"rows={args.rows}",
               "-f", str(ROOT / "bench" / script), "-l", "--log-prefix", str(self.logdir / "tx"), "bench"]
        self.proc = subprocess.Popen(as_postgres(cmd), cwd=self.logdir, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, "PGAPPNAME": "pgbench"},
                                     start_new_session=True)

    def stop(self):
        # runuser does not pass signals on: signal pgbench's whole process group.
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            _, err = self.proc.communicate()
        self.errors = [line for line in err.splitlines() if "abort" in line or "ERROR" in line]
        samples = []
        for log in self.logdir.glob("tx*"):
            for line in log.read_text().splitlines():
                parts = line.split()
                if len(parts) < 6:
                    continue
                # time_epoch/time_us say when the transaction ended; keep its start, so a
                # transaction that waited on the purge counts in the purge's window.
                latency = parts[2]
                ended = int(parts[4]) + int(parts[5]) / 1e6
                if latency == "failed" or latency == "skipped":
                    samples.append((ended, None))
                else:
                    samples.append((ended - int(latency) / 1e6, int(latency) / 1000.0))
        return sorted(samples)


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def purge_window(samples, t0, t1):
    """The (start, latency) samples of the transactions that started while the purge ran."""
    return [s for s in samples if t0 <= s[0] <= t1]


def latency_stats(samples, t0, t1):
    window = purge_window(samples, t0, t1)
    ok = [lat for _, lat in window if lat is not None]
    return {"transactions": len(window), "failed": sum(1 for _, lat in window if lat is None),
            "p50_ms": percentile(ok, 0.50), "p99_ms": percentile(ok, 0.99), "max_ms": max(ok) if ok else None}


def wait_for(what, condition, timeout=900):
    until = time.time() + timeout
    while time.time() < until:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


# Runs under load per method. The machine's I/O stalls now and then for tens or hundreds of ms,
# which decides a p99 over a purge of two or three seconds; the median of three runs does not
# hang on one stall.
LOAD_RUNS = 3


def median_load_run(runs, correctness):
    """The run with the median p99 (its latency figures and samples), with the lock waits of
    all runs under load (the correctness run's too) added up, and the longest purge
    transaction and lock wait over them."""
    ordered = sorted(runs, key=lambda run: run["p99_ms"] if run["p99_ms"] is not None else float("inf"))
    median = dict(ordered[len(ordered) // 2])
    median["p99_ms_runs"] = [run["p99_ms"] for run in runs]
    median["app_lock_waits"] = sum(run["app_lock_waits"] for run in runs + [correctness])
    median["longest_app_lock_wait_ms"] = max(run["longest_app_lock_wait_ms"] for run in runs + [correctness])
    median["longest_txn_ms"] = max(run["longest_txn_ms"] for run in runs)
    # The idle seconds around all runs under load, pooled: a baseline taken minutes apart from
    # the purge can differ from it by several times on this machine's storage.
    around = [lat for run in runs for lat in run["idle_around"]]
    # And the transactions during all runs' purges, pooled: the p99 of one purge of 2-3 s is its
    # fifth or sixth slowest transaction, which varied 1.2x-2.8x between runs of one setup.
    during = [lat for run in runs for _, lat in purge_window(run["samples"], run["t0"], run["t1"]) if lat is not None]
    median["pooled_p99_ms"], median["pooled_transactions"] = percentile(during, 0.99), len(during)
    median["idle_around_p50_ms"], median["idle_around_p99_ms"] = percentile(around, 0.50), percentile(around, 0.99)
    median["idle_around_transactions"] = len(around)
    return median


def finish_load(load, args, result):
    """Stops the load after its lead-out and adds its latency figures over the purge's window,
    and the latencies of the same load in the idle seconds just before and after the purge."""
    time.sleep(args.lead_out)
    samples = load.stop()
    result["samples"] = samples
    result["load_errors"] = load.errors
    result.update(latency_stats(samples, result["t0"], result["t1"]))
    result["idle_around"] = idle_around(samples, result["t0"], result["t1"], args)


# Left out of the idle windows around a purge: pgbench's start (connections) and the moment the
# purge ends (its last commits).
IDLE_SKIP_START, IDLE_SKIP_END = 0.5, 0.3


def idle_around(samples, t0, t1, args):
    """Latencies of the transactions that started in the lead-in and lead-out of a run."""
    return [lat for start, lat in samples if lat is not None and
            (t0 - args.lead_in + IDLE_SKIP_START <= start < t0 or t1 + IDLE_SKIP_END < start <= t1 + args.lead_out)]


# -- the methods: each purges `sessions` and returns (deleted rows, start epoch, end epoch) ------

def run_single_delete(cluster, conn):
    t0 = time.time()
    deleted = conn.execute("DELETE FROM sessions WHERE expires < now()").rowcount
    return deleted, t0, time.time()


def run_pg_cron(cluster, conn):
    conn.execute("DELETE FROM cron.job_run_details")
    job = scalar(conn, "SELECT cron.schedule('bench_purge', '* * * * *', 'DELETE FROM sessions WHERE expires < now()')")
    try:
        row = wait_for("the pg_cron job", lambda: conn.execute(
            """SELECT return_message, extract(epoch FROM start_time), extract(epoch FROM end_time)
                 FROM cron.job_run_details WHERE jobid = %s AND status IN ('succeeded', 'failed')""",
            (job,)).fetchone(), timeout=180)
    finally:
        conn.execute("SELECT cron.unschedule(%s)", (job,))
    message, t0, t1 = row
    if t0 is None or t1 is None or not (message or "").startswith("DELETE"):
        raise RuntimeError(f"the pg_cron job failed: {message}")
    deleted = int(message.split()[-1]) if message and message.startswith("DELETE") else 0
    return deleted, float(t0), float(t1)


def run_batch_loop(cluster, conn):
    t0 = time.time()
    deleted = 0
    while True:
        n = conn.execute("""DELETE FROM sessions WHERE id IN
                            (SELECT id FROM sessions WHERE expires < now() LIMIT 1000)""").rowcount
        deleted += n
        if n < 1000:
            break
    return deleted, t0, time.time()


def run_session_gc_worker(cluster, conn):
    conn.execute("DELETE FROM session_gc.history")
    conn.execute("ALTER SYSTEM SET session_gc.enabled = on")
    conn.execute("SELECT pg_reload_conf()")
    try:
        row = wait_for("the worker's pass", lambda: conn.execute(
            """SELECT sum(deleted), extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at))
                 FROM session_gc.history WHERE trigger = 'worker'
               HAVING count(*) > 0 AND bool_and(status <> 'running')""").fetchone())
    finally:
        conn.execute("ALTER SYSTEM SET session_gc.enabled = off")
        conn.execute("SELECT pg_reload_conf()")
    return int(row[0]), float(row[1]), float(row[2])


def run_session_gc_manual(cluster, conn):
    conn.execute("DELETE FROM session_gc.history")
    t0 = time.time()
    conn.execute("CALL session_gc.purge()")
    deleted = scalar(conn, "SELECT coalesce(sum(deleted), 0) FROM session_gc.history")
    return int(deleted), t0, time.time()


def run_session_gc_cleanup(cluster, conn):
    # As an application calls it: a SELECT inside its own transaction block. The purge runs in
    # committed batches from a background worker all the same.
    conn.execute("DELETE FROM session_gc.history")
    t0 = time.time()
    with conn.transaction():
        deleted = scalar(conn, "SELECT coalesce(sum(deleted), 0) FROM session_gc.cleanup()")
    return int(deleted), t0, time.time()


RUNNERS = {m: globals()[f"run_{m}"] for m in METHODS}
PURGERS = {
    "single_delete": "pid = {pid}", "batch_loop": "pid = {pid}", "session_gc_manual": "pid = {pid}",
    "pg_cron": "application_name = 'pg_cron' OR backend_type = 'pg_cron'",
    "session_gc_worker": "backend_type = 'session_gc worker'",
    "session_gc_cleanup": "backend_type = 'session_gc cleanup'",
}


def run_method(cluster, method, args, mode):
    conn = cluster.connect()
    fresh_copy(conn, args.rows)
    if mode == "correctness":
        conn.execute("DROP TABLE IF EXISTS live_deleted")
        conn.execute("CREATE TABLE live_deleted (id bigint, expires timestamptz, deleted_at timestamptz)")
        conn.execute("""CREATE OR REPLACE FUNCTION public.note_live_delete() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN
                            IF OLD.expires > clock_timestamp() THEN
                                INSERT INTO public.live_deleted VALUES (OLD.id, OLD.expires, clock_timestamp());
                            END IF;
                            RETURN OLD;
                        END $$""")
        conn.execute("""CREATE TRIGGER note_live_delete BEFORE DELETE ON sessions
                        FOR EACH ROW EXECUTE FUNCTION public.note_live_delete()""")
    # Every method starts from a connection of its own, as a purge job does (pg_cron's job, a
    # cron endpoint's connection, the worker): the backend that wrote the copy has all of its
    # shared buffers mapped already, which a new process must first map (about 17% of the
    # single DELETE's time at 1,000,000 rows).
    conn.close()
    conn = cluster.connect()
    sampler = Sampler(cluster, PURGERS[method].format(pid=conn.info.backend_pid))
    sampler.start()
    try:
        load = Load(cluster, args, f"{method}-{mode}") if mode != "quiet" else None
        if load:
            time.sleep(args.lead_in)
        lsn_before = scalar(conn, "SELECT pg_current_wal_insert_lsn()")
        sampler.measure()
        deleted, t0, t1 = RUNNERS[method](cluster, conn)
        sampler.done()
        if method == "session_gc_worker" and sampler.first_backend_start is not None:
            # The window opens when the worker process started, not when its run was recorded.
            t0 = min(t0, sampler.first_backend_start)
        lsn_after = scalar(conn, "SELECT pg_current_wal_insert_lsn()")
        result = {"deleted": deleted, "seconds": t1 - t0, "t0": t0, "t1": t1,
                  "longest_txn_ms": sampler.longest_txn_ms, "longest_app_lock_wait_ms": sampler.longest_lock_wait_ms,
                  "app_lock_waits": sampler.lock_waits}
        if load:
            finish_load(load, args, result)
    finally:
        sampler.finish()
    if mode == "quiet":
        result["wal_bytes"] = int(scalar(conn, "SELECT %s::pg_lsn - %s::pg_lsn", (lsn_after, lsn_before)))
        result["size_after"] = scalar(conn, "SELECT pg_total_relation_size('sessions')")
        conn.execute("VACUUM sessions")
        result["size_after_vacuum"] = scalar(conn, "SELECT pg_total_relation_size('sessions')")
    if mode == "correctness":
        result["live_rows_deleted"] = scalar(conn, "SELECT count(*) FROM live_deleted")
    conn.close()
    return result


def fresh_partitioned(conn, rows):
    """The template as a table range-partitioned by day on `expires`, the partition bounds at the
    moment the template was built: every expired row lies in a partition that has wholly
    expired, the live ones in later partitions. No foreign key references it (drop_partitions
    refuses such tables: a dropped partition would skip their ON DELETE actions)."""
    conn.execute("DROP TABLE IF EXISTS psessions CASCADE")
    conn.execute("DROP SEQUENCE IF EXISTS new_session_ids")
    conn.execute("""CREATE TABLE psessions (id bigint NOT NULL, token text NOT NULL, user_id int NOT NULL,
                    created_at timestamptz NOT NULL, last_seen timestamptz NOT NULL,
                    expires timestamptz NOT NULL, data text NOT NULL) PARTITION BY RANGE (expires)""")
    # DDL takes no parameters: the bounds are spelled out by the server itself.
    for (statement,) in conn.execute("""
            SELECT format('CREATE TABLE psessions_%s PARTITION OF psessions FOR VALUES FROM (%L) TO (%L)',
                          lpad((d + 11)::text, 2, '0'), t.built_at + d * interval '1 day',
                          t.built_at + (d + 1) * interval '1 day')
              FROM template_meta t, generate_series(-11, 11) d""").fetchall():
        conn.execute(statement)
    conn.execute("CREATE TABLE psessions_default PARTITION OF psessions DEFAULT")
    conn.execute("INSERT INTO psessions SELECT * FROM template_sessions ORDER BY id")
    conn.execute("CREATE INDEX ON psessions (token)")
    conn.execute("CREATE INDEX ON psessions (expires)")
    conn.execute("CREATE INDEX ON psessions (user_id)")
    conn.execute(f"CREATE SEQUENCE new_session_ids START {rows + 1}")
    conn.execute("VACUUM ANALYZE psessions")
    conn.execute("CHECKPOINT")
    conn.execute("SELECT session_gc.register('psessions', expires_column => 'expires', strategy => 'drop_partitions')")


def partition_run(cluster, method, args, mode):
    """One purge of the partitioned copy: `single_delete` or session_gc's `drop_partitions`
    (CALL session_gc.purge(), each batch committed). Rows purged are counted before and after."""
    conn = cluster.connect()
    fresh_partitioned(conn, args.rows)
    expired_before = scalar(conn, "SELECT count(*) FROM psessions WHERE expires < now()")
    conn.execute("DELETE FROM session_gc.history")
    sampler = Sampler(cluster, f"pid = {conn.info.backend_pid}")
    sampler.start()
    try:
        load = Load(cluster, args, f"partitions-{method}-{mode}", "app-partitioned.sql") if mode == "load" else None
        if load:
            time.sleep(args.lead_in)
        sampler.measure()
        t0 = time.time()
        attempts, completed = 1, True
        if method == "single_delete":
            # Under load it can fail: a session the application extends moves to a later partition,
            # and the DELETE cannot lock a moved row. Retried at once, as a scheduler would later,
            # up to 20 times.
            while True:
                try:
                    conn.execute("DELETE FROM psessions WHERE expires < now()")
                    break
                except psycopg.errors.SerializationFailure:
                    if attempts >= 20:
                        completed = False
                        break
                    attempts += 1
        else:
            conn.execute("CALL session_gc.purge('psessions')")
        t1 = time.time()
        sampler.done()
        result = {"rows_purged": expired_before - scalar(conn, "SELECT count(*) FROM psessions WHERE expires < now()"),
                  "seconds": t1 - t0, "t0": t0, "t1": t1, "longest_txn_ms": sampler.longest_txn_ms,
                  "longest_app_lock_wait_ms": sampler.longest_lock_wait_ms, "app_lock_waits": sampler.lock_waits,
                  "attempts": attempts,
                  "completed": completed,
                  "partitions_dropped": int(scalar(conn, "SELECT coalesce(sum(partitions_dropped), 0) FROM session_gc.history")),
                  "rows_deleted_by_row": int(scalar(conn, "SELECT coalesce(sum(deleted), 0) FROM session_gc.history"))}
        if load:
            finish_load(load, args, result)
    finally:
        sampler.finish()
    conn.execute("DROP TABLE psessions")
    conn.close()
    return result


def partitions_vs_delete(cluster, args):
    results = {}
    for method in ("single_delete", "drop_partitions"):
        results[method] = {}
        for mode in ("quiet", "load"):
            print(f"== partitioned table, {method}: {mode}")
            results[method][mode] = partition_run(cluster, method, args, mode)
            print(f"   { {k: v for k, v in results[method][mode].items() if k != 'samples'} }")
    return results


def stats_vs_count(cluster, args):
    conn = cluster.connect()
    fresh_copy(conn, args.rows)

    def timed(sql):
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            conn.execute(sql).fetchall()
            runs.append((time.perf_counter() - t) * 1000)
        return statistics.median(runs)

    stats_ms = timed("SELECT * FROM session_gc.stats('sessions')")
    exact_ms = timed("SELECT * FROM session_gc.stats('sessions', exact => true)")
    count_ms = timed("SELECT count(*) FROM sessions")
    estimated, exact_count, counted = conn.execute(
        """SELECT (SELECT expired_rows FROM session_gc.stats('sessions')),
                  (SELECT expired_rows FROM session_gc.stats('sessions', exact => true)),
                  (SELECT count(*) FROM sessions WHERE expires < now())""").fetchone()
    conn.close()
    return {"stats_ms": stats_ms, "count_ms": count_ms, "ratio": stats_ms / count_ms,
            "stats_exact_ms": exact_ms, "exact_ratio": exact_ms / count_ms,
            "expired_rows_default": estimated, "expired_rows_exact": exact_count, "expired_rows_counted": counted,
            "default_error": abs(estimated - counted) / counted if counted else None}


def lock_waits(entry):
    """"N (longest ms)" of the application's lock waits during a purge."""
    return f"{entry['app_lock_waits']} ({fmt(entry['longest_app_lock_wait_ms'], 1)})"


def ratio(a, b):
    return (a / b) if a is not None and b else None


def fmt(value, digits=1, suffix=""):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value:,}{suffix}"


def plot(results, partitions, baseline, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [(LABELS[m], results[m]["load"]) for m in METHODS if m in results]
    panels += [(f"partitioned table, {PARTITION_LABELS[m]}", partitions[m]["load"]) for m in partitions]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.3 * len(panels)), sharex=False, squeeze=False)
    for axis, (label, run) in zip(axes[:, 0], panels):
        t0, t1 = run["t0"], run["t1"]
        points = [(s - t0, lat) for s, lat in run["samples"] if lat is not None]
        axis.scatter([p[0] for p in points], [p[1] for p in points], s=2, alpha=0.5)
        axis.axvspan(0, t1 - t0, color="orange", alpha=0.15, label="purge running")
        if baseline.get("p99_ms"):
            axis.axhline(baseline["p99_ms"], color="green", linewidth=0.8, label="idle p99")
        axis.set_yscale("log")
        axis.set_ylabel("latency ms")
        axis.set_title(f"{label}: application latency", fontsize=9)
        axis.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the purge started")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


PARTITION_LABELS = {"single_delete": "single DELETE", "drop_partitions": "session_gc drop_partitions (CALL purge())"}


def partition_report(partitions, base_p99):
    single = partitions["single_delete"]["quiet"]
    single_rate = single["rows_purged"] / single["seconds"] if single["seconds"] else None
    entries, lines = {}, [
        "| method | rows purged | time (no load) | rows/s | vs single DELETE | partitions dropped | rows deleted row by row | "
        "p99 ms under load | p99 vs idle | max ms | longest purge txn ms | app lock waits > 1 ms (longest ms) | "
        "attempts under load |",
        "|" + "---|" * 13]
    for method in partitions:
        quiet, load = partitions[method]["quiet"], partitions[method]["load"]
        rate = quiet["rows_purged"] / quiet["seconds"] if quiet["seconds"] else None
        entry = {"rows_purged": quiet["rows_purged"], "seconds": quiet["seconds"], "rows_per_s": rate,
                 "throughput_vs_single_delete": ratio(rate, single_rate),
                 "partitions_dropped": quiet["partitions_dropped"], "rows_deleted_by_row": quiet["rows_deleted_by_row"],
                 "p99_ms": load["p99_ms"], "max_ms": load["max_ms"], "p99_vs_baseline": ratio(load["p99_ms"], base_p99),
                 "failed_transactions": load["failed"],
                 "longest_txn_ms": max(quiet["longest_txn_ms"], load["longest_txn_ms"]),
                 "longest_app_lock_wait_ms": load["longest_app_lock_wait_ms"], "app_lock_waits": load["app_lock_waits"],
                 "attempts_under_load": load["attempts"],
                 "completed_under_load": load["completed"]}
        entries[method] = entry
        lines.append("| " + " | ".join([
            PARTITION_LABELS[method], fmt(entry["rows_purged"]), fmt(entry["seconds"], 3, " s"), fmt(rate, 0),
            fmt(entry["throughput_vs_single_delete"], 1, "x"),
            fmt(entry["partitions_dropped"]) if method != "single_delete" else "–",
            fmt(entry["rows_deleted_by_row"]) if method != "single_delete" else "–",
            fmt(entry["p99_ms"], 2), fmt(entry["p99_vs_baseline"], 2, "x"), fmt(entry["max_ms"], 1),
            fmt(entry["longest_txn_ms"], 0), lock_waits(entry),
            fmt(entry["attempts_under_load"]) + ("" if entry["completed_under_load"] else ", **all failed**")]) + " |")
    return entries, lines


SCALE_METHODS = ["single_delete", "session_gc_manual", "session_gc_worker"]


def scale_curve(cluster, args):
    """Throughput (no load) and application p99 (one run under load) of the single DELETE and
    session_gc at growing table sizes, so cost growth shows; written as
    docs/benchmark-scale{suffix}.md with a log-log plot and bench/results/scale{suffix}.json."""
    sizes = [100_000] if args.quick else [100_000, 1_000_000, 10_000_000]
    points = []
    for rows in sizes:
        args.rows = rows
        conn = cluster.connect()
        build_template(conn, rows, args.expired_fraction)
        conn.close()
        for method in SCALE_METHODS:
            print(f"== scale {rows:,}: {method}")
            quiet = run_method(cluster, method, args, "quiet")
            loaded = run_method(cluster, method, args, "load")
            points.append({"rows": rows, "method": method, "deleted": quiet["deleted"],
                           "seconds": quiet["seconds"], "rows_per_s": quiet["deleted"] / quiet["seconds"],
                           "p99_ms": loaded.get("p99_ms"), "longest_txn_ms": loaded.get("longest_txn_ms")})
            print(f"   {points[-1]}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    suffix = report_suffix(args)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method in SCALE_METHODS:
        mine = [p for p in points if p["method"] == method]
        left.plot([p["rows"] for p in mine], [p["rows_per_s"] for p in mine], marker="o", label=LABELS[method])
        right.plot([p["rows"] for p in mine], [p["p99_ms"] or float("nan") for p in mine], marker="o",
                   label=LABELS[method])
    for axis, title in ((left, "rows deleted per second (no load)"), (right, "application p99 ms during the purge")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("sessions in the table")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / f"benchmark-scale{suffix}.png", dpi=110)
    single = {p["rows"]: p for p in points if p["method"] == "single_delete"}
    lines = ["| sessions | method | seconds (no load) | rows/s | vs single DELETE | app p99 ms under load | longest purge txn ms |",
             "|---|---|---|---|---|---|---|"]
    for p in points:
        ratio = p["rows_per_s"] / single[p["rows"]]["rows_per_s"]
        lines.append(f"| {p['rows']:,} | {LABELS[p['method']]} | {p['seconds']:.2f} | {p['rows_per_s']:,.0f} | "
                     f"{ratio:.2f}x | {fmt(p['p99_ms'], 2)} | {fmt(p['longest_txn_ms'], 0)} |")
    shape = "cascade" if TABLE_SHAPE == "cascade" else "plain"
    md = f"""# Scale curve

Generated by `bench/run --scale{' --table plain' if shape == 'plain' else ''}{' --quick' if args.quick else ''}` on \
{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: PostgreSQL {args.server_version}, {os.cpu_count()} cores,
{args.expired_fraction:.0%} expired, the {shape} session table. Each size: every method once without load
(throughput) and once under the pgbench load at {args.rate} transactions/s (application p99).

{chr(10).join(lines)}

![scale](benchmark-scale{suffix}.png)
"""
    (ROOT / "docs" / f"benchmark-scale{suffix}.md").write_text(md)
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / f"scale{suffix or '-latest'}.json").write_text(json.dumps(points, indent=2) + "\n")
    print(md)


DUTY_CYCLES = [100, 50, 25, 10]


def set_duty_cycle(cluster, percent):
    conn = cluster.connect()
    conn.execute(f"ALTER SYSTEM SET session_gc.max_duty_cycle = {int(percent)}")
    conn.execute("SELECT pg_reload_conf()")
    conn.close()


def duty_cycle_curve(cluster, args):
    """The worker at session_gc.max_duty_cycle 100, 50, 25 and 10 beside the single DELETE, on
    copies of one table: throughput without load, and under the pgbench load the application's
    p99 during the purge against its p99 in the idle seconds around it (pooled over the runs);
    written as docs/benchmark-duty-cycle{suffix}.md with a plot and
    bench/results/duty-cycle{suffix}.json."""
    conn = cluster.connect()
    build_template(conn, args.rows, args.expired_fraction)
    conn.close()
    points = []
    for method, percent in [("single_delete", None)] + [("session_gc_worker", d) for d in DUTY_CYCLES]:
        set_duty_cycle(cluster, percent or 100)
        label = LABELS[method] if percent is None else f"worker at {percent}%"
        print(f"== duty cycle: {label}")
        quiet = run_method(cluster, method, args, "quiet")
        loaded = [run_method(cluster, method, args, "load") for _ in range(LOAD_RUNS)]
        during = [lat for run in loaded for _, lat in purge_window(run["samples"], run["t0"], run["t1"])
                  if lat is not None]
        around = [lat for run in loaded for lat in run["idle_around"]]
        points.append({"method": method, "duty_cycle": percent, "label": label, "deleted": quiet["deleted"],
                       "seconds": quiet["seconds"], "rows_per_s": quiet["deleted"] / quiet["seconds"],
                       "p99_ms": percentile(during, 0.99), "idle_p99_ms": percentile(around, 0.99),
                       "longest_txn_ms": max(run["longest_txn_ms"] for run in loaded),
                       "transactions": len(during)})
        print(f"   {points[-1]}")
    set_duty_cycle(cluster, 100)
    single = points[0]
    for p in points:
        p["vs_delete"] = p["rows_per_s"] / single["rows_per_s"]
        p["p99_vs_idle"] = p["p99_ms"] / p["idle_p99_ms"] if p["p99_ms"] and p["idle_p99_ms"] else None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    suffix = report_suffix(args)
    workers = [p for p in points if p["duty_cycle"] is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([p["duty_cycle"] for p in workers], [p["vs_delete"] for p in workers], marker="o", label="worker")
    left.axhline(1.0, color="grey", linestyle="--", label="single DELETE")
    left.axhline(0.2, color="red", linestyle=":", label="target at 25%: 0.2x")
    right.plot([p["duty_cycle"] for p in workers], [p["p99_vs_idle"] or float("nan") for p in workers],
               marker="o", label="worker")
    right.axhline(single["p99_vs_idle"] or float("nan"), color="grey", linestyle="--", label="single DELETE")
    right.axhline(1.25, color="red", linestyle=":", label="target at 25%: 1.25x")
    for axis, title in ((left, "throughput, x the single DELETE (no load)"),
                        (right, "application p99 during the purge, x idle")):
        axis.set_xlabel("session_gc.max_duty_cycle (%)")
        axis.set_xticks(DUTY_CYCLES)
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    right.set_yscale("log")
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / f"benchmark-duty-cycle{suffix}.png", dpi=110)
    lines = ["| method | rows/s (no load) | vs single DELETE | app p99 ms during the purge | idle p99 ms around it | "
             "p99 vs idle | longest purge txn ms |", "|---|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p['label']} | {p['rows_per_s']:,.0f} | {p['vs_delete']:.2f}x | {fmt(p['p99_ms'], 2)} | "
                     f"{fmt(p['idle_p99_ms'], 2)} | {fmt(p['p99_vs_idle'], 2, 'x')} | {fmt(p['longest_txn_ms'], 0)} |")
    shape = "cascade" if TABLE_SHAPE == "cascade" else "plain"
    md = f"""# Duty cycle: the purge's cost chosen by `session_gc.max_duty_cycle`

Generated by `bench/run --duty-cycle{' --table plain' if shape == 'plain' else ''}` on \
{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: PostgreSQL {args.server_version}, {os.cpu_count()} cores,
{args.rows:,} sessions, {args.expired_fraction:.0%} expired, the {shape} session table, default batch size.
Each method once without load (throughput) and {LOAD_RUNS} times under the pgbench load at {args.rate}
transactions/s; the p99 is pooled over the transactions of all {LOAD_RUNS} purges, the idle p99 over the
idle seconds just before and after each (the same load, the same minutes).

{chr(10).join(lines)}

![duty cycle](benchmark-duty-cycle{suffix}.png)
"""
    (ROOT / "docs" / f"benchmark-duty-cycle{suffix}.md").write_text(md)
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / f"duty-cycle{suffix or '-latest'}.json").write_text(json.dumps(points, indent=2) + "\n")
    print(md)


REPLICA_SETTINGS = ["0", "16MB", "2MB"]


def replica_lag(cluster, args):
    """Replay lag of a streaming standby during a purge() of the backlog, without and with
    session_gc.max_replica_lag; written as docs/benchmark-replica{suffix}.md and
    bench/results/replica{suffix}.json."""
    standby = Cluster(Path(args.workdir + "-standby"), args.port + 1)
    subprocess.run(["rm", "-rf", str(standby.dir)], check=True)
    standby.dir.mkdir(parents=True)
    if os.geteuid() == 0:
        subprocess.run(["chown", "postgres", str(standby.dir)], check=True)
    subprocess.run(as_postgres([str(PG_BIN / "pg_basebackup"), "-h", str(cluster.dir), "-p", str(cluster.port),
                                "-U", "postgres", "-D", str(standby.data), "-R", "-X", "stream", "--no-sync",
                                # A slot: the primary keeps the WAL the standby has yet to receive.
                                "-C", "-S", "session_gc_bench"]),
                   check=True, capture_output=True)
    with open(standby.data / "postgresql.conf", "a") as conf:
        conf.write(f"\nport = {standby.port}\nunix_socket_directories = '{standby.dir}'\n")
    subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(standby.data), "-l",
                                str(standby.dir / "server.log"), "-w", "start"]), check=True, capture_output=True)
    lag_sql = """SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 0)::bigint
                   FROM pg_stat_replication"""
    points = []
    try:
        conn = cluster.connect()
        build_template(conn, args.rows, args.expired_fraction)
        conn.close()
        for setting in REPLICA_SETTINGS:
            conn = cluster.connect()
            fresh_copy(conn, args.rows)
            conn.execute("CHECKPOINT")
            watch = cluster.connect()
            wait_for("the standby to catch up", lambda: scalar(watch, lag_sql) < 65536)
            samples, done = [], threading.Event()

            def sample():
                while not done.is_set():
                    samples.append(scalar(watch, lag_sql))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            conn.execute(f"SET session_gc.max_replica_lag = '{setting}'")
            t0 = time.time()
            conn.execute("CALL session_gc.purge('sessions')")
            seconds = time.time() - t0
            done.set()
            sampler.join()
            deleted, waited = conn.execute(
                """SELECT deleted, extract(epoch FROM replica_wait)::float8 FROM session_gc.history
                    ORDER BY id DESC LIMIT 1""").fetchone()
            wait_for("the standby to catch up", lambda: scalar(watch, lag_sql) < 65536)
            watch.close()
            conn.close()
            point = {"max_replica_lag": setting, "deleted": deleted, "seconds": seconds,
                     "rows_per_s": deleted / seconds, "waited_s": waited,
                     "max_lag_mb": max(samples) / 2**20,
                     "p95_lag_mb": percentile(samples, 0.95) / 2**20, "samples": len(samples)}
            points.append(point)
            print(f"   {point}")
    finally:
        standby.stop()
    suffix = report_suffix(args)
    off = points[0]
    lines = ["| session_gc.max_replica_lag | purge() seconds | rows/s | vs off | waited s | max replay lag MB | p95 replay lag MB |",
             "|---|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p['max_replica_lag']} | {p['seconds']:.2f} | {p['rows_per_s']:,.0f} | "
                     f"{p['rows_per_s'] / off['rows_per_s']:.2f}x | {p['waited_s']:.2f} | {p['max_lag_mb']:.1f} | "
                     f"{p['p95_lag_mb']:.1f} |")
    md = f"""# Replay lag of a standby during a purge

Generated by `bench/run --replica{' --quick' if args.quick else ''}` on \
{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: PostgreSQL {args.server_version}, {os.cpu_count()} cores,
a streaming standby on the same machine, {args.rows:,} sessions, {args.expired_fraction:.0%} expired, the
{TABLE_SHAPE} session table. `CALL session_gc.purge('sessions')` with defaults, once per setting, on
fresh copies; the standby's replay lag (`pg_current_wal_lsn()` against its `replay_lsn`) sampled
every 20 ms.

{chr(10).join(lines)}
"""
    (ROOT / "docs" / f"benchmark-replica{suffix}.md").write_text(md)
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / f"replica{suffix or '-latest'}.json").write_text(json.dumps(points, indent=2) + "\n")
    print(md)



def report_suffix(args):
    """What --name adds to the report's file names (docs/benchmarks-NAME.md, ...)."""
    return f"-{args.name}" if args.name else ""


def report(results, partitions, baseline, stats, args, elapsed):
    suffix = report_suffix(args)
    results_json = f"{args.name or 'latest'}.json"
    major = args.server_version.split(".")[0]
    flags = "".join([f" --pg {major}" if major != "15" else "", " --table plain" if args.table == "plain" else "",
                     " --quick" if args.quick else "", f" --wal-dir {args.wal_dir}" if args.wal_dir else "",
                     f" --name {args.name}" if args.name else ""])
    single = results["single_delete"]["quiet"]
    base_p99 = baseline.get("p99_ms")
    methods = {}
    lines = ["| method | rows/s (no load) | vs single DELETE | purge time under load | p50 ms | p99 ms | p99 vs idle | "
             "idle p99 around the runs ms | p99 vs idle around | p99 of the runs pooled ms | pooled vs idle | "
             "pooled vs idle around | "
             "max ms | failed txns | longest purge txn ms | app lock waits > 1 ms (longest ms) | WAL bytes/row | "
             "size after (MB) | after VACUUM (MB) | live rows deleted |",
             "|" + "---|" * 20]
    for method in [m for m in METHODS if m in results]:
        quiet, load, correct = (results[method][k] for k in ("quiet", "load", "correctness"))
        rows_per_s = quiet["deleted"] / quiet["seconds"] if quiet["seconds"] else None
        entry = {
            "rows_per_s": rows_per_s,
            "throughput_vs_single_delete": ratio(rows_per_s, single["deleted"] / single["seconds"]),
            "deleted": quiet["deleted"], "seconds": quiet["seconds"], "seconds_under_load": load["seconds"],
            "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"], "max_ms": load["max_ms"],
            "p99_vs_baseline": ratio(load["p99_ms"], base_p99), "p99_ms_runs": load["p99_ms_runs"],
            "idle_around_p50_ms": load["idle_around_p50_ms"], "idle_around_p99_ms": load["idle_around_p99_ms"],
            "idle_around_transactions": load["idle_around_transactions"],
            "p99_vs_idle_around": ratio(load["p99_ms"], load["idle_around_p99_ms"]),
            "pooled_p99_ms": load["pooled_p99_ms"], "pooled_transactions": load["pooled_transactions"],
            "pooled_p99_vs_baseline": ratio(load["pooled_p99_ms"], base_p99),
            "pooled_p99_vs_idle_around": ratio(load["pooled_p99_ms"], load["idle_around_p99_ms"]),
            "failed_transactions": load["failed"],
            "longest_txn_ms": max(quiet["longest_txn_ms"], load["longest_txn_ms"]),
            "longest_app_lock_wait_ms": load["longest_app_lock_wait_ms"], "app_lock_waits": load["app_lock_waits"],
            "wal_bytes_per_row": quiet["wal_bytes"] / quiet["deleted"] if quiet["deleted"] else None,
            "size_after_bytes": quiet["size_after"], "size_after_vacuum_bytes": quiet["size_after_vacuum"],
            "live_rows_deleted": correct["live_rows_deleted"],
        }
        methods[method] = entry
        lines.append("| " + " | ".join([
            LABELS[method], fmt(entry["rows_per_s"], 0), fmt(entry["throughput_vs_single_delete"], 2, "x"),
            fmt(entry["seconds_under_load"], 2, " s"), fmt(entry["p50_ms"], 2), fmt(entry["p99_ms"], 2),
            fmt(entry["p99_vs_baseline"], 2, "x"), fmt(entry["idle_around_p99_ms"], 2),
            fmt(entry["p99_vs_idle_around"], 2, "x"), fmt(entry["pooled_p99_ms"], 2),
            fmt(entry["pooled_p99_vs_baseline"], 2, "x"), fmt(entry["pooled_p99_vs_idle_around"], 2, "x"),
            fmt(entry["max_ms"], 1), fmt(entry["failed_transactions"]),
            fmt(entry["longest_txn_ms"], 0), lock_waits(entry),
            fmt(entry["wal_bytes_per_row"], 0), fmt(entry["size_after_bytes"] / 2**20, 1),
            fmt(entry["size_after_vacuum_bytes"] / 2**20, 1), fmt(entry["live_rows_deleted"])]) + " |")
    # The targets judge the worker and purge(); a run with --methods leaving either out has none.
    targets = {}
    if "session_gc_worker" in methods and "session_gc_manual" in methods:
        worker, manual = methods["session_gc_worker"], methods["session_gc_manual"]
        targets = {
            "throughput_at_least_0.8x_single_delete": {
                "worker": worker["throughput_vs_single_delete"], "manual": manual["throughput_vs_single_delete"],
                "met": min(worker["throughput_vs_single_delete"] or 0, manual["throughput_vs_single_delete"] or 0) >= 0.8},
            # The p99 over all runs under load, pooled (about 1,500 transactions), judged against
            # both idle baselines: the one measured before all methods and the idle seconds around
            # the same runs; met only if within 1.25x of each. The median run's ratios are shown too.
            "p99_within_1.25x_idle": {
                "worker_pooled": worker["pooled_p99_vs_baseline"], "manual_pooled": manual["pooled_p99_vs_baseline"],
                "worker_pooled_vs_idle_around": worker["pooled_p99_vs_idle_around"],
                "manual_pooled_vs_idle_around": manual["pooled_p99_vs_idle_around"],
                "worker_median_run": worker["p99_vs_baseline"], "manual_median_run": manual["p99_vs_baseline"],
                "worker_median_run_vs_idle_around": worker["p99_vs_idle_around"],
                "manual_median_run_vs_idle_around": manual["p99_vs_idle_around"],
                "met": max(worker["pooled_p99_vs_baseline"] or 99, manual["pooled_p99_vs_baseline"] or 99,
                           worker["pooled_p99_vs_idle_around"] or 99, manual["pooled_p99_vs_idle_around"] or 99) <= 1.25},
            "no_app_lock_wait_on_the_purge": {
                "worker_waits": worker["app_lock_waits"], "manual_waits": manual["app_lock_waits"],
                "worker_ms": worker["longest_app_lock_wait_ms"], "manual_ms": manual["longest_app_lock_wait_ms"],
                "met": max(worker["longest_app_lock_wait_ms"], manual["longest_app_lock_wait_ms"]) == 0},
            "every_transaction_under_250ms": {
                "worker_ms": worker["longest_txn_ms"], "manual_ms": manual["longest_txn_ms"],
                "met": max(worker["longest_txn_ms"], manual["longest_txn_ms"]) < 250},
            "stats_at_most_0.5x_count": {"ratio": stats["ratio"], "met": stats["ratio"] <= 0.5},
            "no_live_session_deleted": {"worker": worker["live_rows_deleted"], "manual": manual["live_rows_deleted"],
                                        "met": worker["live_rows_deleted"] == 0 and manual["live_rows_deleted"] == 0},
        }
    partition_entries, partition_lines = partition_report(partitions, base_p99)
    drop_ratio = partition_entries["drop_partitions"]["throughput_vs_single_delete"]
    targets["drop_partitions_at_least_100x_single_delete"] = {"ratio": drop_ratio, "met": (drop_ratio or 0) >= 100}
    data = {"config": {"rows": args.rows, "expired_fraction": args.expired_fraction, "rate_tps": args.rate,
                       "quick": args.quick, "cpus": os.cpu_count(), "elapsed_s": elapsed},
            "baseline_p99_ms": base_p99, "baseline": baseline, "methods": methods,
            "stats_vs_count": stats, "partitions": partition_entries, "targets": targets}
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / results_json).write_text(json.dumps(data, indent=2) + "\n")
    target_lines = [f"| {name} | {'met' if t['met'] else '**missed**'} | "
                    + ", ".join(f"{k} = {fmt(v, 2) if isinstance(v, float) else v}" for k, v in t.items() if k != "met")
                    + " |" for name, t in targets.items()]
    md = f"""# Benchmarks

Generated by `bench/run{flags}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}:
{args.rows:,} sessions ({args.expired_fraction:.0%} expired, about {int(args.rows * args.expired_fraction):,} to purge),
{'a foreign-key child table with `ON DELETE CASCADE` (one refresh token per four sessions)' if TABLE_SHAPE == 'cascade' else 'no foreign key (the plain table most apps have)'}, an index
on the expiry column; PostgreSQL {args.server_version} on {os.cpu_count()} cores, `fsync` on, default settings, WAL
{f'in `{args.wal_dir}`' if args.wal_dir else 'on the same disk as the data'}.
Every method runs on a fresh copy of the same table, {LOAD_RUNS + 2} times: without load (throughput, WAL,
sizes), {LOAD_RUNS} times under a pgbench application load at {args.rate} transactions/s (latency: the run
with the median p99; lock waits: all runs under load), and under the same load with a DELETE trigger counting
rows deleted although their expiry was in the future (untimed). Ratios compare with the single
DELETE and with two idle baselines of the same run: the load alone for {10 if not args.quick else 5} s before any method
ran, and the load's idle seconds just before and after each run under load of the method, pooled.

Idle baseline under the same load: p50 {fmt(baseline.get('p50_ms'), 2)} ms, p99 {fmt(base_p99, 2)} ms,
max {fmt(baseline.get('max_ms'), 1)} ms ({baseline.get('transactions')} transactions), application lock waits over 1 ms:
{baseline.get('app_lock_waits')} (longest {fmt(baseline.get('longest_app_lock_wait_ms'), 1)} ms).

{chr(10).join(lines)}

`stats()` on the full table: {fmt(stats['stats_ms'], 1)} ms against {fmt(stats['count_ms'], 1)} ms for
`count(*)` ({fmt(stats['ratio'], 2)}x). Past 100,000 expired rows per rule it takes the planner's
estimate: {fmt(stats['expired_rows_default'])} expired rows against {fmt(stats['expired_rows_counted'])} counted
({fmt(100 * (stats['default_error'] or 0), 2)}% off). Counting exactly, `stats(exact => true)`:
{fmt(stats['stats_exact_ms'], 1)} ms ({fmt(stats['exact_ratio'], 2)}x `count(*)`).

## Partitioned table: dropping expired partitions

The same rows in a copy range-partitioned by day on `expires` (23 daily partitions and a default
one, indexes on token, expiry and user; no foreign key: `drop_partitions` refuses a referenced
table). The partition bounds fall at the moment the data was generated, so every expired row
lies in a partition that has wholly expired; on a live table the expired part of the current
partition is deleted row by row at the rates above. The load is the same pgbench script against
this table (`bench/app-partitioned.sql`).

{chr(10).join(partition_lines)}

## Targets

| target | result | figures |
|---|---|---|
{chr(10).join(target_lines)}

What the figures mean, which targets are missed and why: [benchmark-analysis.md](benchmark-analysis.md).

## Application latency over time

![latency](benchmark-latency{suffix}.png)

## Method

- Application load (`bench/app.sql`, pgbench `-R {args.rate} -c 8`): look a session up by its token,
  delete it if it has expired (as Auth.js and Django do), else touch its last activity and extend it
  by an hour, and one transaction in ten starts a new session.
  Sessions are picked at random, expired ones included (a user coming back just in time).
- Latency figures cover the transactions that started while the purge ran (with `-R`, latency
  includes the time a transaction waited for its scheduled start). Each method runs {LOAD_RUNS} times under
  load; the table shows the run with the median p99 (the p99 of every run is in `{results_json}`),
  because the machine's storage stalls now and then for tens to hundreds of milliseconds, and the
  p99 of the transactions during all {LOAD_RUNS} runs pooled. The p99 target is judged on the pooled p99:
  over one purge of 2-3 s it is the fifth or sixth slowest transaction, which varied 1.2x-2.8x
  between repeated runs of one setup.
- The longest purge transaction is sampled from `pg_stat_activity` every 10 ms, from the start of
  the idle lead-in to the end of the lead-out, so that the sampling weighs on the idle seconds
  around a purge as on the purge (figures are kept only while the purge runs). Application lock
  waits are taken from the server log (`log_lock_waits = on`, `deadlock_timeout = 1ms`): every
  wait of a pgbench backend longer than 1 ms during the purge, counted, with the longest (or the
  longest sampled from `pg_stat_activity`, if more).
- WAL bytes per row: WAL written during the unloaded purge divided by the rows deleted
  (cascaded child rows included in the WAL, not in the count).
- The session_gc worker runs at its default settings (batch 500, no delay between batches), switched on with
  a reload; its time runs from the start of its process (sampled from `pg_stat_activity`) to the end of its
  pass in history. `pg_cron` (1.4) runs the single DELETE on its next
  minute; its time is the job's, from `cron.job_run_details`.{'' if args.has_pg_cron else chr(10) + "- pg_cron is not packaged for this major here (only Debian's 15 and 17 have it): its method was left out."}
"""
    (ROOT / "docs" / f"benchmarks{suffix}.md").write_text(md)
    print(md)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100,000 rows, a few minutes")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--expired-fraction", type=float, default=0.5)
    parser.add_argument("--rate", type=int, help="application transactions per second")
    parser.add_argument("--port", type=int, default=54339)
    parser.add_argument("--workdir", default="/tmp/session_gc-bench")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--name", help="write docs/benchmarks-NAME.md, docs/benchmark-latency-NAME.png and "
                        "bench/results/NAME.json instead of the default report files")
    parser.add_argument("--pg-bin", type=Path, help="the server's bin directory (default: Debian's 15)")
    parser.add_argument("--scale", action="store_true",
                        help="the scale curve only: 100,000, 1,000,000 and 10,000,000 rows (--quick: the first)")
    parser.add_argument("--replica", action="store_true",
                        help="replay lag of a streaming standby during a purge, without and with "
                        "session_gc.max_replica_lag")
    parser.add_argument("--duty-cycle", action="store_true",
                        help="the worker at session_gc.max_duty_cycle 100, 50, 25 and 10 beside the single DELETE")
    parser.add_argument("--table", choices=["cascade", "plain"], default="cascade",
                        help="the session table: with a refresh-token child deleted by ON DELETE CASCADE "
                        "(default), or plain, without a foreign key")
    parser.add_argument("--wal-dir", type=Path,
                        help="an empty or new directory for the cluster's WAL (in DIR/pg_wal), on another "
                        "device than --workdir")
    args = parser.parse_args()
    global PG_BIN, TABLE_SHAPE
    PG_BIN = args.pg_bin or PG_BIN
    TABLE_SHAPE = args.table
    pkglibdir = subprocess.run([str(PG_BIN / "pg_config"), "--pkglibdir"], check=True, capture_output=True,
                               text=True).stdout.strip()
    args.has_pg_cron = Path(pkglibdir, "pg_cron.so").exists()
    if not args.has_pg_cron:
        print("== pg_cron is not installed for this server: its method is left out")
        args.methods = ",".join(m for m in args.methods.split(",") if m != "pg_cron")
    args.rows = args.rows or (100_000 if args.quick else 1_000_000)
    args.rate = args.rate or 200
    args.lead_in, args.lead_out = (1.0, 1.0) if args.quick else (2.0, 2.0)
    started = time.time()
    cluster = Cluster(Path(args.workdir), args.port, args.wal_dir)
    preload = "session_gc,pg_cron" if args.has_pg_cron else "session_gc"
    cron = ["cron.database_name = 'bench'", f"cron.host = '{args.workdir}'"] if args.has_pg_cron else []
    cluster.create([f"shared_preload_libraries = '{preload}'", *cron,
                    "session_gc.enabled = off", "max_wal_size = '8GB'", "checkpoint_timeout = '30min'",
                    "shared_buffers = '1GB'", "log_min_messages = warning",
                    # Every application lock wait over 1 ms is logged, with its length (LockWaitLog).
                    "log_lock_waits = on", "deadlock_timeout = '1ms'", "log_line_prefix = '%m [%p] %a: '"])
    try:
        admin = cluster.connect("postgres")
        admin.execute("CREATE DATABASE bench")
        admin.close()
        conn = cluster.connect()
        conn.execute("CREATE EXTENSION session_gc")
        args.server_version = scalar(conn, "SHOW server_version").split()[0]
        if args.has_pg_cron:
            conn.execute("CREATE EXTENSION pg_cron")
        if args.scale:
            conn.close()
            scale_curve(cluster, args)
            return
        if args.replica:
            conn.close()
            replica_lag(cluster, args)
            return
        if args.duty_cycle:
            conn.close()
            duty_cycle_curve(cluster, args)
            return
        build_template(conn, args.rows, args.expired_fraction)
        conn.close()

        print("== idle baseline under load")
        conn = cluster.connect()
        fresh_copy(conn, args.rows)
        conn.close()
        time.sleep(3)  # let the copy's checkpoint and autovacuum settle before measuring idle
        load = Load(cluster, args, "baseline")
        lock_log = LockWaitLog(cluster)
        window = 5.0 if args.quick else 10.0
        t0 = time.time()
        time.sleep(window)
        baseline = latency_stats(load.stop(), t0, t0 + window)
        baseline["app_lock_waits"], baseline["longest_app_lock_wait_ms"] = lock_log.collect()
        print(f"   {baseline}")

        print("== stats() against count(*)")
        stats = stats_vs_count(cluster, args)
        print(f"   {stats}")

        results = {}
        for method in [m for m in METHODS if m in args.methods.split(",")]:
            results[method] = {}
            loaded = []
            for mode in ("quiet",) + ("load",) * LOAD_RUNS + ("correctness",):
                print(f"== {method}: {mode}")
                result = run_method(cluster, method, args, mode)
                if mode == "load":
                    loaded.append(result)
                else:
                    results[method][mode] = result
                shown = {k: v for k, v in result.items() if k not in ("samples", "idle_around")}
                print(f"   {shown}")
            # The correctness run is under the same load: its lock waits count too.
            results[method]["load"] = median_load_run(loaded, results[method]["correctness"])
        partitions = partitions_vs_delete(cluster, args)
        plot(results, partitions, baseline, ROOT / "docs" / f"benchmark-latency{report_suffix(args)}.png")
        report(results, partitions, baseline, stats, args, time.time() - started)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
