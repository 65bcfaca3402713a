#!/usr/bin/env bash
# Benchmark: MariaDB binlog -> cdc-agent -> JSON lines file, against `mariadb-binlog
# --read-from-remote-server --verbose --base64-output=decode-rows` reading the same binlog range
# to /dev/null, in the same run (interleaved, medians), on two workload shapes.
#
#   bench/mysql.sh                          both shapes, 1,000,000 row changes each, 3 runs each
#   BENCH_SHAPE=wide bench/mysql.sh         one shape only (narrow | wide)
#   BENCH_TRANSACTIONS=100 BENCH_RUNS=1 bench/mysql.sh
#   BENCH_OUT_DIR=/dev/shm bench/mysql.sh   the JSON lines on tmpfs: the agent's own rate, without
#                                           the disk's (the file is ~480 bytes a change, written
#                                           durably; mariadb-binlog writes to /dev/null)
#   BENCH_AGENT=path/to/cdc-agent           measure that build (nothing is built then)
#
# Workload: 1,000 transactions of 500 inserts, 300 updates, 200 deletes, on
#   narrow: (id bigint pk, a int, b varchar(64), c timestamp(6), d decimal(12,2), e json), updates
#           of two columns, JSON objects of two keys;
#   wide:   (id bigint pk, a int, b text, c timestamp(6), d decimal(20,4), e json), updates of
#           every column, JSON objects of seven keys (strings, numbers, a boolean, an array).
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
SHAPES="${BENCH_SHAPE:-narrow wide}"
for shape in $SHAPES; do
    case "$shape" in narrow | wide) ;; *) echo "bench: BENCH_SHAPE is narrow or wide, not $shape" >&2; exit 2 ;; esac
done
bench_agent

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

# The workload's SQL for a shape: per transaction 500 inserts, 300 updates, 200 deletes.
write_workload() { # shape transactions
    python3 - "$1" "$2" <<'PY'
import sys
shape, transactions = sys.argv[1], int(sys.argv[2])
for t in range(transactions):
    b = t * 500
    rows = f"seq_{b + 1}_to_{b + 500}"
    keys = f"id > {b} AND id <= {b + 300}"
    gone = f"id > {b + 300} AND id <= {b + 500}"
    if shape == "narrow":
        insert = f"""INSERT INTO cdc_bench.bench SELECT seq, seq % 1000, CONCAT(MD5(seq), MD5(seq + 1)), NOW(6), seq * 1.25, JSON_OBJECT('k', seq, 'tag', 'bench') FROM {rows};"""
        update = f"UPDATE cdc_bench.bench SET a = a + 1, d = d + 0.01 WHERE {keys};"
    else:
        insert = f"""INSERT INTO cdc_bench.bench SELECT seq, seq % 1000, CONCAT(MD5(seq), ' ', MD5(seq + 1), ' ', MD5(seq + 2)), NOW(6), seq * 1.2345 - 5000, JSON_OBJECT('k', seq, 'tag', 'bench', 'name', MD5(seq), 'score', seq * 0.5, 'active', seq % 2 = 0, 'tags', JSON_ARRAY('a', 'b', seq % 7), 'city', 'Lisbon') FROM {rows};"""
        update = f"UPDATE cdc_bench.bench SET a = a + 1, b = CONCAT(b, ' x'), c = NOW(6), d = d + 0.0001, e = JSON_SET(e, '$.k', id + 1, '$.city', 'Porto') WHERE {keys};"
    print(f"""START TRANSACTION;
{insert}
{update}
DELETE FROM cdc_bench.bench WHERE {gone};
COMMIT;""")
PY
}

run_mariadb_binlog() { # file start end -> seconds
    local t0 t1
    t0=$(now)
    mariadb-binlog --no-defaults --read-from-remote-server --host=127.0.0.1 --port="$PORT" --user=root \
        --start-position="$2" --stop-position="$3" --verbose --base64-output=decode-rows "$1" >/dev/null
    t1=$(now)
    python3 -c "print($t1 - $t0)"
}

run_agent() { # work dir, run number -> "seconds cpu_seconds peak_kb lines"
    local dir="$1/agent_$2" m
    mkdir -p "$dir"
    cp -r "$1/primed/state" "$dir/state"
    write_config "$dir" bench
    m=$(measure_agent "$AGENT" "$dir" "$CHANGES")
    echo "$m $(wc -l < "$(out_path "$dir")")"
    [ -z "${BENCH_OUT_DIR:-}" ] || rm -f "$(out_path "$dir")"
}

bench_shape() { # shape
    local shape=$1 work="$WORK/$1" columns file start end_file end i r a pid
    case "$shape" in
        narrow) columns="id bigint PRIMARY KEY, a int, b varchar(64), c timestamp(6) NULL, d decimal(12,2), e json" ;;
        wide) columns="id bigint PRIMARY KEY, a int, b text, c timestamp(6) NULL, d decimal(20,4), e json" ;;
    esac
    rm -rf "$work" && mkdir -p "$work"
    "${MY[@]}" -e "DROP DATABASE IF EXISTS cdc_bench; CREATE DATABASE cdc_bench;
      CREATE TABLE cdc_bench.bench ($columns)"

    # A pipeline that has seen the binlog up to here: each run starts from a copy of its state.
    mkdir -p "$work/primed"
    write_config "$work/primed" bench
    "${MY[@]}" -e "FLUSH BINARY LOGS"
    RUST_LOG=warn "$AGENT" -c "$work/primed/cdc-agent.toml" run 2>"$work/primed/agent.log" &
    pid=$!
    sleep 3
    kill -TERM $pid && wait $pid || true
    read -r file start < <("${MY[@]}" -e "SHOW MASTER STATUS" | awk '{print $1, $2}')

    echo "bench ($shape): writing $CHANGES row changes in $TX transactions"
    write_workload "$shape" "$TX" > "$work/workload.sql"
    "${MY[@]}" cdc_bench < "$work/workload.sql"
    read -r end_file end < <("${MY[@]}" -e "SHOW MASTER STATUS" | awk '{print $1, $2}')
    [ "$end_file" = "$file" ] || { echo "bench: the workload spans binlog files $file..$end_file; raise max_binlog_size" >&2; exit 1; }
    # The range, to measure other builds on the same binlog later (primed/ holds the state).
    echo "$file $start $end" > "$work/range.txt"

    : > "$work/results.txt"
    for i in $(seq 1 "$RUNS"); do
        r=$(run_mariadb_binlog "$file" "$start" "$end")
        a=$(run_agent "$work" "$i")
        echo "run $i ($shape): mariadb-binlog ${r}s; cdc-agent (s, cpu s, peak KiB, lines) $a"
        echo "$r $a" >> "$work/results.txt"
    done
    echo "== $shape shape (uptime: $(uptime | sed 's/.*load/load/'))"
    summarize_jsonl mariadb-binlog "$CHANGES" "$work/results.txt" 1.0
}

rm -rf "$WORK" && mkdir -p "$WORK"
for shape in $SHAPES; do
    bench_shape "$shape"
done
