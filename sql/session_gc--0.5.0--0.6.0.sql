-- session_gc 0.5.0 -> 0.6.0: a policy stores a time_zone only when one of its rule columns is a
-- naive timestamp or date (NULL otherwise: no zone applies to timestamptz or epoch columns).
-- Policies registered before keep the zone they stored; it is unused where no column is naive.
-- Run by ALTER EXTENSION session_gc UPDATE.
\echo Use "ALTER EXTENSION session_gc UPDATE TO '0.6.0'" to load this file. \quit

ALTER TABLE session_gc.policies ALTER COLUMN time_zone DROP NOT NULL;
