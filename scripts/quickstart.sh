#!/usr/bin/env bash
# Quickstart: a throwaway local Postgres with logical replication (the same one the tests use), a
# small demo schema with live writes, and cdc-agent replicating it into a DuckDB file (the
# embedded default) that it then queries.
#
#   scripts/quickstart.sh                          runs the demo for ~15 s into DuckDB
#   QUICKSTART_SECONDS=60 scripts/quickstart.sh
#   QUICKSTART_SINK=jsonl scripts/quickstart.sh    the same into a JSON lines file
#
# The first run on a machine builds the agent (a few minutes on two cores) and fetches DuckDB's
# prebuilt C library (scripts/duckdb-lib.sh); both are cached in /var/cache/cdc-agent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
WORK="$ROOT/.tmp/quickstart"
SECONDS_TO_RUN="${QUICKSTART_SECONDS:-15}"
SINK="${QUICKSTART_SINK:-duckdb}"

CDC_TESTENV_FOR_TESTS=0 bash scripts/testenv.sh start
eval "$(bash scripts/testenv.sh env)"
PSQL=("$CDC_TEST_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${CDC_TEST_PG_PORT:-55432}" -U postgres)

echo "==> building cdc-agent (release; DuckDB's prebuilt C library is fetched once)"
bash scripts/duckdb-lib.sh >/dev/null
cargo build --release --quiet
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
AGENT="$TARGET_DIR/release/cdc-agent"

echo "==> creating the demo database cdc_demo"
rm -rf "$WORK" && mkdir -p "$WORK"
"${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'cdc_demo'" >/dev/null
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS cdc_demo WITH (FORCE)" -c "CREATE DATABASE cdc_demo"
"${PSQL[@]}" -d cdc_demo <<'SQL'
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text, created_at timestamptz DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers, status text,
                     total numeric(10,2), items jsonb, placed_at timestamptz DEFAULT now());
INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 100) g;
INSERT INTO orders (customer_id, status, total, items)
  SELECT 1 + g % 100, 'new', (g * 7 % 500) + 0.99, jsonb_build_array(jsonb_build_object('sku', 'A' || g, 'qty', 1 + g % 3))
  FROM generate_series(1, 1000) g;
SQL

cat > "$WORK/cdc-agent.toml" <<TOML
[agent]
name = "demo"
state_dir = "$WORK/state"
admin_addr = "127.0.0.1:9187"

[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:${CDC_TEST_PG_PORT:-55432}/cdc_demo"
tables = ["public.*"]
snapshot = "initial"

TOML
if [ "$SINK" = duckdb ]; then
    cat >> "$WORK/cdc-agent.toml" <<TOML
[sink]
type = "duckdb"
path = "$WORK/demo.duckdb"
schema = "main"
TOML
else
    cat >> "$WORK/cdc-agent.toml" <<TOML
[sink]
type = "jsonl"
path = "$WORK/changes.jsonl"
TOML
fi

echo "==> starting cdc-agent: initial snapshot of 1,100 rows, then streaming"
"$AGENT" -c "$WORK/cdc-agent.toml" run 2>"$WORK/agent.log" &
AGENT_PID=$!
trap 'kill $AGENT_PID 2>/dev/null || true' EXIT

echo "==> live writes for ${SECONDS_TO_RUN}s (new orders, status changes, cancellations)"
end=$((SECONDS + SECONDS_TO_RUN))
while [ $SECONDS -lt $end ]; do
    "${PSQL[@]}" -d cdc_demo <<'SQL'
BEGIN;
INSERT INTO orders (customer_id, status, total, items)
  SELECT 1 + (random() * 99)::int, 'new', round((random() * 500)::numeric, 2), '[{"sku": "B1", "qty": 2}]'
  FROM generate_series(1, 20);
UPDATE orders SET status = 'paid' WHERE id IN (SELECT id FROM orders WHERE status = 'new' ORDER BY random() LIMIT 10);
DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE status = 'paid' ORDER BY random() LIMIT 2);
COMMIT;
SQL
    sleep 0.5
done
sleep 1

echo
echo "==> cdc-agent status (while running)"
"$AGENT" -c "$WORK/cdc-agent.toml" status
if [ "$SINK" = jsonl ]; then
    echo
    echo "==> the last two change records in $WORK/changes.jsonl ($(wc -l < "$WORK/changes.jsonl") records)"
    tail -n 2 "$WORK/changes.jsonl"
fi
echo
kill -TERM $AGENT_PID
wait $AGENT_PID || true
trap - EXIT
echo "==> stopped (SIGTERM drains and checkpoints). Status now:"
"$AGENT" -c "$WORK/cdc-agent.toml" status
if [ "$SINK" = duckdb ]; then
    echo
    echo "==> querying the replica (DuckDB's Python package, installed into $ROOT/.tmp/venv)"
    if [ ! -x "$ROOT/.tmp/venv/bin/python" ]; then
        python3 -m venv "$ROOT/.tmp/venv" && "$ROOT/.tmp/venv/bin/pip" install -q duckdb || true
    fi
    if "$ROOT/.tmp/venv/bin/python" -c 'import duckdb' 2>/dev/null; then
        "$ROOT/.tmp/venv/bin/python" - "$WORK/demo.duckdb" <<'PY'
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print(con.sql("SELECT status, count(*) AS orders, sum(total) AS total FROM main.orders GROUP BY status ORDER BY status"))
print(con.sql("SELECT count(*) AS customers FROM main.customers"))
PY
    fi
    cat <<EOF2

The replica is $WORK/demo.duckdb. Query it with the DuckDB CLI or Python:
  duckdb $WORK/demo.duckdb "SELECT status, count(*) FROM main.orders GROUP BY status"
  $ROOT/.tmp/venv/bin/python -c "import duckdb; print(duckdb.connect('$WORK/demo.duckdb', read_only=True).sql('FROM main.orders LIMIT 5'))"
(Stop the agent first: DuckDB lets one process write a file at a time.)
EOF2
fi
cat <<EOF2

Try it yourself:
  $AGENT -c $WORK/cdc-agent.toml run        # resumes from the checkpoint
  $AGENT -c $WORK/cdc-agent.toml status --json
EOF2
