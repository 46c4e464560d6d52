-- The application load of bench/app.sql against the range-partitioned copy (psessions).
-- Extending a session moves it to a later partition (an UPDATE of the partition key).
\set id random(1, :rows)
\set coin random(1, 10)
BEGIN;
SELECT user_id, length(data) FROM psessions WHERE token = md5(:id::text);
UPDATE psessions SET last_seen = now(), expires = now() + interval '1 hour' WHERE token = md5(:id::text);
\if :coin = 1
INSERT INTO psessions (id, token, user_id, created_at, last_seen, expires, data)
VALUES (nextval('new_session_ids'), md5(random()::text), :id % 50000, now(), now(), now() + interval '1 day', repeat('n', 300));
\endif
END;
