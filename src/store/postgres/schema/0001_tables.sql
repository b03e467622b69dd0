-- civicflow's tables. Records are the same JSON the embedded store keeps, as bytea (the
-- binary protocol carries them as they are); the columns beside them are what PostgreSQL must
-- see to order, find, claim and check.

-- The version of the shared configuration (definitions, webhooks, API tokens): one row.
CREATE TABLE config (
    id int PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO config VALUES (1, 0);

-- Every claim takes the next value: an epoch is larger than any claim's before it.
CREATE SEQUENCE claim_epochs;

-- A case's current state (LZ4-compressed JSON, so that it stays in its row), rewritten on
-- every change: room on each page for the new version of a row keeps updates on the page (HOT)
-- and off the indexes.
CREATE TABLE cases (
    id uuid PRIMARY KEY,
    rev bigint NOT NULL,
    record bytea NOT NULL
) WITH (fillfactor = 70);

-- Index entries by (name, value), ordered by case id (UUIDv7, time-ordered); values compare
-- as bytes, as on every backend.
CREATE TABLE case_index (
    name text COLLATE "C" NOT NULL,
    value text COLLATE "C" NOT NULL,
    case_id uuid NOT NULL,
    PRIMARY KEY (name, value, case_id)
);
CREATE INDEX case_index_by_case ON case_index (case_id);

-- The append-only history, partitioned by the month its case started: case ids are UUIDv7,
-- whose first 48 bits are the start time in milliseconds, so a month is a range of ids. An old
-- month can be detached and archived whole (docs/operations.md) without touching the rest.
-- Partitions are made ahead of time (civicflow_event_partitions); the default partition takes
-- whatever falls outside them.
CREATE TABLE events (
    case_id uuid NOT NULL,
    seq bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (case_id, seq)
) PARTITION BY RANGE (case_id);
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- The smallest UUIDv7 of a moment.
CREATE FUNCTION civicflow_uuid_at(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0')
        || '00000000000000000000')::uuid
$$;

-- Makes the history partitions of this month and the `ahead` next ones, if missing.
CREATE FUNCTION civicflow_event_partitions(ahead int) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    month timestamptz;
    name text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('civicflow_event_partitions'));
    FOR i IN 0..ahead LOOP
        month := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
            + make_interval(months => i);
        name := 'events_' || to_char(month AT TIME ZONE 'UTC', 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                name,
                civicflow_uuid_at(month),
                civicflow_uuid_at(month + interval '1 month'));
        END IF;
    END LOOP;
END
$$;
SELECT civicflow_event_partitions(3);

-- Durable wake-ups: a small, hot table (a timer lives seconds to days), claimed by due time.
CREATE TABLE timers (
    case_id uuid NOT NULL,
    kind text COLLATE "C" NOT NULL,
    due_ms bigint NOT NULL,
    record bytea NOT NULL,
    owner text,
    epoch bigint NOT NULL DEFAULT 0,
    lease_until timestamptz,
    PRIMARY KEY (case_id, kind, due_ms)
) WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);
CREATE INDEX timers_due ON timers (due_ms);

CREATE TABLE callback_tokens (
    token text PRIMARY KEY,
    record bytea NOT NULL
);

CREATE TABLE idempotency (
    key text PRIMARY KEY,
    record bytea NOT NULL
);

CREATE TABLE api_tokens (
    digest text COLLATE "C" PRIMARY KEY,
    record bytea NOT NULL
);

-- Notifications: a position is the writing transaction's id (shifted) and the row's place in
-- it, so positions follow transaction order; readers see only rows below the oldest running
-- transaction, where no smaller position can still appear. Trimmed below the slowest webhook.
CREATE TABLE feed (
    pos bigint PRIMARY KEY,
    txid xid8 NOT NULL,
    record bytea NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.02);

CREATE TABLE webhooks (
    id text COLLATE "C" PRIMARY KEY,
    record bytea NOT NULL,
    owner text,
    epoch bigint NOT NULL DEFAULT 0,
    lease_until timestamptz
);

CREATE TABLE definitions (
    kind text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    version int NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (kind, id, version)
);

CREATE TABLE registry_changes (
    n bigserial PRIMARY KEY,
    record bytea NOT NULL
);
