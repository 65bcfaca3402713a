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
# own: the duckdb crate's bundled C++ build takes about half an hour on two cores. That dir keeps
# the one release build of it cached across runs; building it in the default dir (or in another
# profile, or with other features) would start that half hour again.
CARGO_TARGET_DIR=/var/cache/cdc-agent/target-duckdb cargo test --release -p cdc-sink-duckdb
CARGO_TARGET_DIR=/var/cache/cdc-agent/target-duckdb cargo test --release --features duckdb --test warehouse_duckdb
