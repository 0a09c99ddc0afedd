#!/usr/bin/env bash
# Takes from PUBLIC (and so from siphon's read-only role) every function of
# infra/sql/reader-forbidden.sql, and grants them back to the service role, in one
# database. Run as a superuser (or the functions' owner), once per database, and on
# template1 so that new databases start that way:
#   bash infra/sql/reader-role.sh "postgres://postgres@host/siphon" siphon
# Idempotent. On a managed database whose superuser cannot revoke these (RDS), see
# docs/authorization.md (SIPHON_READER_UNRESTRICTED_FUNCTIONS).
set -euo pipefail
url="$1"; service="${2:-siphon}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
forbidden="$(grep -v '^--' "$here/reader-forbidden.sql")"
psql -X -q -v ON_ERROR_STOP=1 "$url" >/dev/null <<SQL
SELECT format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f) FROM ($forbidden) x(f) \gexec
SELECT format('GRANT EXECUTE ON FUNCTION %s TO %I', f, '$service') FROM ($forbidden) x(f) \gexec
SQL
