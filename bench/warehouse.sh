#!/usr/bin/env bash
# Benchmark: Postgres -> Postgres end to end (slot -> cdc-agent -> warehouse tables), against
# plain COPY of the same number of rows into the target in the same run (the ceiling).
#
#   bench/warehouse.sh                        1,000,000 changes
#   BENCH_TRANSACTIONS=100 bench/warehouse.sh
#
# Workload as bench/source.sh: 1,000 transactions of 500 inserts, 300 updates, 200 deletes on
# (id bigint pk, a int, b text, c timestamptz, d numeric, e jsonb).
set -euo pipefail
cd "$(dirname "$0")/.."
TX="${BENCH_TRANSACTIONS:-1000}"
CHANGES=$((TX * 1000))
WORK="${BENCH_DIR:-/var/tmp/cdc-agent-bench-warehouse}"
ADMIN_PORT=9198

bash scripts/testenv.sh start
eval "$(bash scripts/testenv.sh env)"
PORT="${CDC_TEST_PG_PORT:-55432}"
PSQL=("$CDC_TEST_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
cargo build --release --quiet
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
AGENT="$TARGET_DIR/release/cdc-agent"

rm -rf "$WORK" && mkdir -p "$WORK"
for db in cdc_wbench_src cdc_wbench_dst; do
    "${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$db'" >/dev/null
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done
"${PSQL[@]}" -d cdc_wbench_src -c "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb)" \
    -c "CREATE PUBLICATION cdc_wbench FOR TABLE bench" \
    -c "SELECT pg_create_logical_replication_slot('cdc_wbench', 'pgoutput')" >/dev/null

echo "bench: writing $CHANGES changes in $TX transactions"
python3 - "$TX" > "$WORK/workload.sql" <<'PY'
import sys
for t in range(int(sys.argv[1])):
    b = t * 500
    print(f"""BEGIN;
INSERT INTO bench SELECT g, g % 1000, md5(g::text) || md5((g + 1)::text), now(), g * 1.25, jsonb_build_object('k', g, 'tag', 'bench') FROM generate_series({b + 1}, {b + 500}) g;
UPDATE bench SET a = a + 1, d = d + 0.01 WHERE id > {b} AND id <= {b + 300};
DELETE FROM bench WHERE id > {b + 300} AND id <= {b + 500};
COMMIT;""")
PY
"${PSQL[@]}" -d cdc_wbench_src -f "$WORK/workload.sql"

now() { date +%s.%N; }

echo "bench: baseline, COPY of $CHANGES rows into the target"
"${PSQL[@]}" -d cdc_wbench_src -c "\\copy (SELECT g AS id, g % 1000 AS a, md5(g::text) || md5((g + 1)::text) AS b, now() AS c, g * 1.25 AS d, jsonb_build_object('k', g, 'tag', 'bench') AS e FROM generate_series(1, $CHANGES) g) TO '$WORK/rows.copy'"
"${PSQL[@]}" -d cdc_wbench_dst -c "CREATE TABLE copy_target (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb)"
t0=$(now)
"${PSQL[@]}" -d cdc_wbench_dst -c "\\copy copy_target FROM '$WORK/rows.copy'"
t1=$(now)
COPY_SECONDS=$(python3 -c "print($t1 - $t0)")

echo "bench: cdc-agent, slot -> Postgres tables"
cat > "$WORK/cdc-agent.toml" <<TOML
[agent]
name = "wbench"
state_dir = "$WORK/state"
admin_addr = "127.0.0.1:$ADMIN_PORT"

[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/cdc_wbench_src"
tables = ["public.bench"]
snapshot = "never"

[sink]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/cdc_wbench_dst"
schema = "replica"
TOML
peak_kb=0
t0=$(now)
RUST_LOG=warn ${BENCH_WRAPPER:-} "$AGENT" -c "$WORK/cdc-agent.toml" run 2>"$WORK/agent.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
while :; do
    if ! kill -0 $pid 2>/dev/null; then echo "bench: the agent died; see $WORK/agent.log" >&2; cat "$WORK/agent.log" >&2; exit 1; fi
    hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
    [ "${hwm:-0}" -gt "$peak_kb" ] && peak_kb=$hwm
    body=$( (exec 3<>/dev/tcp/127.0.0.1/$ADMIN_PORT && printf 'GET /status HTTP/1.1\r\nHost: x\r\n\r\n' >&3 && cat <&3) 2>/dev/null || true)
    n=0
    [[ $body =~ \"events_total\":([0-9]+) ]] && n=${BASH_REMATCH[1]}
    [ "$n" -ge "$CHANGES" ] && break
    sleep 0.1
done
t1=$(now)
kill -TERM $pid; wait $pid || true; trap - EXIT
AGENT_SECONDS=$(python3 -c "print($t1 - $t0)")

# The target must equal the source.
src_sum=$("${PSQL[@]}" -d cdc_wbench_src -At -c "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM (SELECT id, a, b, c, d, e FROM bench) t")
dst_sum=$("${PSQL[@]}" -d cdc_wbench_dst -At -c "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM (SELECT id, a, b, c, d, e FROM replica.bench) t")
[ "$src_sum" = "$dst_sum" ] && equal=yes || equal="NO ($src_sum vs $dst_sum)"

python3 - "$CHANGES" "$COPY_SECONDS" "$AGENT_SECONDS" "$peak_kb" "$equal" <<'PY'
import sys
changes, copy_s, agent_s, peak_kb, equal = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
print(f"changes:                {changes:,}")
print(f"COPY into the target:   {copy_s:6.2f} s  {changes / copy_s:10,.0f} rows/s")
print(f"cdc-agent -> postgres:  {agent_s:6.2f} s  {changes / agent_s:10,.0f} rows/s")
print(f"ratio:                  {copy_s / agent_s:.2f} of COPY's rate (target >= 0.5)")
print(f"peak RSS:               {peak_kb / 1024:.1f} MiB")
print(f"target equals source:   {equal}")
PY
