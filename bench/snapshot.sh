#!/usr/bin/env bash
# Benchmark: the chunked (watermark) snapshot of one 5,000,000-row table, into JSON lines and into
# DuckDB, with 1 and 2 workers, against `COPY (SELECT * FROM t) TO STDOUT` to /dev/null in the same
# run (the ceiling: the server's own fastest read of the table).
#
#   bench/snapshot.sh                          5,000,000 rows, 1 run of each, medians
#   BENCH_ROWS=200000 BENCH_RUNS=3 bench/snapshot.sh
#   BENCH_SHAPE=wide bench/snapshot.sh         1,000,000 wide rows, JSON lines only
#
# Narrow table (BENCH_SHAPE=narrow, the default) as the other benchmarks: (id bigint pk, a int,
# b text(64), c timestamptz, d numeric, e jsonb). Wide table (BENCH_SHAPE=wide, about 700 bytes a
# row as COPY text): three text columns (64, 160 and 320 characters), numeric(20,6), int[] of
# eight, a nested jsonb document and a column NULL in nine rows of ten; DuckDB is skipped for it
# (BENCH_DUCKDB=0 skips it for the narrow table too). BENCH_SOURCE_EXTRA adds lines to the agents'
# [source] section (e.g. "snapshot_chunk_rows = 2000") to compare settings; BENCH_REUSE=1 keeps
# the table of the previous run of the same shape and size instead of loading it again. Each agent run is a new pipeline (own slot) timed from start until its status counts
# every row applied; `reset --yes` then drops its slot.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SHAPE="${BENCH_SHAPE:-narrow}"
case "$SHAPE" in
    narrow) ROWS="${BENCH_ROWS:-5000000}"; DUCKDB="${BENCH_DUCKDB:-1}" ;;
    wide) ROWS="${BENCH_ROWS:-1000000}"; DUCKDB=0 ;;
    *) echo "bench: BENCH_SHAPE is narrow or wide" >&2; exit 2 ;;
esac
RUNS="${BENCH_RUNS:-1}"
WORK="${BENCH_DIR:-/var/tmp/cdc-agent-bench-snapshot}"
ADMIN_PORT=9197

pg_bench_setup
# The DuckDB sink is in the default build.
DUCK_AGENT="$AGENT"

rm -rf "$WORK" && mkdir -p "$WORK"
"${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = 'cdc_snapbench'" >/dev/null
LOADED="$SHAPE $ROWS"
if [ "${BENCH_REUSE:-0}" = 1 ] && [ "$("${PSQL[@]}" -d postgres -Atc "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'cdc_snapbench'")" = "$LOADED" ]; then
    echo "bench: reusing the loaded table ($LOADED)"
else
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS cdc_snapbench WITH (FORCE)" -c "CREATE DATABASE cdc_snapbench"
echo "bench: loading $ROWS rows"
if [ "$SHAPE" = wide ]; then
    "${PSQL[@]}" -d cdc_snapbench -c "CREATE TABLE snap (id bigint PRIMARY KEY, t1 text, t2 text, t3 text, n numeric(20,6), arr int[], doc jsonb, sparse text)" \
        -c "INSERT INTO snap SELECT g, repeat(md5(g::text), 2), repeat(md5((g + 1)::text), 5), repeat(md5((g + 2)::text), 10), g * 1.000001 + 12345.678901, ARRAY[g, g + 1, g + 2, g % 7, g % 11, g % 13, -g, 42], jsonb_build_object('id', g, 'name', 'customer ' || g, 'tags', jsonb_build_array('a', 'b', g % 5), 'address', jsonb_build_object('street', g || ' Main Street', 'city', 'Springfield', 'zip', lpad((g % 100000)::text, 5, '0'), 'geo', jsonb_build_object('lat', 40.7 + (g % 100) / 1000.0, 'lon', -74.0 - (g % 100) / 1000.0))), CASE WHEN g % 10 = 0 THEN 'note ' || g END FROM generate_series(1, $ROWS) g" \
        -c "VACUUM ANALYZE snap"
else
    "${PSQL[@]}" -d cdc_snapbench -c "CREATE TABLE snap (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb)" \
        -c "INSERT INTO snap SELECT g, g % 1000, md5(g::text) || md5((g + 1)::text), now(), g * 1.25, jsonb_build_object('k', g, 'tag', 'bench') FROM generate_series(1, $ROWS) g" \
        -c "VACUUM ANALYZE snap"
fi
"${PSQL[@]}" -d postgres -c "COMMENT ON DATABASE cdc_snapbench IS '$LOADED'"
fi

run_copy() { # -> seconds
    local t0 t1
    t0=$(now)
    "${PSQL[@]}" -d cdc_snapbench -c "COPY (SELECT * FROM snap) TO STDOUT" > /dev/null
    t1=$(now)
    python3 -c "print($t1 - $t0)"
}

run_agent() { # run number, "jsonl" or "duckdb", workers -> "seconds peak_kb duckdb_mib"
    local i=$1 kind=$2 workers=$3 dir="$WORK/agent_$1_$2_$3" agent="$AGENT" sink secs cpu peak_kb
    mkdir -p "$dir"
    sink="type = \"jsonl\"
path = \"$dir/out.jsonl\""
    if [ "$kind" = duckdb ]; then
        agent="$DUCK_AGENT"
        sink="type = \"duckdb\"
path = \"$dir/replica.duckdb\""
    fi
    cat > "$dir/cdc-agent.toml" <<TOML
[agent]
name = "snapbench_${i}_${kind}_${workers}"
state_dir = "$dir/state"
admin_addr = "127.0.0.1:$ADMIN_PORT"

[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/cdc_snapbench"
tables = ["public.snap"]
snapshot_workers = $workers
${BENCH_SOURCE_EXTRA:-}

[sink]
$sink
TOML
    # DuckDB runs log DuckDB's own memory (its buffer pool) at each commit: reported apart.
    local wrapper=""
    [ "$kind" = duckdb ] && wrapper="env RUST_LOG=warn,cdc_sink_duckdb=debug"
    read -r secs cpu peak_kb <<<"$(BENCH_WRAPPER="$wrapper" measure_agent "$agent" "$dir" "$ROWS")"
    local duck_mib=0
    # (The log is colored: escapes stripped first.)
    [ "$kind" = duckdb ] && duck_mib=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/agent.log" | grep -o 'duckdb_memory_mib=[0-9]*' | cut -d= -f2 | sort -n | tail -1 || true)
    "$agent" -c "$dir/cdc-agent.toml" reset --yes >/dev/null
    if [ "$kind" = jsonl ]; then
        lines=$(wc -l < "$dir/out.jsonl")
        [ "$lines" -ge "$ROWS" ] || { echo "bench: only $lines lines of $ROWS" >&2; exit 1; }
        rm -f "$dir/out.jsonl"
    fi
    rm -rf "$dir/replica.duckdb"
    echo "$secs $peak_kb ${duck_mib:-0}"
}

: > "$WORK/results.txt"
for i in $(seq 1 "$RUNS"); do
    c=$(run_copy)
    if [ "$SHAPE" = wide ]; then
        # Two workers (the default) first: the figure the target is about.
        j2=$(run_agent "$i" jsonl 2)
        j1=$(run_agent "$i" jsonl 1)
    else
        j1=$(run_agent "$i" jsonl 1)
        j2=$(run_agent "$i" jsonl 2)
    fi
    d1="- - -" d2="- - -"
    if [ "$DUCKDB" = 1 ] && [ -x "$DUCK_AGENT" ]; then
        d1=$(run_agent "$i" duckdb 1)
        d2=$(run_agent "$i" duckdb 2)
    fi
    echo "run $i: COPY ${c}s; jsonl 1 worker (s, peak KiB) $j1; 2 workers $j2; duckdb 1 worker $d1; 2 workers $d2"
    echo "$c $j1 $j2 $d1 $d2" >> "$WORK/results.txt"
done

python3 - "$ROWS" "$WORK/results.txt" "$SHAPE" <<'PY'
import statistics, sys
rows_n = int(sys.argv[1])
rows = [l.split() for l in open(sys.argv[2]) if l.strip()]
med = lambda i: statistics.median(float(r[i]) for r in rows)
copy_s = med(0)
print(f"shape:                      {sys.argv[3]}")
print(f"rows:                       {rows_n:,} per run, {len(rows)} run(s), medians")
print(f"COPY TO STDOUT > /dev/null: {copy_s:7.2f} s  {rows_n / copy_s:10,.0f} rows/s")
for name, i, target in [("jsonl, 1 worker", 1, 0.8), ("jsonl, 2 workers", 4, 0.8), ("duckdb, 1 worker", 7, 0.5), ("duckdb, 2 workers", 10, 0.5)]:
    if rows[0][i] == "-":
        print(f"{name + ':':<27} (not measured)")
        continue
    s = med(i)
    peak = max(int(r[i + 1]) for r in rows)
    per_run = ", ".join(f"{float(r[0]) / float(r[i]):.2f}" for r in rows)
    line = f"{name + ':':<27} {s:7.2f} s  {rows_n / s:10,.0f} rows/s  {copy_s / s:.2f} of COPY (runs {per_run}; target {target})  peak RSS {peak / 1024:.1f} MiB"
    if name.startswith("duckdb"):
        line += f", DuckDB's own memory peak {max(int(r[i + 2]) for r in rows)} MiB (target: RSS <= 256 MiB)"
    print(line)
print("targets: jsonl >= 0.8 of COPY with peak RSS < 64 MiB (wide shape, defaults); duckdb >= 0.5 of COPY, RSS <= 256 MiB")
print("per run (COPY s, then s, peak KiB and DuckDB MiB of each):")
for r in rows:
    print("  " + " ".join(r))
PY
