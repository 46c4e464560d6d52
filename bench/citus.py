"""session_gc on Citus: a coordinator and two workers on this machine, each its own PostgreSQL,
and a session table distributed on its token (the application's lookups are single-shard), half
of it expired. Side by side on fresh copies: pg_cron running the single DELETE on the
distributed table (where the major has pg_cron; else the same DELETE from a new connection),
`CALL session_gc.purge()` and the session_gc worker; once without load (purge time, rows/s) and
once under the benchmark's application load through the coordinator (application p50/p99
during the purge, and the longest transaction any worker node held for the purge, sampled from
its pg_stat_activity every 10 ms). Writes docs/benchmark-citus[-NAME].md and
bench/results/citus[-NAME].json."""

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the benchmark's clusters, load and statistics)
from bench import Cluster, Load, latency_stats, scalar, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARDS = 16
METHODS = ["pg_cron", "session_gc_manual", "session_gc_worker"]
LABELS = {
    "pg_cron": "pg_cron running the single DELETE",
    "single_delete": "the single DELETE (new connection)",
    "session_gc_manual": "session_gc CALL purge()",
    "session_gc_worker": "session_gc worker (defaults)",
}


class ShardTransactions(threading.Thread):
    """The longest open transaction a worker node holds for a purge, sampled every 10 ms: the
    shard DELETEs of a distributed DELETE (not the application's, which name a token), or
    session_gc's purge_shard calls (whose batches commit one by one)."""

    def __init__(self, node):
        super().__init__(daemon=True)
        self.conn = node.connect()
        self.longest_ms = 0.0
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            value = scalar(self.conn, """
                SELECT max(extract(epoch FROM clock_timestamp() - xact_start)) * 1000 FROM pg_stat_activity
                 WHERE xact_start IS NOT NULL AND state <> 'idle' AND pid <> pg_backend_pid()
                   AND (query ILIKE '%purge_shard%'
                        OR (query ILIKE 'DELETE FROM%' AND query NOT ILIKE '%token%'))""")
            self.longest_ms = max(self.longest_ms, float(value or 0))
            time.sleep(0.01)

    def finish(self):
        self.stop_flag.set()
        self.join()
        self.conn.close()
        return self.longest_ms


def start_nodes(args, nodes):
    """Starts the coordinator and two workers; each is added to `nodes` once started, so the
    caller stops whatever started, however this ends."""
    common = ["listen_addresses = '127.0.0.1'", "max_prepared_transactions = 40", "max_connections = 200",
              "shared_buffers = '512MB'", "max_wal_size = '8GB'", "checkpoint_timeout = '30min'",
              "log_min_messages = warning", "log_line_prefix = '%m [%p] %a: '"]
    workers = []
    for i in (1, 2):
        node = Cluster(Path(args.workdir) / f"w{i}", args.port + i)
        node.create(["shared_preload_libraries = 'citus'", *common])
        nodes.append(node)
        workers.append(node)
    preload = "citus,session_gc,pg_cron" if args.has_pg_cron else "citus,session_gc"
    cron = ["cron.database_name = 'bench'", "cron.host = '127.0.0.1'"] if args.has_pg_cron else []
    coordinator = Cluster(Path(args.workdir) / "c", args.port)
    coordinator.create([f"shared_preload_libraries = '{preload}'", *cron, "session_gc.enabled = off", *common])
    nodes.append(coordinator)
    for node in [*workers, coordinator]:
        admin = node.connect("postgres")
        admin.execute("CREATE DATABASE bench")
        admin.close()
        conn = node.connect()
        conn.execute("CREATE EXTENSION citus")
        conn.close()
    conn = coordinator.connect()
    conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (coordinator.port,))
    for node in workers:
        conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (node.port,))
    conn.execute("CREATE EXTENSION session_gc")
    if args.has_pg_cron:
        # On the coordinator only: the workers do not preload it.
        conn.execute("SET citus.enable_ddl_propagation = off")
        conn.execute("CREATE EXTENSION pg_cron")
        conn.execute("RESET citus.enable_ddl_propagation")
    args.server_version = scalar(conn, "SHOW server_version").split()[0]
    args.citus_version = scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'citus'")
    conn.close()
    return coordinator, workers


def fresh_copy(conn, rows):
    conn.execute("DROP TABLE IF EXISTS sessions")
    conn.execute("DROP SEQUENCE IF EXISTS new_session_ids")
    conn.execute("""CREATE TABLE sessions (id bigint NOT NULL, token text PRIMARY KEY, user_id int NOT NULL,
                    created_at timestamptz NOT NULL, last_seen timestamptz NOT NULL,
                    expires timestamptz NOT NULL, data text NOT NULL)""")
    conn.execute("SELECT create_distributed_table('sessions', 'token', shard_count => %s)", (SHARDS,))
    conn.execute("INSERT INTO sessions SELECT * FROM template_sessions")
    conn.execute("CREATE INDEX ON sessions (expires)")
    conn.execute("CREATE INDEX ON sessions (user_id)")
    conn.execute(f"CREATE SEQUENCE new_session_ids START {rows + 1}")
    conn.execute("VACUUM ANALYZE sessions")
    conn.execute("SELECT run_command_on_workers('CHECKPOINT')")
    conn.execute("SELECT session_gc.register('sessions', expires_column => 'expires')")


def run_pg_cron(conn):
    conn.execute("DELETE FROM cron.job_run_details")
    job = scalar(conn, "SELECT cron.schedule('bench_purge', '1 seconds', 'DELETE FROM sessions WHERE expires < now()')")
    try:
        row = wait_for("the pg_cron job", lambda: conn.execute(
            """SELECT return_message, extract(epoch FROM start_time), extract(epoch FROM end_time)
                 FROM cron.job_run_details WHERE jobid = %s AND status IN ('succeeded', 'failed')
                ORDER BY runid LIMIT 1""", (job,)).fetchone(), timeout=180)
    finally:
        conn.execute("SELECT cron.unschedule(%s)", (job,))
    message, t0, t1 = row
    if not (message or "").startswith("DELETE"):
        raise RuntimeError(f"the pg_cron job failed: {message}")
    return int(message.split()[-1]), float(t0), float(t1)


# The benchmark's own runners (they use the connection only); pg_cron's above runs every second.
RUNNERS = {"pg_cron": run_pg_cron,
           "single_delete": lambda conn: bench.run_single_delete(None, conn),
           "session_gc_manual": lambda conn: bench.run_session_gc_manual(None, conn),
           "session_gc_worker": lambda conn: bench.run_session_gc_worker(None, conn)}


def run_method(coordinator, workers, method, args, loaded):
    setup = coordinator.connect()
    fresh_copy(setup, args.rows)
    setup.close()
    conn = coordinator.connect()
    samplers = [ShardTransactions(node) for node in workers]
    for sampler in samplers:
        sampler.start()
    load = Load(coordinator, args, f"citus-{method}") if loaded else None
    if load:
        time.sleep(args.lead_in)
    deleted, t0, t1 = RUNNERS[method](conn)
    if load:
        time.sleep(args.lead_out)
    longest = max(sampler.finish() for sampler in samplers)
    result = {"deleted": deleted, "seconds": t1 - t0, "longest_shard_txn_ms": longest}
    if load:
        samples = load.stop()
        result.update(latency_stats(samples, t0, t1))
        result["load_errors"] = load.errors[:5]
    left = scalar(conn, "SELECT count(*) FROM sessions WHERE expires < now()")
    result["expired_left"] = int(left)
    conn.close()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pg-bin", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="100,000 sessions")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--port", type=int, default=54360)
    parser.add_argument("--workdir", default="/tmp/session_gc-bench-citus")
    parser.add_argument("--name")
    args = parser.parse_args()
    bench.PG_BIN = args.pg_bin
    bench.TABLE_SHAPE = "plain"
    pkglibdir = os.popen(f"{args.pg_bin / 'pg_config'} --pkglibdir").read().strip()
    args.has_pg_cron = Path(pkglibdir, "pg_cron.so").exists()
    args.rows = args.rows or (100_000 if args.quick else 1_000_000)
    args.expired_fraction = 0.5
    args.lead_in = args.lead_out = 1.0
    methods = METHODS if args.has_pg_cron else ["single_delete"] + METHODS[1:]
    started = time.time()
    nodes = []
    try:
        coordinator, workers = start_nodes(args, nodes)
        conn = coordinator.connect()
        bench.build_template(conn, args.rows, args.expired_fraction)
        conn.close()
        print("== idle baseline under load")
        setup = coordinator.connect()
        fresh_copy(setup, args.rows)
        setup.close()
        load = Load(coordinator, args, "citus-baseline")
        t0 = time.time()
        time.sleep(5.0)
        baseline = latency_stats(load.stop(), t0, t0 + 5.0)
        print(f"   {baseline}")
        results = {}
        for method in methods:
            results[method] = {}
            for loaded in (False, True):
                print(f"== {method}: {'load' if loaded else 'quiet'}")
                result = run_method(coordinator, workers, method, args, loaded)
                results[method]["load" if loaded else "quiet"] = result
                print(f"   {result}")
        report(results, baseline, methods, args, time.time() - started)
    finally:
        for node in nodes:
            node.stop()


def report(results, baseline, methods, args, elapsed):
    suffix = f"-{args.name}" if args.name else ""
    first = methods[0]
    base_rate = results[first]["quiet"]["deleted"] / results[first]["quiet"]["seconds"]
    lines = ["| method | purge time (no load) | rows/s | vs the DELETE | purge time under load | app p50 ms | "
             "app p99 ms | p99 vs idle | longest transaction on a worker node ms | expired rows left |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method in methods:
        quiet, load = results[method]["quiet"], results[method]["load"]
        rate = quiet["deleted"] / quiet["seconds"]
        p99 = load.get("p99_ms")
        lines.append(
            f"| {LABELS[method]} | {quiet['seconds']:.2f} s | {rate:,.0f} | {rate / base_rate:.2f}x | "
            f"{load['seconds']:.2f} s | {bench.fmt(load.get('p50_ms'), 2)} | {bench.fmt(p99, 2)} | "
            f"{bench.fmt(p99 / baseline['p99_ms'] if p99 and baseline.get('p99_ms') else None, 2, 'x')} | "
            f"{max(quiet['longest_shard_txn_ms'], load['longest_shard_txn_ms']):.0f} | {load['expired_left']} |")
    cron = ("pg_cron running the single DELETE" if args.has_pg_cron else
            "the single DELETE from a new connection (this major has no pg_cron package)")
    md = f"""# session_gc on Citus

Generated by `bench/run --citus{' --quick' if args.quick else ''} --pg {args.server_version.split('.')[0]}` on \
{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {elapsed / 60:.0f} min: PostgreSQL {args.server_version},
Citus {args.citus_version}, a coordinator and two workers on one machine ({os.cpu_count()} cores), {args.rows:,}
sessions (50% expired) in a table distributed on its token ({SHARDS} shards, 8 per worker), an index on the
expiry column. Each method runs on a fresh copy, once without load and once under the application load
(`bench/app.sql`, pgbench `-R {args.rate} -c 8` through the coordinator: look a session up by its token,
delete it if expired, else extend it; one in ten transactions starts a new one). Compared with {cron}.

Idle baseline under the same load: p50 {bench.fmt(baseline.get('p50_ms'), 2)} ms, p99 \
{bench.fmt(baseline.get('p99_ms'), 2)} ms ({baseline['transactions']} transactions).

{chr(10).join(lines)}

The longest transaction on a worker node is sampled every 10 ms from each worker's `pg_stat_activity`:
for the DELETE, the transaction its node holds for its shards' part of the distributed DELETE; for session_gc,
one batch of one shard (each `purge_shard` call commits its batches one by one).
"""
    (ROOT / "docs" / f"benchmark-citus{suffix}.md").write_text(md)
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / f"citus{suffix}.json").write_text(
        json.dumps({"baseline": baseline, "results": results, "rows": args.rows}, indent=2, default=str) + "\n")
    print(md)


if __name__ == "__main__":
    main()
