#!/usr/bin/env bash
# Benchmark: the Postgres source into a JSON lines file, against pg_recvlogical draining the same
# slot contents with pgoutput to /dev/null, in the same run.
#
#   bench/source.sh                 1,000,000 changes (1,000 transactions of 1,000)
#   BENCH_TRANSACTIONS=100 bench/source.sh
#
# Workload (shared/notes/FINDINGS.md): table (id bigint pk, a int, b text(64), c timestamptz,
# d numeric, e jsonb); each transaction 500 inserts, 300 updates, 200 deletes.
set -euo pipefail
cd "$(dirname "$0")/.."
TX="${BENCH_TRANSACTIONS:-1000}"
CHANGES=$((TX * 1000))
WORK="${BENCH_DIR:-/var/tmp/cdc-agent-bench}"

bash scripts/testenv.sh start
eval "$(bash scripts/testenv.sh env)"
PORT="${CDC_TEST_PG_PORT:-55432}"
PSQL=("$CDC_TEST_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
cargo build --release --quiet
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
AGENT="$TARGET_DIR/release/cdc-agent"

rm -rf "$WORK" && mkdir -p "$WORK"
"${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = 'cdc_bench'" >/dev/null
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS cdc_bench WITH (FORCE)" -c "CREATE DATABASE cdc_bench"
"${PSQL[@]}" -d cdc_bench <<'SQL'
CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb);
CREATE PUBLICATION cdc_bench FOR TABLE bench;
SELECT 'slot' FROM pg_create_logical_replication_slot('cdc_bench', 'pgoutput');
SELECT 'slot' FROM pg_create_logical_replication_slot('bench_recvlogical', 'pgoutput');
SQL

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
start=$(date +%s.%N)
"${PSQL[@]}" -d cdc_bench -f "$WORK/workload.sql"
END_LSN=$("${PSQL[@]}" -d cdc_bench -At -c "SELECT pg_logical_emit_message(false, 'cdc-bench', 'end')")
echo "bench: workload written in $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s; ends at $END_LSN"

echo "bench: pg_recvlogical (pgoutput to /dev/null)"
t0=$(date +%s.%N)
"$CDC_TEST_PG_BIN/pg_recvlogical" -h 127.0.0.1 -p "$PORT" -U postgres -d cdc_bench --slot bench_recvlogical \
    --start --endpos "$END_LSN" --no-loop -o proto_version=1 -o publication_names=cdc_bench -o messages=true -f /dev/null
t1=$(date +%s.%N)
RECV_SECONDS=$(python3 -c "print($t1 - $t0)")

echo "bench: cdc-agent (jsonl file)"
cat > "$WORK/cdc-agent.toml" <<TOML
[agent]
name = "bench"
state_dir = "$WORK/state"
admin_addr = "127.0.0.1:9199"

[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/cdc_bench"
tables = ["public.bench"]
snapshot = "never"

[sink]
type = "jsonl"
path = "$WORK/changes.jsonl"
TOML
t0=$(date +%s.%N)
RUST_LOG=warn "$AGENT" -c "$WORK/cdc-agent.toml" run 2>"$WORK/agent.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
peak_kb=0
while :; do
    if ! kill -0 $PID 2>/dev/null; then echo "bench: the agent died; see $WORK/agent.log" >&2; cat "$WORK/agent.log" >&2; exit 1; fi
    hwm=$(awk '/VmHWM/ {print $2}' /proc/$PID/status 2>/dev/null || echo 0)
    [ "${hwm:-0}" -gt "$peak_kb" ] && peak_kb=$hwm
    n=$(python3 - <<PY 2>/dev/null || echo 0
import json, socket
s = socket.create_connection(("127.0.0.1", 9199), timeout=2)
s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
print(json.loads(data.split(b"\r\n\r\n", 1)[1])["events_total"])
PY
)
    if [ "${n:-0}" -ge "$CHANGES" ]; then break; fi
    sleep 0.1
done
t1=$(date +%s.%N)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$PID/status 2>/dev/null || echo 0)
[ "${hwm:-0}" -gt "$peak_kb" ] && peak_kb=$hwm
kill -TERM $PID; wait $PID || true; trap - EXIT
AGENT_SECONDS=$(python3 -c "print($t1 - $t0)")
LINES=$(wc -l < "$WORK/changes.jsonl")

python3 - "$CHANGES" "$RECV_SECONDS" "$AGENT_SECONDS" "$peak_kb" "$LINES" <<'PY'
import sys
changes, recv_s, agent_s, peak_kb, lines = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
recv_rate, agent_rate = changes / recv_s, changes / agent_s
print(f"changes:            {changes:,} (jsonl lines written: {lines:,})")
print(f"pg_recvlogical:     {recv_s:6.2f} s  {recv_rate:10,.0f} rows/s")
print(f"cdc-agent -> jsonl: {agent_s:6.2f} s  {agent_rate:10,.0f} rows/s")
print(f"ratio:              {agent_rate / recv_rate:.2f} of pg_recvlogical (target >= 0.8)")
print(f"peak RSS:           {peak_kb / 1024:.1f} MiB (target < 64 MiB)")
PY
