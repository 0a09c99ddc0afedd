-- siphon schema, version 9: an inventory import compares its staged objects with the
-- LoaderFiles once, in one hash join over both sets, and keeps what it found here; its
-- pages then read this table alone (one index lookup per object and page cost 3.4 s per
-- 100,000 objects against 500,000 LoaderFiles).
ALTER TABLE siphon_plan_object
    ADD COLUMN IF NOT EXISTS existing boolean,
    ADD COLUMN IF NOT EXISTS existing_etag text,
    ADD COLUMN IF NOT EXISTS existing_status text,
    ADD COLUMN IF NOT EXISTS existing_import text,
    ADD COLUMN IF NOT EXISTS existing_gone boolean;
