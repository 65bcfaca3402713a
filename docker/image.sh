#!/usr/bin/env bash
# cdc-agent's container image, built and tried on this machine.
#
#   docker/image.sh build   the runtime image from a binary built here (the Dockerfile's
#                           `prebuilt` target), tagged $CDC_IMAGE (default cdc-agent:dev)
#   docker/image.sh test    build, then run it: `--version`, and an agent replicating the test
#                           Postgres (scripts/testenv.sh) into JSON lines inside the container,
#                           until Docker's health check says healthy and `cdc-agent status` in the
#                           container shows the changes; then a clean stop
#
# Where no image registry is reachable, the runtime stage's base (debian:bookworm-slim) is made
# from Debian's packages with debootstrap and `docker import`. A dockerd that is not running is
# started (as root: --iptables=false --bridge=none, so containers use the host's network). Where
# docker cannot run at all, the script says so and exits 0 without testing anything.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${CDC_IMAGE:-cdc-agent:dev}"

# shellcheck source=docker/lib.sh
source docker/lib.sh

build() {
    ensure_docker
    ensure_base_image
    log "building the release binary on the host"
    bash scripts/duckdb-lib.sh >/dev/null
    cargo build --release --quiet
    local target
    target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    mkdir -p docker/dist
    cp "$target/release/cdc-agent" docker/dist/cdc-agent
    cp "$(bash scripts/duckdb-lib.sh)/libduckdb.so" docker/dist/libduckdb.so
    log "docker build --target prebuilt -t $IMAGE"
    # The host's network: this machine's dockerd runs without a bridge (apt in the build).
    docker build --network host --target prebuilt -t "$IMAGE" -f docker/Dockerfile . >"$WORK/build.log" 2>&1 ||
        die "docker build failed (see $WORK/build.log)"
}

run_test() {
    build
    log "docker run $IMAGE --version"
    local version
    version="$(docker run --rm --network none "$IMAGE" --version)"
    echo "$version" | grep -q '^cdc-agent ' || die "unexpected --version output: $version"
    [ "$(docker run --rm --network none --entrypoint id "$IMAGE" -u)" != 0 ] || die "the image runs as root"

    bash scripts/testenv.sh start >/dev/null
    eval "$(bash scripts/testenv.sh env)"
    local psql=("$CDC_TEST_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${CDC_TEST_PG_PORT:-55432}" -U postgres)
    local name=cdc_image_test port=59187
    "${psql[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'cdc_$name'" >/dev/null
    "${psql[@]}" -d postgres -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name"
    "${psql[@]}" -d "$name" -c "CREATE TABLE items (id int PRIMARY KEY, v text)" -c "INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 100) g"

    local conf="$WORK/$name.toml"
    cat >"$conf" <<EOF
[agent]
name = "$name"
state_dir = "/var/lib/cdc-agent"
admin_addr = "127.0.0.1:$port"

[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:${CDC_TEST_PG_PORT:-55432}/$name"
tables = ["public.items"]

[sink]
type = "jsonl"
path = "/var/lib/cdc-agent/out.jsonl"
flush_interval_ms = 50
EOF
    chmod 644 "$conf"
    docker rm -f "$name" >/dev/null 2>&1 || true
    docker volume rm "$name-state" >/dev/null 2>&1 || true
    docker run -d --name "$name" --network host -e CDC_AGENT_ADMIN_PORT="$port" \
        -v "$conf:/etc/cdc-agent/cdc-agent.toml:ro" -v "$name-state:/var/lib/cdc-agent" "$IMAGE" >/dev/null
    trap 'docker logs '"$name"' 2>&1 | tail -20 >&2; docker rm -f '"$name"' >/dev/null 2>&1 || true' EXIT
    log "waiting for Docker's health check and for streaming"
    wait_for "a healthy container" 120 bash -c "[ \"\$(docker inspect -f '{{.State.Health.Status}}' $name)\" = healthy ]"
    wait_for "state streaming" 120 bash -c "docker exec $name cdc-agent status --json | grep -Eq '\"state\": *\"streaming\"'"
    "${psql[@]}" -d "$name" -c "INSERT INTO items SELECT g, 'streamed ' || g FROM generate_series(101, 150) g"
    wait_for "150 records in the container's output" 120 bash -c "[ \"\$(docker exec $name sh -c 'wc -l < /var/lib/cdc-agent/out.jsonl' 2>/dev/null)\" = 150 ]"
    docker exec "$name" cdc-agent status
    docker stop -t 30 "$name" >/dev/null
    local code
    code="$(docker inspect -f '{{.State.ExitCode}}' "$name")"
    [ "$code" = 0 ] || die "the agent exited $code on docker stop (logs: docker logs $name)"
    docker rm "$name" >/dev/null
    docker volume rm "$name-state" >/dev/null
    trap - EXIT
    "${psql[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'cdc_$name'" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null
    log "ok: $version, non-root, healthy, streamed 150 records, stopped cleanly"
}

mkdir -p "$WORK"
case "${1:-test}" in
build) build ;;
test) run_test ;;
*) die "usage: docker/image.sh build|test" ;;
esac
