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

-- The append-only history.
CREATE TABLE events (
    case_id uuid NOT NULL,
    seq bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (case_id, seq)
);

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
