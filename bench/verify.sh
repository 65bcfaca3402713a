#!/usr/bin/env bash
# Benchmark: `cdc-agent verify` of a Postgres -> Postgres table in sync plus 10 tampered rows,
# against `COPY (SELECT * FROM t) TO STDOUT` of the source table to /dev/null in the same run
# (dumping one side: what verify must beat).
#
#   bench/verify.sh                                5,000,000 rows, 3 interleaved runs, medians
#   BENCH_ROWS=2000000 BENCH_RUNS=1 bench/verify.sh
#   BENCH_AGENT=/path/to/cdc-agent bench/verify.sh   measure that binary (no build)
#
# The target table is filled with the same rows directly (not through the agent: that would be
# a snapshot benchmark); the agent is not running, so verify compares at rest. Each run tampers
# with 10 rows (3 deleted, 4 changed, 3 inserted) and checks that verify names exactly those.
# Reported: seconds of verify and of the COPY, their ratio (target <= 1.0), verify's peak RSS
# (target < 64 MB), and the bytes verify read against the bytes of the COPY (target < 5 %).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROWS="${BENCH_ROWS:-5000000}"
RUNS="${BENCH_RUNS:-3}"
WORK="${BENCH_DIR:-/var/tmp/cdc-agent-bench-verify}"

pg_bench_setup

rm -rf "$WORK" && mkdir -p "$WORK"
for db in cdc_vbench_src cdc_vbench_dst; do
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done
# The bench workload's table (bench/source.sh), the same rows on both sides.
ROW_SQL="SELECT g, g % 1000, md5(g::text) || md5((g + 1)::text), timestamptz '2026-11-26 12:00:00+00' + g * interval '1 second', g * 1.25, jsonb_build_object('k', g, 'tag', 'bench') FROM generate_series(1, $ROWS) g"
echo "bench: $ROWS rows on each side"
"${PSQL[@]}" -d cdc_vbench_src -c "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb)" \
    -c "INSERT INTO bench $ROW_SQL" -c "VACUUM ANALYZE bench"
"${PSQL[@]}" -d cdc_vbench_dst -c "CREATE SCHEMA replica" \
    -c "CREATE TABLE replica.bench (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb)" \
    -c "INSERT INTO replica.bench $ROW_SQL" -c "VACUUM ANALYZE replica.bench"
cat > "$WORK/cdc-agent.toml" <<EOF
[agent]
name = "vbench"
state_dir = "$WORK/state"
admin_addr = "127.0.0.1:9199"

[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/cdc_vbench_src"
tables = ["public.bench"]

[sink]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/cdc_vbench_dst"
schema = "replica"
EOF


run_copy() { # -> "seconds bytes"
    local t0 t1 bytes
    t0=$(now)
    bytes=$("${PSQL[@]}" -d cdc_vbench_src -c "COPY (SELECT * FROM bench) TO STDOUT" | wc -c)
    t1=$(now)
    echo "$(python3 -c "print($t1 - $t0)") $bytes"
}

# Tampering of run $1: keys spread over the table, fresh ones each run.
tamper() {
    local r=$1 step=$((ROWS / 12))
    "${PSQL[@]}" -d cdc_vbench_dst <<SQL
DELETE FROM replica.bench WHERE id IN ($((step * 1 + r)), $((step * 2 + r)), $((step * 3 + r)));
UPDATE replica.bench SET a = a + 1 WHERE id = $((step * 4 + r));
UPDATE replica.bench SET b = NULL WHERE id = $((step * 5 + r));
UPDATE replica.bench SET c = c + interval '1 microsecond' WHERE id = $((step * 6 + r));
UPDATE replica.bench SET e = '{"k": 0}' WHERE id = $((step * 7 + r));
INSERT INTO replica.bench VALUES ($((ROWS + 10 * r + 1)), 0, 'x', now(), 0, '{}'),
    ($((ROWS + 10 * r + 2)), 0, 'x', now(), 0, '{}'), (-$r, 0, 'x', now(), 0, '{}');
SQL
}

run_verify() { # run -> "seconds peak_kb bytes_read divergent_rows"
    local t0 t1 code
    t0=$(now)
    set +e
    /usr/bin/time -f "%M" -o "$WORK/rss.$1" "$AGENT" -c "$WORK/cdc-agent.toml" verify --json >"$WORK/verify.$1.json" 2>"$WORK/verify.$1.log"
    code=$?
    set -e
    t1=$(now)
    if [ "$code" != 1 ]; then echo "bench: verify exited $code (expected 1: rows differ)" >&2; cat "$WORK/verify.$1.log" >&2; exit 1; fi
    python3 - "$WORK/verify.$1.json" "$(python3 -c "print($t1 - $t0)")" "$(tail -1 "$WORK/rss.$1")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["tables"][0]
named = len(t["missing_keys"]) + len(t["extra_keys"]) + len(t["different_rows"])
assert (t["missing"], t["extra"], t["different"]) == (3, 3, 4), t
assert named == 10, t
print(sys.argv[2], sys.argv[3], t["bytes_read"], r["divergent_rows"])
PY
}

: > "$WORK/results"
for i in $(seq 1 "$RUNS"); do
    tamper "$i"
    read -r copy_s copy_bytes < <(run_copy)
    read -r verify_s peak_kb read_bytes divergent < <(run_verify "$i")
    # Repair by hand for the next run: the same rows again.
    "${PSQL[@]}" -d cdc_vbench_dst -c "DELETE FROM replica.bench WHERE id <= 0 OR id > $ROWS" \
        -c "INSERT INTO replica.bench SELECT * FROM ($ROW_SQL) s(id, a, b, c, d, e) ON CONFLICT (id) DO UPDATE SET a = EXCLUDED.a, b = EXCLUDED.b, c = EXCLUDED.c, d = EXCLUDED.d, e = EXCLUDED.e WHERE (replica.bench.*) IS DISTINCT FROM (EXCLUDED.*)" >/dev/null
    echo "run $i: verify ${verify_s}s (peak ${peak_kb} KB, ${read_bytes} bytes read, $divergent divergent rows named), COPY ${copy_s}s (${copy_bytes} bytes)"
    echo "$copy_s $copy_bytes $verify_s $peak_kb $read_bytes" >> "$WORK/results"
done
python3 - "$WORK/results" "$ROWS" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
med = lambda i: statistics.median(r[i] for r in rows)
copy_s, copy_bytes, verify_s, peak_kb, read = med(0), med(1), med(2), med(3), med(4)
print(f"bench: {int(sys.argv[2]):,} rows, {len(rows)} runs, medians")
print(f"  COPY of the source to /dev/null   {copy_s:7.2f} s   {copy_bytes / 1e6:8.1f} MB")
print(f"  verify (10 tampered rows named)   {verify_s:7.2f} s   {read / 1e3:8.1f} kB read ({100 * read / copy_bytes:.3f} % of the COPY)")
print(f"  ratio verify / COPY               {verify_s / copy_s:7.2f}   (target <= 1.0)")
print(f"  verify peak RSS                   {peak_kb / 1024:7.1f} MB (target < 64)")
PY
