#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, starts the private test
# servers, builds, and runs every test against them. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

# The servers the tests talk to (installs the PostgreSQL server package if it is missing).
bash scripts/testenv.sh start
eval "$(bash scripts/testenv.sh env)"

# Format and lints first: cheap, and they fail fast.
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

# Integration tests spawn several agents and servers at once; two threads keep a 2-core machine
# responsive enough for the timing-free waits in the tests.
cargo test -- --test-threads="${CDC_TEST_THREADS:-3}"

# The DuckDB sink (behind the `duckdb` feature) and its end-to-end tests, in a target dir of their
# own: the duckdb crate's bundled C++ build takes half an hour or more on two cores. That dir keeps
# it cached across runs, one build per command below (their build-dependency features differ, so
# each has its own); building it in the default dir, in another profile, or after a change of the
# workspace's build-time dependencies (e.g. serde features) starts that half hour again.
CARGO_TARGET_DIR=/var/cache/cdc-agent/target-duckdb cargo test --release -p cdc-sink-duckdb
CARGO_TARGET_DIR=/var/cache/cdc-agent/target-duckdb cargo test --release --features duckdb --test warehouse_duckdb
