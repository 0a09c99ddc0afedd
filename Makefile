# siphon: the stable interface. `make demo` runs the main job locally, `make test`
# runs every test (what CI runs), `make up` / `make down` start and stop the local stack.
SHELL := /bin/bash
, := ,
.DEFAULT_GOAL := help
CARGO ?= cargo
ENV := infra/local/local.env

.PHONY: help up down test demo serve bench-load bench-dump bench-export bench-pull bench-dump-to-bucket bench-auth fuzz build build-lambdas fmt lint

help:
	@echo "make demo        run the main job locally: stack up, sample files into S3, import, dump"
	@echo "make test        run every test (unit + integration against Postgres and LocalStack)"
	@echo "make up / down   start / stop the local stack (Postgres + LocalStack S3/SQS)"
	@echo "make serve       run every function locally at http://127.0.0.1:8080"
	@echo "make bench-load  loader benchmark against psql \\copy"
	@echo "make bench-dump  dump benchmark against psql \\copy ... to stdout"
	@echo "make bench-export  \$$export benchmark against psql \\copy + aws s3 cp"
	@echo "make bench-pull  \$$import-pnp from one siphon into another against a Bulk Data download + load-from-bucket"
	@echo "make bench-dump-to-bucket  dump-to-bucket (gzip ndjson, Parquet) against psql \\copy + aws s3 cp"
	@echo "make bench-inventory  import planning from a 1,000,000-object S3 Inventory"
	@echo "make bench-auth  HTTP Basic latency of a Client, alone and under 50 wrong-password requests/s"
	@echo "make fuzz        the property-based fuzz targets with 1,000,000 cases each (make test runs 256)"
	@echo "make build-lambdas  sam build of every function (release, x86_64) into .aws-sam/build"

up:
	@bash infra/local/up.sh

down:
	@bash infra/local/down.sh

build:
	$(CARGO) build --workspace

# `sam build` of every function of template.yaml (release, x86_64; target-release/).
build-lambdas:
	@bash infra/build-lambdas.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every test: formatting and clippy, the template checks and its `sam build`, unit
# tests, integration tests against the real local stack, then the Lambda-level tests
# again on the bootstraps `sam build` made (their output shown: the end-to-end one prints
# each function's cold start as the Lambda emulator reports it; .ci/run builds them
# unoptimised, so a cold-start figure comes from `make build-lambdas` and that test).
# Each step prints the clock when it starts, so a CI log says where the time went.
# Every cargo step builds the whole workspace with its tests (never `-p`): one feature
# set, so the debug tree compiles once and each later step finds it fresh.
# What the debug build does not need runs beside it, its output kept in $(SIDE_LOG) and
# shown after the build: the local stack (mostly installing and starting LocalStack),
# clippy (its check-mode tree in target/clippy, so neither waits for the other's lock),
# the template and dependency checks (mostly pip and Python) and `sam build` (its own
# target dir). On 2 cores the builds share the CPU, and the waits of the others
# (downloads, a Python start-up, one long crate at the end of a build) are filled.
# (Clippy is not run as the debug build's rustc wrapper: clippy-driver turns MIR
# optimisations off, so the tests would run code rustc does not build; one test's
# stack overflowed that way.)
STEP = @echo "== $$(date -u +%T) make test: $(1)"
SIDE_LOG := target/make-test-beside-the-build.log
# Every test makes its own database (siphon_test_*): dropped before the tests and after a
# green run, so the cluster does not grow run after run (a crash recovery fsyncs it all).
DROP_TEST_DBS = set -a; source $(ENV); set +a; \
  psql "$$DATABASE_URL" -qtAc "SELECT 'DROP DATABASE ' || quote_ident(datname) || ';' FROM pg_database WHERE datname LIKE 'siphon\_test\_%'" | psql "$$DATABASE_URL" -q >/dev/null
test:
	$(call STEP,rustfmt)
	$(CARGO) fmt --all -- --check
	$(call STEP,debug build; beside it: stack up$(,) template and dependency checks$(,) clippy$(,) sam build)
	@mkdir -p target; \
	  setsid bash -c 'set -e; bash infra/local/up.sh; \
	    echo "== $$(date -u +%T) template and dependency checks"; \
	    bash infra/check-template.sh; bash infra/check-deps.sh; bash infra/test-env.sh; \
	    echo "== $$(date -u +%T) clippy"; \
	    CARGO_TARGET_DIR=target/clippy $(CARGO) clippy --workspace --all-targets -- -D warnings; \
	    echo "== $$(date -u +%T) sam build"; \
	    bash infra/build-lambdas.sh; \
	    echo "== $$(date -u +%T) done"' </dev/null >$(SIDE_LOG) 2>&1 & side=$$!; \
	  if ! $(CARGO) build --workspace --bins --tests; then kill -- -$$side 2>/dev/null; exit 1; fi; \
	  echo "== $$(date -u +%T) make test: debug build done; waiting for what ran beside it"; \
	  rc=0; wait $$side || rc=$$?; \
	  sed 's/^/  | /' $(SIDE_LOG); \
	  if [ $$rc -ne 0 ]; then echo "make test: stack, clippy, checks or sam build failed ($$rc): $(SIDE_LOG)" >&2; exit $$rc; fi
	@$(DROP_TEST_DBS)
	$(call STEP,tests)
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --no-fail-fast && \
	  { echo "== $$(date -u +%T) make test: Lambda tests on the sam bootstraps"; \
	    SIPHON_BOOTSTRAPS=sam $(CARGO) nextest run --workspace -E 'binary(lambda_rie)' --no-fail-fast --success-output final; }; \
	else \
	  $(CARGO) test --workspace --no-fail-fast && \
	  SIPHON_BOOTSTRAPS=sam $(CARGO) test --workspace --test lambda_rie --no-fail-fast; \
	fi
	$(call STEP,faults)
	@$(MAKE) --no-print-directory faults-ci
	@$(DROP_TEST_DBS)
	$(call STEP,done)

# The main job, locally: stack up, generated sample files into the bucket, import, dump.
# The first run compiles while the stack starts beside it (up.sh's output follows the
# build); the `demo-build` profile leaves the dependencies unoptimised (Cargo.toml).
demo:
	@echo "make demo: the first run compiles ~330 crates (about 5 minutes on 2 cores) while the local stack starts; later runs take seconds"
	@mkdir -p target; bash infra/local/up.sh </dev/null >target/make-demo-up.log 2>&1 & up=$$!; \
	  if ! $(CARGO) build --profile demo-build -p siphon-tests --bin siphon-demo; then wait $$up; exit 1; fi; \
	  rc=0; wait $$up || rc=$$?; cat target/make-demo-up.log; exit $$rc
	@set -a; source $(ENV); set +a; ./target/demo-build/siphon-demo

# Every function on the built code: HTTP API + dumps at 127.0.0.1:8080, loader on the queue.
serve: up
	$(CARGO) build --release -p siphon-local
	@set -a; source $(ENV); set +a; ./target/release/siphon-local

# In-process dump stream, then $dump / $dump-sql through make serve's binary read by curl,
# each against psql \copy; SIPHON_BENCH_BEFORE=path adds another siphon-local build.
bench-dump: up
	$(CARGO) build --release -p siphon-local -p siphon-tests --bin siphon-local --bin siphon-bench-dump
	@set -a; source $(ENV); set +a; ./target/release/siphon-bench-dump

bench-load: up
	$(CARGO) build --release -p siphon-tests --bin siphon-bench-load
	@set -a; source $(ENV); set +a; ./target/release/siphon-bench-load

# $export of 1,000,000 resources through make serve's binary vs psql \copy + aws s3 cp.
bench-export: up
	$(CARGO) build --release -p siphon-local -p siphon-tests --bin siphon-local --bin siphon-bench-export
	@set -a; source $(ENV); set +a; ./target/release/siphon-bench-export

# A pull import ($import-pnp) of 500,000 resources from one make serve binary into another,
# vs a Bulk Data download with curl + aws s3 cp + load-from-bucket.
bench-pull: up
	$(CARGO) build --release -p siphon-local -p siphon-tests --bin siphon-local --bin siphon-bench-pull
	@set -a; source $(ENV); set +a; ./target/release/siphon-bench-pull

# dump-to-bucket of 1,000,000 resources (gzip ndjson, Parquet) through make serve's binary
# vs psql \copy + aws s3 cp.
bench-dump-to-bucket: up
	$(CARGO) build --release -p siphon-local -p siphon-tests --bin siphon-local --bin siphon-bench-dump-to-bucket
	@set -a; source $(ENV); set +a; ./target/release/siphon-bench-dump-to-bucket

# Import planning from an S3 Inventory of 1,000,000 objects (CSV, Parquet) through make
# serve's binary, against 500,000 LoaderFiles already there.
bench-inventory: up
	$(CARGO) build --release -p siphon-local -p siphon-tests --bin siphon-local --bin siphon-bench-inventory
	@set -a; source $(ENV); set +a; ./target/release/siphon-bench-inventory

# HTTP Basic through make serve's binary: a Client's requests alone, then under a flood of
# wrong passwords. SIPHON_BENCH_SERVER=path runs another siphon-local build (before/after).
bench-auth: up
	$(CARGO) build --release -p siphon-local -p siphon-tests --bin siphon-local --bin siphon-bench-auth
	@set -a; source $(ENV); set +a; ./target/release/siphon-bench-auth

# The parsers that read user bytes, fuzzed with proptest (common/tests/fuzz.rs and the
# unit tests named fuzz_*): `make test` runs proptest's default 256 cases per target,
# this a million each (release build; FUZZ_CASES=n to change).
FUZZ_CASES ?= 1000000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p siphon-common -- fuzz

# Fault injection against siphon-local children: its own Postgres cluster (created and
# dropped here, run as root), LocalStack, a fault-injecting proxy. Logs in target/faults/.
# `make faults`: full (release build, default leases, K=20 kills); `make faults-ci`:
# reduced (short leases, K=3, smaller files), a few minutes on the debug build `make test`
# has just built (recovery times are set by leases and the sweep, not by build speed).
.PHONY: faults faults-ci faults-tools
# Scenario 7's transaction pooler: Debian's PgBouncer, started by the suite on loopback.
faults-tools:
	@[ -x /usr/sbin/pgbouncer ] || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; }

faults: up faults-tools
	$(CARGO) build --release -p siphon-local -p siphon-tests --bin siphon-local --bin siphon-faults
	./target/release/siphon-faults

faults-ci: up faults-tools
	$(CARGO) build --workspace --bins --tests
	@set -a; source $(ENV); set +a; \
	  SIPHON_LOCAL_BIN=$(CURDIR)/target/debug/siphon-local ./target/debug/siphon-faults --ci
