-- siphon schema, version 4: exports to S3 (FHIR Bulk Data $export, dump-to-bucket).
-- An export is a job row plus one task per resource type (or id range of a big type);
-- tasks run on the export queue and keep a checkpoint (last id written, files finished,
-- the open multipart upload and its parts), fenced by a lease like LoaderFiles.
CREATE TABLE IF NOT EXISTS siphon_export (
    id text PRIMARY KEY,
    -- 'fhir' ($export) or 'bucket' (dump-to-bucket).
    kind text NOT NULL,
    -- The client that started it; only it (or the admin) may see or cancel it.
    owner text NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'done', 'error', 'cancelled')),
    -- What to export and where (never credentials).
    request jsonb NOT NULL,
    transaction_time timestamptz NOT NULL DEFAULT now(),
    error text,
    polled_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS siphon_export_task (
    id text PRIMARY KEY,
    export_id text NOT NULL REFERENCES siphon_export (id) ON DELETE CASCADE,
    -- 'resources' (rows of a type) or 'deleted' (tombstones since _since).
    kind text NOT NULL,
    resource_type text NOT NULL,
    -- Position among the type's tasks (id ranges), from 1.
    part int NOT NULL,
    -- The id range: after range_from (exclusive) up to range_to (inclusive); NULL = open.
    range_from text,
    range_to text,
    status text NOT NULL CHECK (status IN ('pending', 'running', 'done', 'error', 'cancelled')),
    lease_owner text,
    lease_until timestamptz,
    -- SQS receipt handle of the message being worked on (for the sweep).
    receipt text,
    checkpoint jsonb NOT NULL DEFAULT '{}',
    count bigint NOT NULL DEFAULT 0,
    error text,
    recovery jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS siphon_export_task_export ON siphon_export_task (export_id);
CREATE INDEX IF NOT EXISTS siphon_export_task_running ON siphon_export_task (lease_until)
    WHERE status = 'running';

-- The Patients a Patient- or Group-level export is limited to (Patient/<id>).
CREATE TABLE IF NOT EXISTS siphon_export_patient (
    export_id text NOT NULL REFERENCES siphon_export (id) ON DELETE CASCADE,
    ref text NOT NULL,
    PRIMARY KEY (export_id, ref)
);

-- Deleted resources, for $export's deleted[] with _since. Filled by a trigger on every
-- FHIR resource table (a resource deleted and stored again is not reported deleted).
CREATE TABLE IF NOT EXISTS siphon_tombstone (
    resource_type text NOT NULL,
    id text NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now(),
    resource jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS siphon_tombstone_when ON siphon_tombstone (resource_type, deleted_at);

CREATE OR REPLACE FUNCTION siphon_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO siphon_tombstone (resource_type, id, resource)
    VALUES (OLD.resource_type, OLD.id, OLD.resource);
    RETURN OLD;
END $$;

-- Resource tables that exist already get the trigger now; new ones when created.
DO $$
DECLARE t record;
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'r'
          AND c.relname NOT IN ('loaderfile', 'client', 'accesspolicy')
          AND c.relname NOT LIKE 'siphon\_%'
          AND (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND NOT a.attisdropped
               AND a.attname IN ('id', 'txid', 'resource_type', 'status', 'resource')) = 5
    LOOP
        EXECUTE format('CREATE OR REPLACE TRIGGER siphon_tombstone AFTER DELETE ON public.%I
                        FOR EACH ROW EXECUTE FUNCTION siphon_tombstone()', t.relname);
    END LOOP;
END $$;
