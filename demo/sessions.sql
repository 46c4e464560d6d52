-- A session table as web frameworks create it, filled with a realistic mix.
\set ON_ERROR_STOP on
\pset footer off
CREATE EXTENSION IF NOT EXISTS session_gc;

CREATE TABLE user_sessions (
    id          bigserial PRIMARY KEY,
    token       text        NOT NULL UNIQUE DEFAULT md5(random()::text),
    user_id     integer     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    active      boolean     NOT NULL DEFAULT true,
    data        text        NOT NULL DEFAULT repeat('x', 300)
);
CREATE INDEX ON user_sessions (expires_at);
CREATE INDEX ON user_sessions (last_seen);
CREATE INDEX ON user_sessions (active) WHERE active = false;
CREATE TABLE refresh_tokens (
    id          bigserial PRIMARY KEY,
    session_id  bigint NOT NULL REFERENCES user_sessions ON DELETE CASCADE
);
CREATE INDEX ON refresh_tokens (session_id);

-- 100,000 sessions: 60% past their expiry, 10% idle for over a day, 2% logged out
-- (active = false), the rest live.
INSERT INTO user_sessions (user_id, created_at, last_seen, expires_at, active)
SELECT g % 5000,
       now() - interval '20 days' * random(),
       CASE WHEN g % 10 = 6 THEN now() - interval '2 days' ELSE now() - interval '1 hour' * random() END,
       CASE WHEN g % 10 < 6 THEN now() - interval '10 days' * random() ELSE now() + interval '1 hour' + interval '10 days' * random() END,
       g % 50 <> 7
  FROM generate_series(1, 100000) g;
INSERT INTO refresh_tokens (session_id) SELECT id FROM user_sessions WHERE id % 3 = 0;
VACUUM ANALYZE user_sessions;

\echo
\echo '== register the table: expired after expires_at, idle for a day, or logged out'
SELECT session_gc.register('user_sessions',
         expires_column => 'expires_at',
         idle_column    => 'last_seen', idle_timeout => '1 day',
         active_column  => 'active',
         batch_size     => 5000);

\echo
\echo '== stats() before'
SELECT table_name, total_rows, expired_rows, expired, idle, inactive, pg_size_pretty(table_bytes) AS size,
       date_trunc('second', now() - oldest_expired) AS oldest_expired_ago
  FROM session_gc.stats();

\echo
\echo '== what a purge would delete (dry run)'
SELECT table_name, deleted AS would_delete, expired, idle, inactive FROM session_gc.cleanup(dry_run => true);

\echo
\echo '== cleanup(): purge now, in batches of 5,000'
SELECT table_name, deleted, expired, idle, inactive, batches, duration, status FROM session_gc.cleanup();

\echo
\echo '== stats() after'
SELECT table_name, total_rows, expired_rows, dead_rows, last_deleted, deleted_total FROM session_gc.stats();
SELECT count(*) AS live_sessions,
       count(*) FILTER (WHERE expires_at < now() OR last_seen < now() - interval '1 day' OR NOT active) AS expired_left
  FROM user_sessions;
SELECT count(*) AS refresh_tokens_left,
       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM user_sessions s WHERE s.id = session_id)) AS orphans
  FROM refresh_tokens;

