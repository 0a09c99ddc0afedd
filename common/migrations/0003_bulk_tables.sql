-- siphon schema, version 3: resource tables loaded in bulk mode (disable-idx?,
-- drop-primary-key?). A row exists while a table's indexes (and maybe its primary key)
-- are dropped for a load; it holds what is needed to put them back. The row and the DROP
-- commit in one transaction, and so do the rebuild and the row's deletion: a crash never
-- leaves a table without its indexes and without this record of them.
CREATE TABLE IF NOT EXISTS siphon_bulk_table (
    -- The resource type whose table it is (Patient: table patient).
    resource_type text PRIMARY KEY,
    -- The load holding the table: a load-from-bucket call (its group) or an $import session.
    owner text NOT NULL,
    -- The indexes dropped, as [{"name": ..., "def": "CREATE INDEX ..."}].
    indexes jsonb NOT NULL,
    -- The primary key constraint's name when it was dropped, else NULL.
    primary_key text,
    -- Why the primary key was kept although asked to drop it (a table that was not empty).
    note text,
    created_at timestamptz NOT NULL DEFAULT now()
);
