-- Notifications are numbered when they are sealed, no longer by the writing transaction's id
-- (issue 33): positions from transaction ids made every webhook wait for the oldest transaction
-- running anywhere on the server, and would start again low in a database restored into
-- another server. A commit adds its notifications to `feed_unsealed`; a reader of the feed
-- first moves what is committed there into `feed`, numbered on from `feed_sealed.last` under
-- that row's lock, so positions follow the order notifications became visible and never move
-- back, whichever node seals.
CREATE TABLE feed_unsealed (
    id bigserial PRIMARY KEY,
    record bytea NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.02);

CREATE TABLE feed_sealed (
    id int PRIMARY KEY CHECK (id = 1),
    last bigint NOT NULL
);

-- Past every position handed out before: those were transaction ids shifted by 16 bits.
INSERT INTO feed_sealed (id, last)
SELECT 1, greatest(coalesce(max(pos), 0), (pg_current_xact_id()::text::int8) << 16) FROM feed;

ALTER TABLE feed DROP COLUMN txid;
