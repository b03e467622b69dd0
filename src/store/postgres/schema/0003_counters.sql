-- Counters (`Transaction::counts`), kept up to date by the commits they count. Every commit of
-- a busy day adds to the same few counters, so each connection adds into a row of its own
-- (`shard`, its backend's process id modulo 1024) and a read sums the rows: concurrent commits
-- never wait for each other's row lock.
CREATE TABLE counters (
    name text COLLATE "C" NOT NULL,
    shard int NOT NULL,
    value bigint NOT NULL,
    PRIMARY KEY (name, shard)
);
