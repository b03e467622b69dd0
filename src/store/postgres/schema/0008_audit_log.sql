-- The audit log (`audit::Entry`): an append-only Merkle log of exchanges, callbacks, events and
-- people's actions. A commit adds its records to `audit_unsealed`; a sealer, under the lock of
-- the one row of `audit_sealed`, numbers them on from its `size`, chains each to the leaf hash
-- of the entry before and moves them into `audit_log`, so indexes are gap-free and in the order
-- sealed whichever node committed.
CREATE TABLE audit_unsealed (
    id bigserial PRIMARY KEY,
    record bytea NOT NULL
);

CREATE TABLE audit_sealed (
    id integer PRIMARY KEY CHECK (id = 1),
    size bigint NOT NULL,
    last_leaf bytea NOT NULL,
    last_at_ns bigint NOT NULL
);
INSERT INTO audit_sealed VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000', 0);

CREATE TABLE audit_log (
    idx bigint PRIMARY KEY,
    case_id uuid,
    entry bytea NOT NULL
);
CREATE INDEX audit_log_case ON audit_log (case_id, idx) WHERE case_id IS NOT NULL;

-- Signed tree heads (`audit::TreeHead`), by the size they sign.
CREATE TABLE audit_heads (
    size bigint PRIMARY KEY,
    head bytea NOT NULL
);
