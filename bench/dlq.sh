#!/usr/bin/env bash
# Benchmark: the cost of the dead-letter store. Postgres -> Postgres, the same 1,000,000 changes
# twice per run, each agent on a slot of its own:
#
#   clean:  sink.on_error = "stop", a target that takes every change;
#   poison: sink.on_error = "dlq", a target with a CHECK that refuses one change in every
#           100,000 (found by bisection, set aside; the rest applied).
#
#   bench/dlq.sh                              1,000,000 changes, 3 interleaved runs, medians
#   BENCH_TRANSACTIONS=100 BENCH_RUNS=1 bench/dlq.sh
#
# Workload as bench/warehouse.sh (1,000 transactions of 500 inserts, 300 updates, 200 deletes),
# except that in every 100th transaction one inserted row has a = -2 (-1 after the update): the
# poison target's CHECK (a >= 0) refuses it. Target: the rate of the poison run >= 0.9 of the
# clean run's.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TX="${BENCH_TRANSACTIONS:-1000}"
RUNS="${BENCH_RUNS:-3}"
CHANGES=$((TX * 1000))
WORK="${BENCH_DIR:-/var/tmp/cdc-agent-bench-dlq}"
ADMIN_PORT=9199

pg_bench_setup

rm -rf "$WORK" && mkdir -p "$WORK"
for db in cdc_dlqbench_src cdc_dlqbench_dst; do
    "${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$db'" >/dev/null
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
done
TABLE_COLUMNS="id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb"
"${PSQL[@]}" -d cdc_dlqbench_src -c "CREATE TABLE bench ($TABLE_COLUMNS)" \
    -c "CREATE PUBLICATION cdc_dlqbench FOR TABLE bench" >/dev/null
for i in $(seq 1 "$RUNS"); do
    for kind in clean poison; do
        "${PSQL[@]}" -d cdc_dlqbench_src -c "SELECT pg_create_logical_replication_slot('cdc_dlqbench_${kind}_$i', 'pgoutput')" >/dev/null
        check=""
        [ "$kind" = poison ] && check=", CHECK (a >= 0)"
        "${PSQL[@]}" -d cdc_dlqbench_dst -c "CREATE SCHEMA ${kind}_$i" \
            -c "CREATE TABLE ${kind}_$i.bench ($TABLE_COLUMNS$check)" >/dev/null
    done
done

echo "bench: writing $CHANGES changes in $TX transactions, one refused by the poison target in every 100,000"
python3 - "$TX" > "$WORK/workload.sql" <<'PY'
import sys
for t in range(int(sys.argv[1])):
    b = t * 500
    # Row b + 150 of every 100th transaction: inserted with a = -2, updated to -1 (kept).
    a = f"CASE WHEN g = {b + 150} THEN -2 ELSE g % 1000 END" if t % 100 == 50 else "g % 1000"
    print(f"""BEGIN;
INSERT INTO bench SELECT g, {a}, md5(g::text) || md5((g + 1)::text), now(), g * 1.25, jsonb_build_object('k', g, 'tag', 'bench') FROM generate_series({b + 1}, {b + 500}) g;
UPDATE bench SET a = a + 1, d = d + 0.01 WHERE id > {b} AND id <= {b + 300};
DELETE FROM bench WHERE id > {b + 300} AND id <= {b + 500};
COMMIT;""")
PY
"${PSQL[@]}" -d cdc_dlqbench_src -f "$WORK/workload.sql"
POISON=$("${PSQL[@]}" -d cdc_dlqbench_src -At -c "SELECT count(*) FROM bench WHERE a < 0")

run_agent() { # run number, clean|poison -> "seconds peak_kb target_ok dead_letters"
    local i=$1 kind=$2 dir="$WORK/agent_$1_$2" secs cpu peak_kb src_sum dst_sum ok on_error=stop letters
    mkdir -p "$dir"
    [ "$kind" = poison ] && on_error=dlq
    cat > "$dir/cdc-agent.toml" <<TOML
[agent]
name = "dlqbench_${kind}_$i"
state_dir = "$dir/state"
admin_addr = "127.0.0.1:$ADMIN_PORT"

[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/cdc_dlqbench_src"
tables = ["public.bench"]
slot = "cdc_dlqbench_${kind}_$i"
publication = "cdc_dlqbench"
snapshot = "never"

[sink]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/cdc_dlqbench_dst"
schema = "${kind}_$i"
on_error = "$on_error"
TOML
    read -r secs cpu peak_kb <<<"$(measure_agent "$AGENT" "$dir" "$CHANGES")"
    # The target equals the source but for the refused rows (none in the clean run).
    local except=""
    [ "$kind" = poison ] && except="WHERE a >= 0"
    src_sum=$("${PSQL[@]}" -d cdc_dlqbench_src -At -c "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM (SELECT id, a, b, c, d, e FROM bench $except) t")
    dst_sum=$("${PSQL[@]}" -d cdc_dlqbench_dst -At -c "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM (SELECT id, a, b, c, d, e FROM ${kind}_$i.bench) t")
    [ "$src_sum" = "$dst_sum" ] && ok=yes || ok=NO
    letters=$("$AGENT" -c "$dir/cdc-agent.toml" dlq list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
    echo "$secs $peak_kb $ok $letters"
}

: > "$WORK/results.txt"
for i in $(seq 1 "$RUNS"); do
    c=$(run_agent "$i" clean)
    p=$(run_agent "$i" poison)
    echo "run $i: (s, peak KiB, target equals source but for the refused rows, dead letters) clean $c; poison $p"
    echo "$c $p" >> "$WORK/results.txt"
done

python3 - "$CHANGES" "$POISON" "$WORK/results.txt" <<'PY'
import statistics, sys
changes, poison = int(sys.argv[1]), int(sys.argv[2])
rows = [l.split() for l in open(sys.argv[3]) if l.strip()]
clean_s = statistics.median(float(r[0]) for r in rows)
poison_s = statistics.median(float(r[4]) for r in rows)
ok = all(r[2] == "yes" and r[6] == "yes" for r in rows)
letters = sorted({int(r[7]) for r in rows})
print(f"changes:                 {changes:,} per run, {len(rows)} run(s), medians; {poison} refused by the poison target")
print(f"clean  (on_error=stop):  {clean_s:6.2f} s  {changes / clean_s:10,.0f} changes/s")
print(f"poison (on_error=dlq):   {poison_s:6.2f} s  {changes / poison_s:10,.0f} changes/s; dead letters per run: {letters}")
print(f"ratio:                   {clean_s / poison_s:.2f} of the clean run's rate (target >= 0.9)")
print(f"targets as expected:     {'yes, every run' if ok else 'NO'}")
PY
