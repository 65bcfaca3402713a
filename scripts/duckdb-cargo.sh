#!/usr/bin/env bash
# The one cargo command that builds (and with no arguments, tests) everything DuckDB: the binary
# with the `duckdb` feature, the DuckDB sink's unit tests and tests/warehouse_duckdb.rs.
#
# The duckdb crate's bundled C++ build takes half an hour or more on two cores. It is cached in a
# target dir of its own, outside the clone, and every user of it (scripts/test.sh,
# scripts/quickstart.sh, bench/) goes through this one command: cargo builds that C++ again for any
# other set of packages, features or profile, because the build-time dependencies' features then
# differ. So never build it in the default dir nor with other flags.
#
#   scripts/duckdb-cargo.sh             build and run the DuckDB tests
#   scripts/duckdb-cargo.sh --no-run    build only; the binary is then "$(scripts/duckdb-cargo.sh --bin-path)"
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=/var/cache/cdc-agent/target-duckdb
if [ "${1:-}" = --bin-path ]; then
    echo "$CARGO_TARGET_DIR/release/cdc-agent"
    exit 0
fi
exec cargo test --release --features duckdb -p cdc-agent -p cdc-sink-duckdb --lib --test warehouse_duckdb "$@"
