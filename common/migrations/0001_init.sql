-- siphon schema, version 1.
-- Resource tables (one per type) are created on first use by storage::resources;
-- this file holds what every deployment shares.

-- One sequence for every table's txid, named as in Aidbox.
CREATE SEQUENCE IF NOT EXISTS transaction_id_seq;

-- Invalid lines found while loading a file: what the API lists per LoaderFile.
CREATE TABLE IF NOT EXISTS siphon_loader_error (
    file_id text NOT NULL,
    line bigint NOT NULL,
    reason text NOT NULL,
    excerpt text NOT NULL,
    PRIMARY KEY (file_id, line)
);
