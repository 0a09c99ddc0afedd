-- siphon schema, version 11: the manifest pages of exports that allow partial manifests
-- (Bulk Data STU3 `allowPartialManifests`). A page is written when it is first returned
-- and never changes afterwards (the IG's rule); its files are object keys (their URLs are
-- presigned anew on every read).
CREATE TABLE IF NOT EXISTS siphon_export_page (
    export_id text NOT NULL REFERENCES siphon_export (id) ON DELETE CASCADE,
    -- From 1; page 1 is what the status URL answers.
    page int NOT NULL,
    -- [{"list": "output"|"deleted", "type": ..., "key": ..., "count": n}, ...]
    files jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (export_id, page)
);
