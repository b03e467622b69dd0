-- Case records in the compact binary form (`store::encode_case`, format 2) from this version
-- on. Rows written before are LZ4-compressed JSON (format 1): they are read as such, and each
-- is rewritten in the binary form at its case's next change. Adding a column with a constant
-- default rewrites no row.
ALTER TABLE cases ADD COLUMN format smallint NOT NULL DEFAULT 1;

-- The `step`, `agency` and `due` index entries are no longer written: no list read them.
DELETE FROM case_index WHERE name IN ('step', 'agency', 'due');
