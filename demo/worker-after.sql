\set ON_ERROR_STOP on
\pset footer off
\echo
\echo '== session_gc.worker_status()'
SELECT database, worker_running, enabled, "interval", last_pass_tables, last_pass_deleted,
       date_trunc('second', last_pass_finished) AS last_pass_finished,
       date_trunc('second', next_pass) AS next_pass
  FROM session_gc.worker_status();

\echo
\echo '== stats() after the worker'
SELECT table_name, expired_rows, dead_rows, last_deleted, deleted_total FROM session_gc.stats();

\echo
\echo '== session_gc.history: the manual run, then the worker'
SELECT id, table_name, trigger, status, deleted, expired, idle, inactive, batches,
       date_trunc('millisecond', finished_at - started_at) AS took
  FROM session_gc.history ORDER BY id;
