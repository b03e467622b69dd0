-- Agencies' circuits (`store::Circuit`): one row per agency, written by version, so that two
-- nodes cannot both open one, both take its probe, or close it under each other.
CREATE TABLE circuits (
    agency text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL,
    record bytea NOT NULL
);
