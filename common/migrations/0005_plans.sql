-- siphon schema, version 5: planning imports (load-from-bucket dry runs, S3 Inventory
-- imports). The objects a listing or an inventory names are staged here, so a plan of
-- millions of objects is a few joins in Postgres, not a map in a function's memory.
CREATE UNLOGGED TABLE IF NOT EXISTS siphon_plan_object (
    plan text NOT NULL,
    -- The LoaderFile id the object maps to (UUID v5 of s3://bucket/key).
    file_id text NOT NULL,
    bucket text NOT NULL,
    key text NOT NULL,
    size bigint,
    etag text,
    modified timestamptz,
    -- The resource type its name names, if any.
    resource_type text,
    PRIMARY KEY (plan, file_id)
);
