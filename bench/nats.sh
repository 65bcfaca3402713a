#!/usr/bin/env bash
# Benchmark: Postgres -> cdc-agent -> NATS JetStream (the testenv's private nats-server), against
# the same changes into a JSON lines file in the same run (interleaved, medians).
#
#   bench/nats.sh                          1,000,000 changes, 3 runs of each
#   BENCH_TRANSACTIONS=100 BENCH_RUNS=1 bench/nats.sh
#
# Workload as bench/source.sh. Each run reads a slot of its own, made before the workload; the
# NATS run publishes into a fresh stream. A run ends when /status counts every change handed to
# the sink (for NATS: published, acks collected at the next flush, at most flush_interval later).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TX="${BENCH_TRANSACTIONS:-1000}"
RUNS="${BENCH_RUNS:-3}"
CHANGES=$((TX * 1000))
WORK="${BENCH_DIR:-/var/tmp/cdc-agent-bench-nats}"
ADMIN_PORT=9196

pg_bench_setup
NATS_URL="$CDC_TEST_NATS_URL"

rm -rf "$WORK" && mkdir -p "$WORK"
"${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = 'cdc_nbench'" >/dev/null
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS cdc_nbench WITH (FORCE)" -c "CREATE DATABASE cdc_nbench"
"${PSQL[@]}" -d cdc_nbench -c "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb)" \
    -c "CREATE PUBLICATION cdc_nbench FOR TABLE bench" >/dev/null
for i in $(seq 1 "$RUNS"); do
    "${PSQL[@]}" -d cdc_nbench -At -c "SELECT pg_create_logical_replication_slot('jsonl_$i', 'pgoutput')" \
        -c "SELECT pg_create_logical_replication_slot('nats_$i', 'pgoutput')" >/dev/null
done
echo "bench: writing $CHANGES changes in $TX transactions"
pg_write_bench_workload cdc_nbench "$TX" "$WORK/workload.sql"

run_agent() { # slot, "jsonl" or "nats" -> "seconds cpu_seconds peak_kb"
    local slot=$1 kind=$2 dir="$WORK/$1" sink
    mkdir -p "$dir"
    sink="type = \"jsonl\"
path = \"$dir/changes.jsonl\""
    if [ "$kind" = nats ]; then
        sink="type = \"nats\"
url = \"$NATS_URL\"
stream = \"CDC_NBENCH_$slot\"
subject_prefix = \"nbench_$slot\""
    fi
    cat > "$dir/cdc-agent.toml" <<TOML
[agent]
name = "nbench_$slot"
state_dir = "$dir/state"
admin_addr = "127.0.0.1:$ADMIN_PORT"

[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/cdc_nbench"
tables = ["public.bench"]
slot = "$slot"
publication = "cdc_nbench"
snapshot = "never"

[sink]
$sink
TOML
    measure_agent "$AGENT" "$dir" "$CHANGES"
}

: > "$WORK/results.txt"
for i in $(seq 1 "$RUNS"); do
    j=$(run_agent "jsonl_$i" jsonl)
    n=$(run_agent "nats_$i" nats)
    echo "run $i: jsonl (s, cpu s, peak KiB) $j; nats $n"
    echo "$j $n" >> "$WORK/results.txt"
done

python3 - "$CHANGES" "$WORK/results.txt" <<'PY'
import statistics, sys
changes = int(sys.argv[1])
rows = [list(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
med = lambda i: statistics.median(r[i] for r in rows)
jsonl, nats = med(0), med(3)
print(f"changes:              {changes:,} per run, {len(rows)} run(s), medians")
print(f"cdc-agent -> jsonl:   {jsonl:6.2f} s  {changes / jsonl:10,.0f} rows/s  peak RSS {max(r[2] for r in rows) / 1024:.1f} MiB")
print(f"cdc-agent -> NATS:    {nats:6.2f} s  {changes / nats:10,.0f} rows/s  peak RSS {max(r[5] for r in rows) / 1024:.1f} MiB")
print(f"ratio:                {jsonl / nats:.2f} of the JSON lines rate (target >= 0.7)")
PY
