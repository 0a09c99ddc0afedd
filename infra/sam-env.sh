# Sourced (not run) by infra/check-template.sh and infra/build-lambdas.sh, after they set
# `me` (a name for log lines). Gives them the pinned tools of infra/requirements-sam.txt
# (SAM CLI, cfn-lint, cargo-lambda with the zig it uses as C compiler and linker) in
# infra/.venv-sam, and an environment in which SAM CLI never calls out.
#
# The venv is created only when missing, and pip runs only when a tool is missing or the
# pins changed; after that nothing here touches the network. Sets `sam_venv`.

sam_venv="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.venv-sam"
sam_reqs="$(dirname "$sam_venv")/requirements-sam.txt"

if [ ! -x "$sam_venv/bin/python" ]; then
  echo "$me: creating $sam_venv"
  python3 -m venv "$sam_venv"
fi
sam_want="$(sha256sum "$sam_reqs" | cut -d' ' -f1)"
if [ ! -x "$sam_venv/bin/sam" ] || [ ! -x "$sam_venv/bin/cfn-lint" ] ||
   [ ! -x "$sam_venv/bin/cargo-lambda" ] ||
   [ "$(cat "$sam_venv/.requirements.sha256" 2>/dev/null)" != "$sam_want" ]; then
  echo "$me: installing SAM CLI, cfn-lint and cargo-lambda into $sam_venv (pinned in $sam_reqs)"
  # One retry: a registry hiccup should not fail a whole CI run.
  "$sam_venv/bin/pip" install --disable-pip-version-check -q -r "$sam_reqs" ||
    { echo "$me: pip failed; retrying once"; sleep 5
      "$sam_venv/bin/pip" install --disable-pip-version-check -q -r "$sam_reqs"; }
  echo "$sam_want" > "$sam_venv/.requirements.sha256"
fi

# SAM CLI: a region (sam validate wants one; neither `validate --lint` nor `build` calls
# AWS), no telemetry, and a config dir of its own whose last version check lies in the
# future, so it never asks PyPI for a newer release after a command. The timestamp must
# be a JSON float: SAM CLI ignores an integer there (isinstance(value, float)) and then
# checks on every run.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_REGION="${AWS_REGION:-$AWS_DEFAULT_REGION}"
export SAM_CLI_TELEMETRY=0
export __SAM_CLI_APP_DIR="$sam_venv/sam-cli-home"
mkdir -p "$__SAM_CLI_APP_DIR"
if ! grep -q '"lastVersionCheck": 4102444800\.0' "$__SAM_CLI_APP_DIR/metadata.json" 2>/dev/null; then
  printf '{"telemetryEnabled": false, "lastVersionCheck": 4102444800.0}\n' \
    > "$__SAM_CLI_APP_DIR/metadata.json"
fi
