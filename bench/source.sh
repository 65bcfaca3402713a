#!/usr/bin/env bash
# Benchmark: the Postgres source into a JSON lines file, against pg_recvlogical draining the same
# slot contents with pgoutput to /dev/null, in the same run.
#
#   bench/source.sh                       1,000,000 changes, 3 interleaved runs of each, medians
#   BENCH_TRANSACTIONS=100 BENCH_RUNS=1 bench/source.sh
#
# Each run also measures the agent scraped for /metrics every second, and the agent with three
# masked columns (`[[table]]`: b hash, d null, e redact) against the plain one (budget: 10 %).
#
# Workload (shared/notes/FINDINGS.md): table (id bigint pk, a int, b text(64), c timestamptz,
# d numeric, e jsonb); each transaction 500 inserts, 300 updates, 200 deletes. Every run reads
# its own slot, created before the workload, so all runs see the same changes.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TX="${BENCH_TRANSACTIONS:-1000}"
RUNS="${BENCH_RUNS:-3}"
CHANGES=$((TX * 1000))
WORK="${BENCH_DIR:-/var/tmp/cdc-agent-bench}"
ADMIN_PORT=9199

pg_bench_setup

rm -rf "$WORK" && mkdir -p "$WORK"
"${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = 'cdc_bench'" >/dev/null
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS cdc_bench WITH (FORCE)" -c "CREATE DATABASE cdc_bench"
"${PSQL[@]}" -d cdc_bench -c "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb)" \
    -c "CREATE PUBLICATION cdc_bench FOR TABLE bench"
for i in $(seq 1 "$RUNS"); do
    "${PSQL[@]}" -d cdc_bench -At -c "SELECT pg_create_logical_replication_slot('recv_$i', 'pgoutput')" -c "SELECT pg_create_logical_replication_slot('agent_$i', 'pgoutput')" \
        -c "SELECT pg_create_logical_replication_slot('scraped_$i', 'pgoutput')" \
        -c "SELECT pg_create_logical_replication_slot('masked_$i', 'pgoutput')" >/dev/null
done

echo "bench: writing $CHANGES changes in $TX transactions"
pg_write_bench_workload cdc_bench "$TX" "$WORK/workload.sql"
END_LSN=$("${PSQL[@]}" -d cdc_bench -At -c "SELECT pg_logical_emit_message(false, 'cdc-bench', 'end')")
"${PSQL[@]}" -d cdc_bench -c "CHECKPOINT" >/dev/null


run_recvlogical() { # slot -> seconds
    local t0 t1
    t0=$(now)
    "$CDC_TEST_PG_BIN/pg_recvlogical" -h 127.0.0.1 -p "$PORT" -U postgres -d cdc_bench --slot "$1" \
        --start --endpos "$END_LSN" --no-loop -o proto_version=1 -o publication_names=cdc_bench -o messages=true -f /dev/null
    t1=$(now)
    python3 -c "print($t1 - $t0)"
}

run_agent() { # slot name, scrape /metrics every second (0/1), [masked (0/1)] -> "seconds cpu_seconds peak_kb lines"
    local i=$1 scrape=$2 masked=${3:-0} dir="$WORK/agent_$1" m key=""
    mkdir -p "$dir"
    [ "$masked" = 1 ] && key='mask_key = "bench-mask-key-0123456789"'
    cat > "$dir/cdc-agent.toml" <<TOML
[agent]
$key
name = "bench_$i"
state_dir = "$dir/state"
admin_addr = "127.0.0.1:$ADMIN_PORT"

[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/cdc_bench"
tables = ["public.bench"]
slot = "$i"
publication = "cdc_bench"
snapshot = "never"

[sink]
type = "jsonl"
path = "$dir/changes.jsonl"
TOML
    if [ "$masked" = 1 ]; then
        cat >> "$dir/cdc-agent.toml" <<TOML

[[table]]
match = "public.bench"
mask = { b = "hash", d = "null", e = "redact" }
TOML
    fi
    m=$(measure_agent "$AGENT" "$dir" "$CHANGES" "$scrape")
    echo "$m $(wc -l < "$dir/changes.jsonl")"
}

: > "$WORK/results.txt"
for i in $(seq 1 "$RUNS"); do
    r=$(run_recvlogical "recv_$i")
    a=$(run_agent "agent_$i" 0)
    m=$(run_agent "scraped_$i" 1)
    k=$(run_agent "masked_$i" 0 1)
    echo "run $i: pg_recvlogical ${r}s; cdc-agent (s, cpu s, peak KiB, lines) $a; scraped every second $m; three masked columns $k"
    echo "$r $a $m $k" >> "$WORK/results.txt"
done

summarize_jsonl pg_recvlogical "$CHANGES" "$WORK/results.txt"
