-- siphon schema, version 10: authorization.
-- Every $import session belongs to the client that started it (NULL: started by the
-- admin, or before owners existed; only the admin sees those). Exports already have
-- their owner; LoaderFiles carry theirs in the resource (`client`).
ALTER TABLE siphon_import ADD COLUMN IF NOT EXISTS owner text;
CREATE INDEX IF NOT EXISTS siphon_import_owner ON siphon_import (owner, created_at DESC);

-- SMART Backend Services: the `jti` of every client assertion accepted, until it
-- expires, so that a replay is refused by whichever instance receives it.
CREATE TABLE IF NOT EXISTS siphon_jti (
    client_id text NOT NULL,
    jti text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX IF NOT EXISTS siphon_jti_expires ON siphon_jti (expires_at);

-- The read-only role logs in on its own now (never `SET ROLE` from the service user),
-- and reads resource tables only: not siphon's own (Client holds secret hashes), and it
-- creates nothing (query dumps are copied into the service's tables, not created by it).
DO $$
DECLARE t text;
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'siphon_reader') THEN
        REVOKE ALL ON SCHEMA siphon_dump FROM siphon_reader;
        FOREACH t IN ARRAY ARRAY['client', 'accesspolicy', 'loaderfile', 'inventory'] LOOP
            IF to_regclass(format('public.%I', t)) IS NOT NULL THEN
                EXECUTE format('REVOKE ALL ON public.%I FROM siphon_reader', t);
            END IF;
        END LOOP;
    END IF;
END $$;

-- An instant read from a bookkeeping document, or NULL when it is not one: one damaged
-- row (a lease whose `until` is not a time) must never fail a query over every file
-- (the sweep, claims), only be left out of it.
CREATE OR REPLACE FUNCTION siphon_ts(v text) RETURNS timestamptz
    LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN v::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
