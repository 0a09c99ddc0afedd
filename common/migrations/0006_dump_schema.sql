-- siphon schema, version 6: query dumps to a bucket. A dump-to-bucket of a `query` runs
-- the query once, as siphon_reader (the $dump-sql role), into a table of this schema
-- that the export's tasks then read in row order, resumably; it is dropped when the
-- export ends. siphon_reader may create tables here and nowhere else.
CREATE SCHEMA IF NOT EXISTS siphon_dump;
DO $$ BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'siphon_reader') THEN
        GRANT USAGE, CREATE ON SCHEMA siphon_dump TO siphon_reader;
    END IF;
END $$;
