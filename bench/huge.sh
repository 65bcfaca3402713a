#!/usr/bin/env bash
# Benchmark: huge source transactions in bounded memory. For each case an agent streams (no
# snapshot) while one transaction inserts many rows and a second updates a part of them; it
# measures the agent's peak RSS over the whole run and each transaction's time from its COMMIT
# (psql / mariadb returning) to durable (the agent's /status counting every change of it, which
# it does after the sink's flush), and checks that every change arrived (JSON lines: the lines
# of each op) or that the target equals the source (Postgres target).
#
#   bench/huge.sh                                 3,000,000-row insert + 1,000,000-row update
#                                                 (Postgres), 1,000,000 + 300,000 (MariaDB)
#   BENCH_PG_ROWS=30000 BENCH_PG_UPDATES=10000 BENCH_MY_ROWS=30000 BENCH_MY_UPDATES=10000 bench/huge.sh
#   BENCH_CASES="pg-jsonl pg-postgres" bench/huge.sh   some of pg-jsonl pg-postgres my-jsonl my-postgres
#   BENCH_PG_SOURCE_EXTRA="streaming = false" bench/huge.sh   Postgres sources with protocol 1: the
#                                                 server sends a transaction only at its commit
#
# Rows of about 300 bytes: (id bigint pk, a int, b text of 192 characters, c timestamptz,
# d numeric, e jsonb) and the MariaDB equivalents. Target: peak RSS < 64 MiB in every case.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PG_ROWS="${BENCH_PG_ROWS:-3000000}"
PG_UPDATES="${BENCH_PG_UPDATES:-1000000}"
MY_ROWS="${BENCH_MY_ROWS:-1000000}"
MY_UPDATES="${BENCH_MY_UPDATES:-300000}"
CASES="${BENCH_CASES:-pg-jsonl pg-postgres my-jsonl my-postgres}"
WORK="${BENCH_DIR:-/var/tmp/cdc-agent-bench-huge}"
ADMIN_PORT=9196

pg_bench_setup
MYPORT="$CDC_TEST_MYSQL_PORT"
MY=(mariadb --no-defaults -h 127.0.0.1 -P "$MYPORT" -u root --batch --skip-column-names)
rm -rf "$WORK" && mkdir -p "$WORK"

status() { # -> the agent's /status body
    (exec 3<>/dev/tcp/127.0.0.1/$ADMIN_PORT && printf 'GET /status HTTP/1.1\r\nHost: x\r\n\r\n' >&3 && cat <&3) 2>/dev/null || true
}

PEAK_KB=0
watch_peak() { # pid: samples VmHWM (the kernel's own high-water mark, read once more at the end)
    local hwm
    hwm=$(awk '/VmHWM/ {print $2}' /proc/"$1"/status 2>/dev/null || echo 0)
    [ "${hwm:-0}" -gt "$PEAK_KB" ] && PEAK_KB=$hwm
    return 0
}

wait_for() { # pid, description, command...: polls the command until it succeeds
    local pid=$1 what=$2 deadline=$((SECONDS + 1800))
    shift 2
    until "$@"; do
        kill -0 "$pid" 2>/dev/null || { echo "bench: the agent died waiting for $what; see $DIR/agent.log" >&2; tail -20 "$DIR/agent.log" >&2; exit 1; }
        [ $SECONDS -lt $deadline ] || { echo "bench: timed out waiting for $what" >&2; exit 1; }
        watch_peak "$pid"
        sleep 0.05
    done
    watch_peak "$pid"
}

streaming() { [[ $(status) == *'"state":"streaming"'* ]]; }
events_at_least() { # n
    local body n=0
    body=$(status)
    [[ $body =~ \"events_total\":([0-9]+) ]] && n=${BASH_REMATCH[1]}
    [ "$n" -ge "$1" ]
}

secs_since() { python3 -c "print(f'{$(now) - $1:.2f}')"; }

# run_case CASE: prints "case peak_kb insert_commit_to_durable_s update_commit_to_durable_s check"
run_case() {
    local kind=$1 src=${1%%-*} sink=${1#*-} rows updates pid t_commit ins upd check sink_toml source_toml
    DIR="$WORK/$kind"
    mkdir -p "$DIR"
    PEAK_KB=0
    if [ "$src" = pg ]; then
        rows=$PG_ROWS updates=$PG_UPDATES
        "${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = 'cdc_huge_src'" >/dev/null
        "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS cdc_huge_src WITH (FORCE)" -c "CREATE DATABASE cdc_huge_src"
        "${PSQL[@]}" -d cdc_huge_src -c "CREATE TABLE huge (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric, e jsonb)"
        source_toml="type = \"postgres\"
url = \"postgres://postgres@127.0.0.1:$PORT/cdc_huge_src\"
tables = [\"public.huge\"]
snapshot = \"never\"
${BENCH_PG_SOURCE_EXTRA:-}"
    else
        rows=$MY_ROWS updates=$MY_UPDATES
        "${MY[@]}" -e "DROP DATABASE IF EXISTS cdc_huge; CREATE DATABASE cdc_huge;
          CREATE TABLE cdc_huge.huge (id bigint PRIMARY KEY, a int, b varchar(255), c timestamp(6) NULL, d decimal(14,2), e json)"
        source_toml="type = \"mysql\"
url = \"mysql://cdc:secret-pw@127.0.0.1:$MYPORT/cdc_huge\"
tables = [\"cdc_huge.huge\"]
snapshot = \"never\""
    fi
    if [ "$sink" = postgres ]; then
        "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS cdc_huge_dst WITH (FORCE)" -c "CREATE DATABASE cdc_huge_dst"
        sink_toml="type = \"postgres\"
url = \"postgres://postgres@127.0.0.1:$PORT/cdc_huge_dst\"
schema = \"replica\""
    else
        sink_toml="type = \"jsonl\"
path = \"$DIR/out.jsonl\""
    fi
    cat > "$DIR/cdc-agent.toml" <<TOML
[agent]
name = "huge_${src}_${sink}"
state_dir = "$DIR/state"
admin_addr = "127.0.0.1:$ADMIN_PORT"

[source]
$source_toml

[sink]
$sink_toml
TOML
    RUST_LOG=warn ${BENCH_WRAPPER:-} "$AGENT" -c "$DIR/cdc-agent.toml" run 2>"$DIR/agent.log" &
    pid=$!
    wait_for $pid "the stream to start" streaming

    if [ "$src" = pg ]; then
        "${PSQL[@]}" -d cdc_huge_src -c "BEGIN" \
            -c "INSERT INTO huge SELECT g, g % 1000, repeat(md5(g::text), 6), now(), g * 1.25, jsonb_build_object('k', g, 'tag', 'huge') FROM generate_series(1, $rows) g" \
            -c "COMMIT"
    else
        "${MY[@]}" -e "USE cdc_huge; START TRANSACTION;
          INSERT INTO cdc_huge.huge SELECT seq, seq % 1000, REPEAT(MD5(seq), 6), NOW(6), seq * 1.25, JSON_OBJECT('k', seq, 'tag', 'huge') FROM seq_1_to_$rows;
          COMMIT"
    fi
    t_commit=$(now)
    wait_for $pid "the insert to be durable" events_at_least "$rows"
    ins=$(secs_since "$t_commit")

    if [ "$src" = pg ]; then
        "${PSQL[@]}" -d cdc_huge_src -c "BEGIN" -c "UPDATE huge SET a = a + 1, d = d + 0.01 WHERE id <= $updates" -c "COMMIT"
    else
        "${MY[@]}" -e "USE cdc_huge; START TRANSACTION; UPDATE cdc_huge.huge SET a = a + 1, d = d + 0.01 WHERE id <= $updates; COMMIT"
    fi
    t_commit=$(now)
    wait_for $pid "the update to be durable" events_at_least $((rows + updates))
    upd=$(secs_since "$t_commit")
    watch_peak $pid
    kill -TERM $pid
    wait $pid || true

    if [ "$sink" = jsonl ]; then
        local c u
        c=$(grep -c '"op":"insert"' "$DIR/out.jsonl" || true)
        u=$(grep -c '"op":"update"' "$DIR/out.jsonl" || true)
        if [ "$c" = "$rows" ] && [ "$u" = "$updates" ]; then check="every-change"; else check="MISSING:c=$c,u=$u"; fi
        rm -f "$DIR/out.jsonl"
    else
        # id, a and b of every row, and d of the updated ones, hashed the same way on both sides.
        local want got
        if [ "$src" = pg ]; then
            want=$("${PSQL[@]}" -d cdc_huge_src -At -c "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM (SELECT id, a, b, c, d, e FROM huge) t")
            got=$("${PSQL[@]}" -d cdc_huge_dst -At -c "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM (SELECT id, a, b, c, d, e FROM replica.huge) t")
        else
            want=$("${MY[@]}" -e "SELECT COUNT(*), SUM(a), SUM(d), SUM(CAST(CONV(LEFT(MD5(CONCAT(id, ':', a, ':', b)), 8), 16, 10) AS UNSIGNED)) FROM cdc_huge.huge" | tr '\t' '|')
            got=$("${PSQL[@]}" -d cdc_huge_dst -At -c "SELECT count(*), sum(a), sum(d), sum(('x' || left(md5(id || ':' || a || ':' || b), 8))::bit(32)::bigint) FROM replica.huge")
        fi
        if [ "$want" = "$got" ]; then check="target-equals-source"; else check="DIFFERENT:source=$want,target=$got"; fi
    fi
    "$AGENT" -c "$DIR/cdc-agent.toml" reset --yes >/dev/null 2>&1 || true
    echo "$kind $PEAK_KB $ins $upd $check"
}

: > "$WORK/results.txt"
for c in $CASES; do
    line=$(run_case "$c")
    echo "$line" | tee -a "$WORK/results.txt"
done

python3 - "$WORK/results.txt" "$PG_ROWS" "$PG_UPDATES" "$MY_ROWS" "$MY_UPDATES" <<'PY'
import sys
pg_rows, pg_upd, my_rows, my_upd = map(int, sys.argv[2:6])
print(f"Postgres: one transaction of {pg_rows:,} inserts, then one of {pg_upd:,} updates; MariaDB: {my_rows:,}, then {my_upd:,}")
for line in open(sys.argv[1]):
    case, peak, ins, upd, check = line.split()
    ok = "ok" if int(peak) < 64 * 1024 else "OVER"
    print(f"{case:<12} peak RSS {int(peak) / 1024:6.1f} MiB ({ok}, target < 64)  commit to durable: insert {float(ins):6.2f} s, update {float(upd):6.2f} s  {check}")
PY
