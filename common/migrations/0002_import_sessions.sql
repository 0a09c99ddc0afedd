-- siphon schema, version 2: $import sessions (SPEC section 4).
-- Each input of a session is a LoaderFile whose `import` names the session; the session
-- row holds the state users control (pause, resume, abort) and workers obey.
CREATE TABLE IF NOT EXISTS siphon_import (
    id text PRIMARY KEY,
    status text NOT NULL CHECK (status IN ('active', 'paused', 'aborted', 'error', 'done')),
    -- Argon2id hash of the session's `secret` (NULL when started without one).
    secret_hash text,
    -- The start request, without its secret.
    request jsonb NOT NULL,
    -- Why the session is in `error`: which input, what went wrong.
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
