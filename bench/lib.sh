# Shared by the benchmarks: timing an agent run until it has applied a number of changes.
# Source it; it needs $ADMIN_PORT (the admin_addr port of the configs it runs).

now() { date +%s.%N; }

# pg_bench_setup: starts the test servers, builds the release binary, and sets PORT (the
# logical-replication Postgres), PSQL (psql as postgres there, as an array), TARGET_DIR (cargo's)
# and AGENT.
pg_bench_setup() {
    CDC_TESTENV_FOR_TESTS=0 bash scripts/testenv.sh start
    eval "$(bash scripts/testenv.sh env)"
    PORT="${CDC_TEST_PG_PORT:-55432}"
    PSQL=("$CDC_TEST_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
    bench_agent
}

# bench_agent: sets TARGET_DIR (cargo's) and AGENT, the binary to measure: BENCH_AGENT (another
# build, an older commit say: nothing is built then), else this tree's release build, built here.
bench_agent() {
    bash scripts/duckdb-lib.sh >/dev/null
    [ -n "${BENCH_AGENT:-}" ] || cargo build --release --quiet
    TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    AGENT="${BENCH_AGENT:-$TARGET_DIR/release/cdc-agent}"
}

# pg_write_bench_workload DB TRANSACTIONS SQL_FILE: the benchmarks' workload (bench/source.sh),
# written into DB's table `bench`: per transaction 500 inserts, 300 updates, 200 deletes.
pg_write_bench_workload() {
    python3 - "$2" > "$3" <<'PY'
import sys
for t in range(int(sys.argv[1])):
    b = t * 500
    print(f"""BEGIN;
INSERT INTO bench SELECT g, g % 1000, md5(g::text) || md5((g + 1)::text), now(), g * 1.25, jsonb_build_object('k', g, 'tag', 'bench') FROM generate_series({b + 1}, {b + 500}) g;
UPDATE bench SET a = a + 1, d = d + 0.01 WHERE id > {b} AND id <= {b + 300};
DELETE FROM bench WHERE id > {b + 300} AND id <= {b + 500};
COMMIT;""")
PY
    "${PSQL[@]}" -d "$1" -f "$3"
}

# measure_agent BINARY CONFIG_DIR CHANGES [SCRAPE] -> "seconds cpu_seconds peak_kb"
# Runs BINARY -c CONFIG_DIR/cdc-agent.toml until /status reports CHANGES events, then stops it
# with SIGTERM. SCRAPE=1 also fetches /metrics once a second, as a Prometheus server would.
measure_agent() {
    local agent=$1 dir=$2 changes=$3 scrape=${4:-0} scraper="" t0 t1 pid peak_kb=0 hwm n body cpu
    t0=$(now)
    RUST_LOG=warn ${BENCH_WRAPPER:-} "$agent" -c "$dir/cdc-agent.toml" run 2>"$dir/agent.log" &
    pid=$!
    if [ "$scrape" = 1 ]; then
        (while kill -0 $pid 2>/dev/null; do
            (exec 3<>/dev/tcp/127.0.0.1/$ADMIN_PORT && printf 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n' >&3 && cat <&3 >/dev/null) 2>/dev/null || true
            sleep 1
        done) &
        scraper=$!
    fi
    while :; do
        if ! kill -0 $pid 2>/dev/null; then echo "bench: the agent died; see $dir/agent.log" >&2; cat "$dir/agent.log" >&2; exit 1; fi
        hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
        [ "${hwm:-0}" -gt "$peak_kb" ] && peak_kb=$hwm
        # Bash's own /dev/tcp: polling must not steal the CPU it measures.
        body=$( (exec 3<>/dev/tcp/127.0.0.1/$ADMIN_PORT && printf 'GET /status HTTP/1.1\r\nHost: x\r\n\r\n' >&3 && cat <&3) 2>/dev/null || true)
        n=0
        [[ $body =~ \"events_total\":([0-9]+) ]] && n=${BASH_REMATCH[1]}
        [ "$n" -ge "$changes" ] && break
        sleep 0.05
    done
    t1=$(now)
    hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
    [ "${hwm:-0}" -gt "$peak_kb" ] && peak_kb=$hwm
    # utime + stime in clock ticks (fields 14 and 15 of /proc/PID/stat).
    cpu=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' /proc/$pid/stat)
    [ -n "$scraper" ] && kill "$scraper" 2>/dev/null
    kill -TERM $pid
    wait $pid || true
    echo "$(python3 -c "print($t1 - $t0)") $cpu $peak_kb"
}

# summarize_jsonl BASELINE CHANGES RESULTS_FILE [TARGET_RATIO]
# Medians of result lines "baseline_s agent_s cpu_s peak_kb lines [scraped_s ...]" for an agent
# writing JSON lines against BASELINE (a tool reading the same changes), target TARGET_RATIO
# (default 0.8) and 64 MiB.
summarize_jsonl() {
    python3 - "$1" "$2" "$3" "${4:-0.8}" <<'PY'
import statistics, sys
name, changes, target = sys.argv[1], int(sys.argv[2]), sys.argv[4]
rows = [list(map(float, l.split())) for l in open(sys.argv[3]) if l.strip()]
base = statistics.median(r[0] for r in rows)
agent = statistics.median(r[1] for r in rows)
cpu = statistics.median(r[2] for r in rows)
peak = max(r[3] for r in rows)
lines = {int(r[4]) for r in rows}
print(f"changes:            {changes:,} per run, {len(rows)} run(s), medians; jsonl lines per run: {sorted(lines)}")
print(f"{name + ':':<20}{base:6.2f} s  {changes / base:10,.0f} rows/s")
print(f"cdc-agent -> jsonl: {agent:6.2f} s  {changes / agent:10,.0f} rows/s  (CPU {cpu:.2f} s, {cpu / changes * 1e6:.2f} us/row)")
print(f"ratio:              {base / agent:.2f} of {name}'s rate (target >= {target})")
print(f"peak RSS:           {peak / 1024:.1f} MiB, largest of the runs (target < 64 MiB)")
if len(rows[0]) > 5:
    scraped = statistics.median(r[5] for r in rows)
    print(f"/metrics scraped every second: {scraped:6.2f} s  {changes / scraped:10,.0f} rows/s: {100 * (scraped - agent) / agent:+.1f}% time (budget: 5%)")
if len(rows[0]) > 9:
    masked = statistics.median(r[9] for r in rows)
    masked_cpu = statistics.median(r[10] for r in rows)
    per_run = ", ".join(f"{100 * (r[9] - r[1]) / r[1]:+.1f}%" for r in rows)
    print(f"three masked columns: {masked:6.2f} s  {changes / masked:10,.0f} rows/s: {100 * (masked - agent) / agent:+.1f}% time (runs {per_run}), CPU {masked_cpu:.2f} s (budget: 10%)")
PY
}
