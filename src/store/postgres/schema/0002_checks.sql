-- A commit's checks (a claim still held, a revision unchanged, a key still free) run inside the
-- statements that write, and raise when they fail: the transaction is then aborted, and its
-- pipelined COMMIT rolls it back, so a commit costs one round trip.
CREATE FUNCTION civicflow_check(passed boolean, what text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT passed THEN
        RAISE EXCEPTION USING ERRCODE = 'CF001', MESSAGE = what;
    END IF;
END
$$;
