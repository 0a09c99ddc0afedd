#!/usr/bin/env bash
# Installs the pinned test readers (infra/requirements-test.txt: pyarrow, DuckDB) into
# infra/.venv-test. The venv is created only when missing and pip runs only when the
# pins changed; after that nothing here touches the network. Tests find the interpreter
# at infra/.venv-test/bin/python (or $SIPHON_TEST_PYTHON).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-test"
reqs="$here/requirements-test.txt"
if [ ! -x "$venv/bin/python" ]; then
  echo "test-env: creating $venv"
  python3 -m venv "$venv"
fi
want="$(sha256sum "$reqs" | cut -d' ' -f1)"
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "test-env: installing the test readers into $venv (pinned in $reqs)"
  "$venv/bin/pip" install --disable-pip-version-check -q -r "$reqs" ||
    { echo "test-env: pip failed; retrying once"; sleep 5
      "$venv/bin/pip" install --disable-pip-version-check -q -r "$reqs"; }
  echo "$want" > "$venv/.requirements.sha256"
fi
echo "test-env: $("$venv/bin/python" -c 'import pyarrow, duckdb, prometheus_client; print("pyarrow", pyarrow.__version__, "duckdb", duckdb.__version__, "prometheus_client ok")')"
