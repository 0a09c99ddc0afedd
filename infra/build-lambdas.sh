#!/usr/bin/env bash
# Builds every function of template.yaml with `sam build`, offline, for x86_64 (the only
# Rust target on the CI machines), and prints each bootstrap with its size.
#
#   1. `cargo lambda build --release --x86-64 --bin <every Binary>`: one cargo invocation
#      for all functions, so the dependencies compile once with one feature set and the
#      links overlap. It is the command SAM runs per function below, with every binary at
#      once and the target named (SAM names none for x86_64: cargo-lambda then builds for
#      the host, x86_64 here, into the same target/x86_64-unknown-linux-gnu).
#   2. `sam build --parameter-overrides Architecture=x86_64`: SAM's rust-cargolambda
#      builder runs `cargo lambda build --release --bin <Binary>` in the workspace root for
#      each function (all fresh after step 1: seconds) and copies
#      <target>/lambda/<Binary>/bootstrap to .aws-sam/build/<LogicalId>/bootstrap.
#
# `sam build` is the real path here, not a stand-in: it needs no Docker and no AWS account,
# and it makes no network call (checked in a network namespace without any network). SAM
# CLI and cargo-lambda (whose PyPI wheel brings zig, the C compiler and linker for the
# crates with C parts) are pinned in infra/requirements-sam.txt and installed into
# infra/.venv-sam by infra/sam-env.sh, which also keeps SAM CLI from phoning home.
#
# Release artefacts go to target-release/ (CARGO_TARGET_DIR; SIPHON_LAMBDA_TARGET_DIR
# overrides it), never the dev target/: cargo-lambda builds with flags of its own
# (panic=abort, target-cpu=haswell, --target), so nothing could be shared with a dev or
# bench build, and a 10-minute release build must not hold the dev target's lock.
# arm64 (the template's default) needs `rustup target add aarch64-unknown-linux-gnu`
# and is not built here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
me=build-lambdas

if [ "$(uname -m)" != x86_64 ]; then
  # SAM passes no target flag for x86_64: on another host it would build the host's arch.
  echo "$me: this script builds x86_64 on an x86_64 host; this is $(uname -m)" >&2
  exit 1
fi

# shellcheck source=infra/sam-env.sh
. "$here/sam-env.sh"
# sam finds cargo-lambda (and cargo-lambda its zig) on PATH.
export PATH="$sam_venv/bin:$PATH"
export CARGO_TARGET_DIR="${SIPHON_LAMBDA_TARGET_DIR:-$root/target-release}"
cd "$root"

# LogicalId and Binary of every rust-cargolambda function, read from the template with
# SAM's own YAML loader (it understands !Ref, !GetAtt, ...).
mapfile -t functions < <("$sam_venv/bin/python" - <<'EOF'
from samcli.yamlhelper import yaml_parse
with open("template.yaml") as f:
    template = yaml_parse(f.read())
for logical_id, res in template["Resources"].items():
    meta = res.get("Metadata") or {}
    if res.get("Type") == "AWS::Serverless::Function" and meta.get("BuildMethod") == "rust-cargolambda":
        print(logical_id, meta["BuildProperties"]["Binary"])
EOF
)
if [ "${#functions[@]}" -eq 0 ]; then
  echo "$me: no rust-cargolambda function in template.yaml" >&2
  exit 1
fi
bins=()
for f in "${functions[@]}"; do bins+=(--bin "${f#* }"); done

echo "$me: $(cargo lambda --version), $(cargo --version)"
echo "$me: release build of ${#functions[@]} functions for x86_64 into ${CARGO_TARGET_DIR#"$root"/}"
start=$(date +%s)
cargo lambda build --release --x86-64 "${bins[@]}"
echo "$me: $("$sam_venv/bin/sam" --version)"
rm -rf .aws-sam/build
"$sam_venv/bin/sam" build --build-in-source --template template.yaml \
  --parameter-overrides Architecture=x86_64
secs=$(( $(date +%s) - start ))

missing=0
for f in "${functions[@]}"; do
  id="${f% *}" bin="${f#* }"
  boot=".aws-sam/build/$id/bootstrap"
  # An x86-64 ELF executable (e_machine 0x3e), and the binary this function names (same-
  # named `bootstrap`s in a shared target dir would otherwise go unnoticed).
  if [ ! -x "$boot" ] || [ "$(od -An -tx1 -j18 -N2 "$boot" | tr -d ' ')" != 3e00 ] ||
     ! cmp -s "$boot" "$CARGO_TARGET_DIR/lambda/$bin/bootstrap"; then
    echo "$me: MISSING or wrong: $boot ($bin)" >&2
    missing=1
    continue
  fi
  size=$(stat -c %s "$boot")
  # What `sam deploy` uploads is the bootstrap zipped (deflate): show that size too.
  zipped=$("$sam_venv/bin/python" -c '
import io, sys, zipfile
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(sys.argv[1], "bootstrap")
print(len(buf.getvalue()))' "$boot")
  printf '%s: %-16s %-16s %10d bytes (%4.1f MiB, zipped %4.1f MiB)  %s\n' "$me" "$id" "$bin" \
    "$size" "$(awk -v s="$size" 'BEGIN { print s / 1048576 }')" \
    "$(awk -v s="$zipped" 'BEGIN { print s / 1048576 }')" "$boot"
done
echo "$me: sam build (x86_64, release) in ${secs}s"
exit "$missing"
