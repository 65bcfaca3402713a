#!/usr/bin/env bash
# Measurement (not an agent benchmark): how much of a huge transaction's commit-to-durable time
# pgoutput protocol 2 with `streaming = on` would save. Two pg_recvlogical receivers, one with
# proto_version 1 and one with proto_version 2 and streaming on (in-progress transactions sent
# once they pass logical_decoding_work_mem), each on a slot of its own, both running while one
# transaction inserts many rows. For each: the time from COMMIT returning to its walsender's
# sent_lsn (pg_stat_replication) passing the commit, i.e. the last byte of the transaction sent.
#
#   bench/huge-stream.sh                      3,000,000 rows of ~300 bytes, 3 runs
#   BENCH_ROWS=300000 BENCH_RUNS=1 bench/huge-stream.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROWS="${BENCH_ROWS:-3000000}"
RUNS="${BENCH_RUNS:-3}"
WORK="${BENCH_DIR:-/var/tmp/cdc-agent-bench-huge-stream}"
export BENCH_AGENT="${BENCH_AGENT:-none}" # no agent in this measurement: nothing to build
pg_bench_setup
rm -rf "$WORK" && mkdir -p "$WORK"
DB=cdc_huge_stream
"${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$DB'" >/dev/null
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
"${PSQL[@]}" -d "$DB" -c "CREATE TABLE huge (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb)" \
    -c "CREATE PUBLICATION huge_pub FOR TABLE huge" >/dev/null
echo "server: $("${PSQL[@]}" -d "$DB" -At -c "SELECT version()" | cut -d, -f1); logical_decoding_work_mem = $("${PSQL[@]}" -d "$DB" -At -c "SHOW logical_decoding_work_mem")"

: > "$WORK/results.txt"
for i in $(seq 1 "$RUNS"); do
    "${PSQL[@]}" -d "$DB" -c "TRUNCATE huge" >/dev/null
    pids=()
    for proto in 1 2; do
        "${PSQL[@]}" -d "$DB" -c "SELECT pg_create_logical_replication_slot('huge_p${proto}_$i', 'pgoutput')" >/dev/null
        opts=(-o proto_version=$proto -o publication_names=huge_pub)
        [ "$proto" = 2 ] && opts+=(-o streaming=on)
        PGAPPNAME="huge_p$proto" "$CDC_TEST_PG_BIN/pg_recvlogical" -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB" \
            --slot "huge_p${proto}_$i" --start "${opts[@]}" -f /dev/null &
        pids+=($!)
    done
    # Both walsenders streaming before the transaction starts.
    until [ "$("${PSQL[@]}" -d "$DB" -At -c "SELECT count(*) FROM pg_stat_replication WHERE application_name LIKE 'huge_p%' AND state = 'streaming'")" = 2 ]; do sleep 0.1; done
    t0=$(now)
    "${PSQL[@]}" -d "$DB" -c "BEGIN" \
        -c "INSERT INTO huge SELECT g, g % 1000, repeat(md5(g::text), 6), now(), g * 1.25, jsonb_build_object('k', g, 'tag', 'huge') FROM generate_series(1, $ROWS) g" \
        -c "COMMIT"
    t_commit=$(now)
    end_lsn=$("${PSQL[@]}" -d "$DB" -At -c "SELECT pg_current_wal_insert_lsn()")
    # Poll both walsenders' sent_lsn until each passes the commit.
    python3 - "$t_commit" "$end_lsn" "${PSQL[@]}" -d "$DB" > "$WORK/run_$i.txt" <<'PY'
import subprocess, sys, time
t_commit, end = float(sys.argv[1]), sys.argv[2]
psql = sys.argv[3:]
done = {}
sql = f"SELECT application_name, sent_lsn >= '{end}'::pg_lsn FROM pg_stat_replication WHERE application_name LIKE 'huge_p%'"
while len(done) < 2 and time.time() - t_commit < 1800:
    out = subprocess.run(psql + ["-At", "-F", " ", "-c", sql], capture_output=True, text=True).stdout
    now = time.time()
    for line in out.split("\n"):
        if line.endswith(" t"):
            done.setdefault(line.split()[0], now - t_commit)
    time.sleep(0.02)
print(done.get("huge_p1", -1), done.get("huge_p2", -1))
PY
    read -r p1 p2 < "$WORK/run_$i.txt"
    tx=$(python3 -c "print($t_commit - $t0)")
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    for proto in 1 2; do
        "${PSQL[@]}" -d "$DB" -c "SELECT pg_drop_replication_slot('huge_p${proto}_$i')" >/dev/null
    done
    echo "run $i: transaction ${tx}s; commit to last byte sent: proto 1 ${p1}s, proto 2 streaming ${p2}s"
    echo "$tx $p1 $p2" >> "$WORK/results.txt"
done
python3 - "$ROWS" "$WORK/results.txt" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
m = lambda i: statistics.median(r[i] for r in rows)
print(f"{int(sys.argv[1]):,} inserted rows in one transaction, {len(rows)} run(s), medians")
print(f"the transaction itself:                   {m(0):6.2f} s")
print(f"COMMIT to last byte, proto 1:             {m(1):6.2f} s   (runs {', '.join(f'{r[1]:.2f}' for r in rows)})")
print(f"COMMIT to last byte, proto 2, streaming:  {m(2):6.2f} s   (runs {', '.join(f'{r[2]:.2f}' for r in rows)})")
PY
