-- siphon schema, version 8: FHIR validation of loads (`validation: {enable, checks}`).
--
-- A line that loaded although asynchronous validation found it invalid is listed with
-- the invalid lines, marked `loaded`.
ALTER TABLE siphon_loader_error ADD COLUMN IF NOT EXISTS loaded boolean NOT NULL DEFAULT false;

-- References (`checks: refs|all`) that did not resolve when their batch committed: they
-- are resolved once the whole load (`scope`: the $import session, the load-from-bucket
-- call, or the file) has ended. `parked`: the line waits in siphon_ref_parked.
CREATE TABLE IF NOT EXISTS siphon_ref_pending (
    scope text NOT NULL,
    file_id text NOT NULL,
    line bigint NOT NULL,
    path text NOT NULL,
    target_type text NOT NULL,
    target_id text NOT NULL,
    parked boolean NOT NULL,
    -- The line's first 200 bytes, for the invalid line the reference may become.
    excerpt text NOT NULL
);
CREATE INDEX IF NOT EXISTS siphon_ref_pending_scope ON siphon_ref_pending (scope, target_type);
CREATE INDEX IF NOT EXISTS siphon_ref_pending_line ON siphon_ref_pending (file_id, line);

-- Lines held back (`enable: on`) until their references resolve: written to their table
-- then, or recorded as invalid.
CREATE TABLE IF NOT EXISTS siphon_ref_parked (
    scope text NOT NULL,
    file_id text NOT NULL,
    line bigint NOT NULL,
    resource_type text NOT NULL,
    id text NOT NULL,
    resource text NOT NULL,
    PRIMARY KEY (file_id, line)
);
CREATE INDEX IF NOT EXISTS siphon_ref_parked_scope ON siphon_ref_parked (scope);
