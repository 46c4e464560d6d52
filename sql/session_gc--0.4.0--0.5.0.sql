-- session_gc 0.4.0 -> 0.5.0: Citus tables are purged shard by shard, each shard on the node
-- holding it, by the procedure below (called by the coordinator's purge, on every node).
-- Run by ALTER EXTENSION session_gc UPDATE (Citus runs it on its nodes too).
\echo Use "ALTER EXTENSION session_gc UPDATE TO '0.5.0'" to load this file. \quit

CREATE FUNCTION session_gc.purge_shard_step(shard regclass, shard_id bigint, policies text,
                                            start_position text, state text,
                                            batch_size integer, max_runtime_ms integer)
RETURNS text LANGUAGE c AS 'MODULE_PATHNAME', 'purge_shard_step_wrapper';
COMMENT ON FUNCTION session_gc.purge_shard_step(regclass, bigint, text, text, text, integer, integer) IS
    'One batch of session_gc.purge_shard (called by it)';
CREATE PROCEDURE session_gc.purge_shard(shard regclass, shard_id bigint, policies text,
                                        start_position text, batch_size integer,
                                        max_runtime_ms integer, INOUT result text DEFAULT NULL)
LANGUAGE plpgsql AS $body$
DECLARE
    step pg_catalog.text;
BEGIN
    LOOP
        step := session_gc.purge_shard_step(shard, shard_id, policies, start_position, result,
                                            batch_size, max_runtime_ms);
        EXIT WHEN step IS NULL;
        result := step;
        COMMIT;
    END LOOP;
END
$body$;
COMMENT ON PROCEDURE session_gc.purge_shard(regclass, bigint, text, text, integer, integer, text) IS
    'Purge one shard of a Citus table on this node, in committed batches (called by the coordinator''s purge)';
-- Called on every node as the table's owner; it refuses a role without the shard owner's
-- privileges, so it deletes nothing its caller could not.
GRANT USAGE ON SCHEMA session_gc TO PUBLIC;
GRANT EXECUTE ON PROCEDURE session_gc.purge_shard(regclass, bigint, text, text, integer, integer, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION session_gc.purge_shard_step(regclass, bigint, text, text, text, integer, integer) TO PUBLIC;
