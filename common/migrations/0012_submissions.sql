-- siphon schema, version 12: which transactions wrote the rows of a file loaded for a
-- `$bulk-submit` submission (one row per committed batch), so that a submission that is
-- stopped, or a manifest that is replaced, can remove exactly what it wrote: the rows
-- whose current txid is one of these (a later load that overwrote a row gave it a new
-- txid, and the row stays).
CREATE TABLE IF NOT EXISTS siphon_file_txid (
    file_id text NOT NULL,
    txid bigint NOT NULL,
    PRIMARY KEY (file_id, txid)
);
