-- The application load during a purge: look a session up by its token, delete it if it has
-- expired, else touch its last activity (extending it: a user who comes back keeps a live
-- session), and now and then start a new session. Sessions are picked at random, expired ones
-- included.
\set id random(1, :rows)
\set coin random(1, 10)
BEGIN;
SELECT user_id, length(data) FROM sessions WHERE token = md5(:id::text);
-- A session found expired is deleted on the spot (Auth.js and Django do so); a live one is
-- extended.
DELETE FROM sessions WHERE token = md5(:id::text) AND expires < now();
UPDATE sessions SET last_seen = now(), expires = now() + interval '1 hour' WHERE token = md5(:id::text);
\if :coin = 1
INSERT INTO sessions (id, token, user_id, created_at, last_seen, expires, data)
VALUES (nextval('new_session_ids'), md5(random()::text), :id % 50000, now(), now(), now() + interval '1 day', repeat('n', 300));
\endif
END;
