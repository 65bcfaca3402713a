#!/usr/bin/env bash
# Benchmark: Postgres -> cdc-agent -> message sinks, against the same changes into a JSON lines
# file in the same run (interleaved, medians):
#   - NATS JetStream: the testenv's private nats-server;
#   - Kafka: librdkafka's mock cluster (sinks/kafka/examples/kafka_mock_cluster.rs, one broker,
#     the topic with 3 partitions), a Kafka protocol peer in a process of its own.
# Then the commit-to-ack latency at a steady 10,000 changes/s (pgbench --rate), per sink (JSON lines,
# NATS, Kafka and a Postgres target), from the
# agent's own histogram (cdc_end_to_end_latency_seconds: source commit -> every message of the
# transaction acknowledged by the broker and the checkpoint saved).
#
#   bench/messages.sh                          1,000,000 changes, 3 runs of each
#   BENCH_TRANSACTIONS=100 BENCH_RUNS=1 BENCH_LATENCY_S=5 bench/messages.sh
#   BENCH_RUNS=0 bench/messages.sh             the latency part only
#
# Workload as bench/source.sh. Each run reads a slot of its own, made before the workload (the
# sinks' order rotates from run to run); each NATS run publishes into a fresh stream, each Kafka
# run into fresh topics. A run ends when /status counts every change as durable (all acks /
# delivery reports in).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TX="${BENCH_TRANSACTIONS:-1000}"
RUNS="${BENCH_RUNS:-3}"
LATENCY_S="${BENCH_LATENCY_S:-30}"
CHANGES=$((TX * 1000))
WORK="${BENCH_DIR:-/var/tmp/cdc-agent-bench-messages}"
ADMIN_PORT=9196

pg_bench_setup
NATS_URL="$CDC_TEST_NATS_URL"
bash scripts/duckdb-lib.sh >/dev/null
cargo build --release --quiet --example kafka_mock_cluster -p cdc-sink-kafka

rm -rf "$WORK" && mkdir -p "$WORK"
"$TARGET_DIR/release/examples/kafka_mock_cluster" 1 > "$WORK/kafka.addr" &
MOCK=$!
trap 'kill $MOCK 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s "$WORK/kafka.addr" ] && break; sleep 0.1; done
KAFKA="$(head -1 "$WORK/kafka.addr")"

"${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = 'cdc_nbench'" >/dev/null
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS cdc_nbench WITH (FORCE)" -c "CREATE DATABASE cdc_nbench"
"${PSQL[@]}" -d cdc_nbench -c "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb)" \
    -c "CREATE TABLE lat (id bigserial PRIMARY KEY, v int)" \
    -c "CREATE PUBLICATION cdc_nbench FOR TABLE bench, lat" >/dev/null
# The Postgres target of the latency part (a schema per run).
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS cdc_nbench_target WITH (FORCE)" -c "CREATE DATABASE cdc_nbench_target" >/dev/null
for i in $(seq 1 "$RUNS"); do
    for kind in jsonl nats kafka; do
        "${PSQL[@]}" -d cdc_nbench -At -c "SELECT pg_create_logical_replication_slot('${kind}_$i', 'pgoutput')" >/dev/null
    done
done
if [ "$RUNS" -gt 0 ]; then
    echo "bench: writing $CHANGES changes in $TX transactions"
    pg_write_bench_workload cdc_nbench "$TX" "$WORK/workload.sql"
fi

write_config() { # slot, kind, table[, extra [sink] lines]
    local slot=$1 kind=$2 table=$3 extra=${4:-} dir="$WORK/$1" sink
    mkdir -p "$dir"
    case "$kind" in
        jsonl) sink="type = \"jsonl\"
path = \"$dir/changes.jsonl\"" ;;
        nats) sink="type = \"nats\"
url = \"$NATS_URL\"
stream = \"CDC_NBENCH_$slot\"
subject_prefix = \"nbench_$slot\"" ;;
        kafka) sink="type = \"kafka\"
brokers = \"$KAFKA\"
topic_prefix = \"nbench_$slot\"" ;;
        postgres) sink="type = \"postgres\"
url = \"postgres://postgres@127.0.0.1:$PORT/cdc_nbench_target\"
schema = \"$slot\"" ;;
    esac
    cat > "$dir/cdc-agent.toml" <<TOML
[agent]
name = "nbench_$slot"
state_dir = "$dir/state"
admin_addr = "127.0.0.1:$ADMIN_PORT"

[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/cdc_nbench"
tables = ["public.$table"]
slot = "$slot"
publication = "cdc_nbench"
snapshot = "never"

[sink]
$sink
$extra
TOML
}

# The order of the sinks rotates from run to run: the first reader after the workload was
# written runs while Postgres still checkpoints it, and must not always be the same sink.
KINDS=(jsonl nats kafka)
: > "$WORK/results.txt"
for i in $(seq 1 "$RUNS"); do
    declare -A result=()
    for k in 0 1 2; do
        kind=${KINDS[$(((k + i - 1) % 3))]}
        write_config "${kind}_$i" "$kind" bench
        r=$(measure_agent "$AGENT" "$WORK/${kind}_$i" "$CHANGES")
        result[$kind]="$r"
        echo "run $i: $kind (s, cpu s, peak KiB) $r"
    done
    echo "${result[jsonl]} ${result[nats]} ${result[kafka]}" >> "$WORK/results.txt"
done

# Latency at a steady rate: pgbench commits 100 transactions of 100 inserts a second while the
# agent streams them; p50/p99 from the agent's histogram (bucket bounds interpolated, as
# Prometheus' histogram_quantile does). Measured with the default flush interval (200 ms: a
# checkpoint, and so the histogram's "acknowledged", at most every 200 ms) and with 10 ms, which
# shows the broker's own acknowledgement time.
cat > "$WORK/lat.sql" <<'SQL'
INSERT INTO lat (v) SELECT g FROM generate_series(1, 100) g;
SQL
: > "$WORK/latency.txt"
for setting in default 10; do
for kind in jsonl nats kafka postgres; do
    slot="lat_${kind}_$setting"
    "${PSQL[@]}" -d cdc_nbench -At -c "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
    extra=""
    [ "$setting" = default ] || extra="flush_interval_ms = $setting"
    write_config "$slot" "$kind" lat "$extra"
    RUST_LOG=warn "$AGENT" -c "$WORK/$slot/cdc-agent.toml" run 2>"$WORK/$slot/agent.log" &
    pid=$!
    sleep 2
    # synchronous_commit on for these commits: the test server runs with it off, and the
    # walsender sends only flushed WAL, so each commit would wait for the WAL writer (up to
    # wal_writer_delay, 200 ms) before the agent could see it.
    PGOPTIONS="-c synchronous_commit=on" \
    "$CDC_TEST_PG_BIN/pgbench" -n -h 127.0.0.1 -p "$PORT" -U postgres -f "$WORK/lat.sql" \
        --rate=100 -T "$LATENCY_S" cdc_nbench > "$WORK/$slot/pgbench.txt" 2>&1
    sleep 2
    metrics=$( (exec 3<>/dev/tcp/127.0.0.1/$ADMIN_PORT && printf 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n' >&3 && cat <&3) 2>/dev/null || true)
    kill -TERM $pid; wait $pid || true
    echo "$metrics" | python3 -c '
import sys
kind = sys.argv[1]
buckets = []
for line in sys.stdin:
    if line.startswith("cdc_end_to_end_latency_seconds_bucket"):
        le = line.split("le=\"")[1].split("\"")[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
total = buckets[-1][1]
def q(p):
    rank, lo, below = p * total, 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            return le if le == float("inf") else lo + (le - lo) * (rank - below) / max(n - below, 1)
        lo, below = le, n
print(kind, int(total), q(0.5), q(0.99))
' "$kind/$setting" >> "$WORK/latency.txt"
done
done

python3 - "$CHANGES" "$WORK/results.txt" "$WORK/latency.txt" <<'PY'
import statistics, sys
changes = int(sys.argv[1])
rows = [list(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
if rows:
    med = lambda i: statistics.median(r[i] for r in rows)
    jsonl, nats, kafka = med(0), med(3), med(6)
    peak = lambda i: max(r[i] for r in rows) / 1024
    print(f"changes:              {changes:,} per run, {len(rows)} run(s), medians")
    print(f"cdc-agent -> jsonl:   {jsonl:6.2f} s  {changes / jsonl:10,.0f} rows/s  cpu {med(1):5.2f} s  peak RSS {peak(2):.1f} MiB")
    print(f"cdc-agent -> NATS:    {nats:6.2f} s  {changes / nats:10,.0f} rows/s  cpu {med(4):5.2f} s  peak RSS {peak(5):.1f} MiB  = {jsonl / nats:.2f} of JSON lines (target >= 0.7)")
    print(f"cdc-agent -> Kafka:   {kafka:6.2f} s  {changes / kafka:10,.0f} rows/s  cpu {med(7):5.2f} s  peak RSS {peak(8):.1f} MiB  = {jsonl / kafka:.2f} of JSON lines (target >= 0.7)")
print("commit-to-ack latency at 10,000 changes/s (100 tx/s x 100 rows), per transaction,")
print("by sink / flush_interval_ms:")
for line in open(sys.argv[3]):
    kind, n, p50, p99 = line.split()
    print(f"  {kind:14} {int(n):6,} transactions  p50 {float(p50) * 1000:7.1f} ms  p99 {float(p99) * 1000:7.1f} ms")
PY
