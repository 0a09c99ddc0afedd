#!/usr/bin/env bash
# Installs SAM CLI + cfn-lint into infra/.venv-sam (once; again when the pins change),
# then checks template.yaml offline: cfn-lint and `sam validate --lint`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-sam"
want=$(sha256sum "$here/requirements-sam.txt" | cut -d' ' -f1)
if [ ! -x "$venv/bin/sam" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "installing SAM CLI and cfn-lint into $venv"
  python3 -m venv "$venv"
  # One retry: a registry hiccup should not fail a whole CI run.
  "$venv/bin/pip" install -q -r "$here/requirements-sam.txt" ||
    { echo "pip failed; retrying once"; sleep 5; "$venv/bin/pip" install -q -r "$here/requirements-sam.txt"; }
  echo "$want" > "$venv/.requirements.sha256"
fi
cd "$here/.."
"$venv/bin/cfn-lint" template.yaml
SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 "$venv/bin/sam" validate --lint --template template.yaml
