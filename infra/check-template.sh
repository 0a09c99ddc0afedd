#!/usr/bin/env bash
# Checks template.yaml offline: `cfn-lint template.yaml`, `sam validate --lint` and the
# IaC security scan `checkov -f template.yaml --framework cloudformation` (no failed
# check; every skip is an inline `checkov:skip=ID:reason` in the template).
#
# Installs the pinned SAM CLI + cfn-lint (infra/requirements-sam.txt) into
# infra/.venv-sam through infra/sam-env.sh: the venv is created only when missing, and pip
# runs only when the tools are missing or the pins changed. After that nothing here
# touches the network: SAM CLI telemetry is off and its weekly PyPI version check is
# parked (own config dir). checkov is pinned in infra/requirements-checkov.txt and lives
# in infra/.venv-checkov (infra/checkov-env.sh, the same rules).
# Also prints the path of the Lambda runtime interface emulator that aws-sam-cli ships
# (used by tests/tests/lambda_rie.rs) and fails if it is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
me=check-template
# shellcheck source=infra/sam-env.sh
. "$here/sam-env.sh"
venv="$sam_venv"
# shellcheck source=infra/checkov-env.sh
. "$here/checkov-env.sh"

cd "$root"
echo "check-template: $("$venv/bin/cfn-lint" --version)"
"$venv/bin/cfn-lint" template.yaml
echo "check-template: cfn-lint template.yaml: no errors, no warnings"
echo "check-template: $("$venv/bin/sam" --version)"
"$venv/bin/sam" validate --lint --template template.yaml
echo "check-template: checkov $("$checkov_venv/bin/checkov" --version)"
# --compact --quiet: only failed checks are printed, then the summary line.
summary="$("$checkov_venv/bin/checkov" -f template.yaml --framework cloudformation \
  --skip-download --compact --quiet --output cli 2>&1)" ||
  { echo "$summary" >&2; echo "check-template: checkov found failed checks" >&2; exit 1; }
echo "check-template: checkov template.yaml: $(echo "$summary" | grep -m1 'Passed checks')"

site="$("$venv/bin/python" -c 'import os, samcli; print(os.path.dirname(os.path.dirname(samcli.__file__)))')"
rie="$site/samcli/local/rapid/aws-lambda-rie-x86_64"
if [ ! -x "$rie" ]; then
  echo "check-template: runtime interface emulator missing: $rie" >&2
  exit 1
fi
echo "check-template: runtime interface emulator: ${rie#"$root"/}"
