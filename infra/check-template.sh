#!/usr/bin/env bash
# Checks template.yaml offline: `cfn-lint template.yaml` and `sam validate --lint`.
#
# Installs the pinned SAM CLI + cfn-lint (infra/requirements-sam.txt) into
# infra/.venv-sam: the venv is created only when missing, and pip runs only when the
# tools are missing or the pins changed. After that nothing here touches the network:
# SAM CLI telemetry is off and its weekly PyPI version check is parked (own config dir).
# Also prints the path of the Lambda runtime interface emulator that aws-sam-cli ships
# (used by tests/tests/lambda_rie.rs) and fails if it is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$here/.venv-sam"
reqs="$here/requirements-sam.txt"

if [ ! -x "$venv/bin/python" ]; then
  echo "check-template: creating $venv"
  python3 -m venv "$venv"
fi
want="$(sha256sum "$reqs" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/sam" ] || [ ! -x "$venv/bin/cfn-lint" ] ||
   [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "check-template: installing SAM CLI and cfn-lint into $venv (pinned in $reqs)"
  # One retry: a registry hiccup should not fail a whole CI run.
  "$venv/bin/pip" install --disable-pip-version-check -q -r "$reqs" ||
    { echo "check-template: pip failed; retrying once"; sleep 5
      "$venv/bin/pip" install --disable-pip-version-check -q -r "$reqs"; }
  echo "$want" > "$venv/.requirements.sha256"
fi

# SAM CLI: a region (sam validate wants one; no AWS call is made with --lint), no
# telemetry, and a config dir of its own whose last version check lies in the future,
# so it never calls pypi.org after a command.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_REGION="${AWS_REGION:-$AWS_DEFAULT_REGION}"
export SAM_CLI_TELEMETRY=0
export __SAM_CLI_APP_DIR="$venv/sam-cli-home"
mkdir -p "$__SAM_CLI_APP_DIR"
if [ ! -f "$__SAM_CLI_APP_DIR/metadata.json" ]; then
  printf '{"telemetryEnabled": false, "lastVersionCheck": 4102444800}\n' \
    > "$__SAM_CLI_APP_DIR/metadata.json"
fi

cd "$root"
echo "check-template: $("$venv/bin/cfn-lint" --version)"
"$venv/bin/cfn-lint" template.yaml
echo "check-template: cfn-lint template.yaml: no errors, no warnings"
echo "check-template: $("$venv/bin/sam" --version)"
"$venv/bin/sam" validate --lint --template template.yaml

site="$("$venv/bin/python" -c 'import os, samcli; print(os.path.dirname(os.path.dirname(samcli.__file__)))')"
rie="$site/samcli/local/rapid/aws-lambda-rie-x86_64"
if [ ! -x "$rie" ]; then
  echo "check-template: runtime interface emulator missing: $rie" >&2
  exit 1
fi
echo "check-template: runtime interface emulator: ${rie#"$root"/}"
