#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, starts the private test
# servers, builds, and runs every test against them. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

# The servers the tests talk to (installs the PostgreSQL server package if it is missing).
bash scripts/testenv.sh start
eval "$(bash scripts/testenv.sh env)"

# promtool checks the alert rules in tests/operations.rs (best effort: without it the test
# parses them as YAML only).
command -v promtool >/dev/null || { [ "$(id -u)" -eq 0 ] && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; } || true

# DuckDB's prebuilt C library, which the default build links (fetched once, hash-checked).
bash scripts/duckdb-lib.sh >/dev/null

# Format and lints first: cheap, and they fail fast.
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

# Every crate's unit tests and every end-to-end test, DuckDB's included (one build). Integration
# tests spawn several agents and servers at once; three threads keep a 2-core machine responsive
# enough for the timing-free waits in the tests.
cargo test -- --test-threads="${CDC_TEST_THREADS:-3}"

# The container image and the compose stack (docker/image.sh test, docker/compose-test.sh): opt-in,
# since they build a release binary (minutes on two cores) and start dockerd.
if [ "${CDC_TEST_DOCKER:-0}" = 1 ]; then
    bash docker/image.sh test
    bash docker/compose-test.sh
fi
