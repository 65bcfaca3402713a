#!/usr/bin/env bash
# Benchmark: MariaDB binlog -> cdc-agent -> JSON lines file, against `mariadb-binlog
# --read-from-remote-server --verbose --base64-output=decode-rows` reading the same binlog range
# to /dev/null, in the same run (interleaved, medians).
#
#   bench/mysql.sh                          1,000,000 row changes, 3 runs
#   BENCH_TRANSACTIONS=100 BENCH_RUNS=1 bench/mysql.sh
#   BENCH_OUT_DIR=/dev/shm bench/mysql.sh   the JSON lines on tmpfs: the agent's own rate, without
#                                           the disk's (the file is ~480 bytes a change, written
#                                           durably; mariadb-binlog writes to /dev/null)
#
# Workload: 1,000 transactions of 500 inserts, 300 updates, 200 deletes on
# (id bigint pk, a int, b varchar(64), c timestamp(6), d decimal(12,2), e json).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
TX="${BENCH_TRANSACTIONS:-1000}"
RUNS="${BENCH_RUNS:-3}"
CHANGES=$((TX * 1000))
WORK="${BENCH_DIR:-/var/tmp/cdc-agent-bench-mysql}"
ADMIN_PORT=9197

CDC_TESTENV_FOR_TESTS=0 bash scripts/testenv.sh start
eval "$(bash scripts/testenv.sh env)"
PORT="$CDC_TEST_MYSQL_PORT"
MY=(mariadb --no-defaults -h 127.0.0.1 -P "$PORT" -u root --batch --skip-column-names)
bash scripts/duckdb-lib.sh >/dev/null
cargo build --release --quiet
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
AGENT="${BENCH_AGENT:-$TARGET_DIR/release/cdc-agent}"

rm -rf "$WORK" && mkdir -p "$WORK"
"${MY[@]}" -e "DROP DATABASE IF EXISTS cdc_bench; CREATE DATABASE cdc_bench;
  CREATE TABLE cdc_bench.bench (id bigint PRIMARY KEY, a int, b varchar(64), c timestamp(6) NULL, d decimal(12,2), e json)"

out_path() { # dir -> the JSON lines file of that run
    if [ -n "${BENCH_OUT_DIR:-}" ]; then echo "$BENCH_OUT_DIR/cdc-bench-$(basename "$1").jsonl"; else echo "$1/changes.jsonl"; fi
}

write_config() { # dir name
    rm -f "$(out_path "$1")"
    cat > "$1/cdc-agent.toml" <<TOML
[agent]
name = "$2"
state_dir = "$1/state"
admin_addr = "127.0.0.1:$ADMIN_PORT"

[source]
type = "mysql"
url = "mysql://cdc:secret-pw@127.0.0.1:$PORT/cdc_bench"
tables = ["cdc_bench.bench"]
snapshot = "never"

[sink]
type = "jsonl"
path = "$(out_path "$1")"
TOML
}

# A pipeline that has seen the binlog up to here: each run starts from a copy of its state.
mkdir -p "$WORK/primed"
write_config "$WORK/primed" bench
"${MY[@]}" -e "FLUSH BINARY LOGS"
RUST_LOG=warn "$AGENT" -c "$WORK/primed/cdc-agent.toml" run 2>"$WORK/primed/agent.log" &
pid=$!
sleep 3
kill -TERM $pid && wait $pid || true
read -r FILE START < <("${MY[@]}" -e "SHOW MASTER STATUS" | awk '{print $1, $2}')

echo "bench: writing $CHANGES row changes in $TX transactions"
python3 - "$TX" > "$WORK/workload.sql" <<'PY'
import sys
for t in range(int(sys.argv[1])):
    b = t * 500
    print(f"""START TRANSACTION;
INSERT INTO cdc_bench.bench SELECT seq, seq % 1000, CONCAT(MD5(seq), MD5(seq + 1)), NOW(6), seq * 1.25, JSON_OBJECT('k', seq, 'tag', 'bench') FROM seq_{b + 1}_to_{b + 500};
UPDATE cdc_bench.bench SET a = a + 1, d = d + 0.01 WHERE id > {b} AND id <= {b + 300};
DELETE FROM cdc_bench.bench WHERE id > {b + 300} AND id <= {b + 500};
COMMIT;""")
PY
"${MY[@]}" cdc_bench < "$WORK/workload.sql"
read -r END_FILE END < <("${MY[@]}" -e "SHOW MASTER STATUS" | awk '{print $1, $2}')
[ "$END_FILE" = "$FILE" ] || { echo "bench: the workload spans binlog files $FILE..$END_FILE; raise max_binlog_size" >&2; exit 1; }


run_mariadb_binlog() {
    local t0 t1
    t0=$(now)
    mariadb-binlog --no-defaults --read-from-remote-server --host=127.0.0.1 --port="$PORT" --user=root \
        --start-position="$START" --stop-position="$END" --verbose --base64-output=decode-rows "$FILE" >/dev/null
    t1=$(now)
    python3 -c "print($t1 - $t0)"
}

run_agent() { # run number -> "seconds cpu_seconds peak_kb lines"
    local i=$1 dir="$WORK/agent_$1" m
    mkdir -p "$dir"
    cp -r "$WORK/primed/state" "$dir/state"
    write_config "$dir" bench
    m=$(measure_agent "$AGENT" "$dir" "$CHANGES")
    echo "$m $(wc -l < "$(out_path "$dir")")"
    [ -z "${BENCH_OUT_DIR:-}" ] || rm -f "$(out_path "$dir")"
}

: > "$WORK/results.txt"
for i in $(seq 1 "$RUNS"); do
    r=$(run_mariadb_binlog)
    a=$(run_agent "$i")
    echo "run $i: mariadb-binlog ${r}s; cdc-agent (s, cpu s, peak KiB, lines) $a"
    echo "$r $a" >> "$WORK/results.txt"
done

summarize_jsonl mariadb-binlog "$CHANGES" "$WORK/results.txt"
