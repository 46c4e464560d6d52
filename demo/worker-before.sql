\set ON_ERROR_STOP on
\pset footer off
\echo
\echo '== meanwhile 30,000 more sessions expire (and 5,000 new ones start)'
INSERT INTO user_sessions (user_id, expires_at)
SELECT g % 5000, now() - interval '1 second' * g FROM generate_series(1, 30000) g;
INSERT INTO user_sessions (user_id, expires_at)
SELECT g % 5000, now() + interval '1 day' FROM generate_series(1, 5000) g;
SELECT table_name, expired_rows FROM session_gc.stats();

\echo
\echo '== the background worker: switched on with a reload, no restart'
ALTER SYSTEM SET session_gc.enabled = on;
SELECT pg_reload_conf();
