#!/usr/bin/env bash
# Benchmark: Postgres -> Postgres end to end (slot -> cdc-agent -> warehouse tables), against
# plain COPY of the same number of rows into the target in the same run (the ceiling).
#
#   bench/warehouse.sh                        1,000,000 changes, 3 interleaved runs, medians
#   BENCH_TRANSACTIONS=100 BENCH_RUNS=1 bench/warehouse.sh
#
# Each run: COPY of the same number of rows into a fresh target table, then cdc-agent draining a
# slot of its own (made before the workload) into a fresh target schema.
#
# Workload as bench/source.sh: 1,000 transactions of 500 inserts, 300 updates, 200 deletes on
# (id bigint pk, a int, b text, c timestamptz, d numeric, e jsonb).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TX="${BENCH_TRANSACTIONS:-1000}"
RUNS="${BENCH_RUNS:-3}"
CHANGES=$((TX * 1000))
WORK="${BENCH_DIR:-/var/tmp/cdc-agent-bench-warehouse}"
ADMIN_PORT=9198

pg_bench_setup

rm -rf "$WORK" && mkdir -p "$WORK"
for db in cdc_wbench_src cdc_wbench_dst; do
    "${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$db'" >/dev/null
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done
"${PSQL[@]}" -d cdc_wbench_src -c "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb)" \
    -c "CREATE PUBLICATION cdc_wbench FOR TABLE bench" >/dev/null
for i in $(seq 1 "$RUNS"); do
    "${PSQL[@]}" -d cdc_wbench_src -c "SELECT pg_create_logical_replication_slot('cdc_wbench_$i', 'pgoutput')" \
        -c "SELECT pg_create_logical_replication_slot('cdc_wbench_recv_$i', 'pgoutput')" \
        -c "SELECT pg_create_logical_replication_slot('cdc_wbench_duck_$i', 'pgoutput')" >/dev/null
done

echo "bench: writing $CHANGES changes in $TX transactions"
pg_write_bench_workload cdc_wbench_src "$TX" "$WORK/workload.sql"


"${PSQL[@]}" -d cdc_wbench_src -c "\\copy (SELECT g AS id, g % 1000 AS a, md5(g::text) || md5((g + 1)::text) AS b, now() AS c, g * 1.25 AS d, jsonb_build_object('k', g, 'tag', 'bench') AS e FROM generate_series(1, $CHANGES) g) TO '$WORK/rows.copy'"

END_LSN=$("${PSQL[@]}" -d cdc_wbench_src -At -c "SELECT pg_current_wal_insert_lsn()")

run_copy() { # run number -> seconds
    local t0 t1
    "${PSQL[@]}" -d cdc_wbench_dst -c "CREATE TABLE copy_target_$1 (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb)"
    t0=$(now)
    "${PSQL[@]}" -d cdc_wbench_dst -c "\\copy copy_target_$1 FROM '$WORK/rows.copy'"
    t1=$(now)
    python3 -c "print($t1 - $t0)"
}

# The source's own ceiling: the walsender decoding the slot for pg_recvlogical (to /dev/null).
run_recvlogical() { # run number -> seconds
    local t0 t1
    t0=$(now)
    "$CDC_TEST_PG_BIN/pg_recvlogical" -h 127.0.0.1 -p "$PORT" -U postgres -d cdc_wbench_src --slot "cdc_wbench_recv_$1" \
        --start --endpos "$END_LSN" --no-loop -o proto_version=1 -o publication_names=cdc_wbench -f /dev/null
    t1=$(now)
    python3 -c "print($t1 - $t0)"
}

# The DuckDB sink is in the default build (BENCH_AGENT: a build without it skips DuckDB).
DUCK_AGENT="$AGENT"

run_agent() { # run number, "postgres" or "duckdb" -> "seconds peak_kb equal"
    local i=$1 kind=$2 dir="$WORK/agent_$1_$2" secs cpu peak_kb src_sum dst_sum equal agent="$AGENT" slot="cdc_wbench_$1" sink
    mkdir -p "$dir"
    sink="type = \"postgres\"
url = \"postgres://postgres@127.0.0.1:$PORT/cdc_wbench_dst\"
schema = \"replica_$i\""
    if [ "$kind" = duckdb ]; then
        agent="$DUCK_AGENT" slot="cdc_wbench_duck_$i"
        sink="type = \"duckdb\"
path = \"$dir/replica.duckdb\""
    fi
    cat > "$dir/cdc-agent.toml" <<TOML
[agent]
name = "wbench_$i"
state_dir = "$dir/state"
admin_addr = "127.0.0.1:$ADMIN_PORT"

[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/cdc_wbench_src"
tables = ["public.bench"]
slot = "$slot"
publication = "cdc_wbench"
snapshot = "never"

[sink]
$sink
TOML
    read -r secs cpu peak_kb <<<"$(measure_agent "$agent" "$dir" "$CHANGES")"
    if [ "$kind" = duckdb ]; then
        echo "$secs $peak_kb -"
        return
    fi
    # The target must equal the source.
    src_sum=$("${PSQL[@]}" -d cdc_wbench_src -At -c "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM (SELECT id, a, b, c, d, e FROM bench) t")
    dst_sum=$("${PSQL[@]}" -d cdc_wbench_dst -At -c "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM (SELECT id, a, b, c, d, e FROM replica_$i.bench) t")
    [ "$src_sum" = "$dst_sum" ] && equal=yes || equal=NO
    echo "$secs $peak_kb $equal"
}

: > "$WORK/results.txt"
for i in $(seq 1 "$RUNS"); do
    c=$(run_copy "$i")
    r=$(run_recvlogical "$i")
    a=$(run_agent "$i" postgres)
    d="- - -"
    [ -x "$DUCK_AGENT" ] && d=$(run_agent "$i" duckdb)
    echo "run $i: COPY ${c}s; pg_recvlogical ${r}s; cdc-agent (s, peak KiB, target equals source) $a; into DuckDB $d"
    echo "$c $r $a $d" >> "$WORK/results.txt"
done

python3 - "$CHANGES" "$WORK/results.txt" <<'PY'
import statistics, sys
changes = int(sys.argv[1])
rows = [l.split() for l in open(sys.argv[2]) if l.strip()]
copy_s = statistics.median(float(r[0]) for r in rows)
recv_s = statistics.median(float(r[1]) for r in rows)
agent_s = statistics.median(float(r[2]) for r in rows)
peak_kb = max(int(r[3]) for r in rows)
equal = all(r[4] == "yes" for r in rows)
print(f"changes:                {changes:,} per run, {len(rows)} run(s), medians")
print(f"COPY into the target:   {copy_s:6.2f} s  {changes / copy_s:10,.0f} rows/s")
print(f"pg_recvlogical:         {recv_s:6.2f} s  {changes / recv_s:10,.0f} rows/s  (the slot's own ceiling: {copy_s / recv_s:.2f} of COPY)")
print(f"cdc-agent -> postgres:  {agent_s:6.2f} s  {changes / agent_s:10,.0f} rows/s  ({recv_s / agent_s:.2f} of pg_recvlogical)")
print(f"ratio:                  {copy_s / agent_s:.2f} of COPY's rate (target >= 0.5)")
print(f"peak RSS:               {peak_kb / 1024:.1f} MiB, largest of the runs")
if rows[0][5] != "-":
    duck_s = statistics.median(float(r[5]) for r in rows)
    duck_kb = max(int(r[6]) for r in rows)
    print(f"cdc-agent -> duckdb:    {duck_s:6.2f} s  {changes / duck_s:10,.0f} rows/s  ({recv_s / duck_s:.2f} of pg_recvlogical; peak RSS {duck_kb / 1024:.1f} MiB)")
else:
    print("cdc-agent -> duckdb:    not measured (this build has no DuckDB sink)")
print(f"target equals source:   {'yes, every run' if equal else 'NO'}")
PY
