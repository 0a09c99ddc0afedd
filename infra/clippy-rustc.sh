#!/bin/sh
# rustc for siphon's own crates during `make test`'s debug build: clippy-driver compiles
# exactly as rustc does and runs clippy's lints on the way, denying every warning, so one
# build is both the lint pass and the tree the tests run (`cargo clippy` checks all ~380
# dependencies a second time, in check mode, for nothing else). Cargo calls it as
# RUSTC_WORKSPACE_WRAPPER (`<this> <rustc> <args>`), only for workspace members;
# dependencies compile with plain rustc. `make lint` still runs `cargo clippy` itself.
exec clippy-driver "$@" -D warnings
