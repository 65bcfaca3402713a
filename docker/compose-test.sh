#!/usr/bin/env bash
# docker/compose.yaml, tried for real: `up` → the agents stream both sources into the warehouse →
# `exec agent cdc-agent status` shows it → Prometheus scrapes both agents with the alert rules
# loaded → `down -v`.
#
# Images: cdc-agent:latest is built from a binary built here (docker/image.sh build). Where no
# image registry is reachable, postgres:15, mariadb:10.11 and prom/prometheus are stand-ins made
# from Debian's packages (docker/standins/); with a registry, the official images are pulled.
# Skips with a message where docker cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=docker/lib.sh
source docker/lib.sh
PROJECT=cdcdemo
COMPOSE=(docker-compose -p "$PROJECT" -f docker/compose.yaml)

ensure_docker
command -v docker-compose >/dev/null || {
    [ "$(id -u)" -eq 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
} || skip "docker-compose is not installed"
ensure_base_image

CDC_IMAGE=cdc-agent:latest bash docker/image.sh build
for standin in postgres:15=postgres mariadb:10.11=mariadb prom/prometheus=prometheus; do
    image="${standin%%=*}"
    docker image inspect "$image" >/dev/null 2>&1 && continue
    timeout 60 docker pull "$image" >/dev/null 2>&1 && continue
    log "no registry: building a stand-in for $image from Debian's packages"
    docker build --network host -t "$image" -f "docker/standins/${standin#*=}.Dockerfile" docker/standins \
        >"$WORK/standin-${standin#*=}.log" 2>&1 || die "building the $image stand-in failed (see $WORK/standin-${standin#*=}.log)"
done

"${COMPOSE[@]}" down -v >/dev/null 2>&1 || true
trap '"${COMPOSE[@]}" logs --no-color > "$WORK/compose.log" 2>&1; "${COMPOSE[@]}" down -v >/dev/null 2>&1 || true' EXIT
log "docker-compose up -d"
"${COMPOSE[@]}" up -d

status_of() { "${COMPOSE[@]}" exec -T "$1" cdc-agent status --json 2>/dev/null; }
for agent in agent agent-mariadb; do
    wait_for "$agent streaming" 360 bash -c "$(declare -p COMPOSE); \"\${COMPOSE[@]}\" exec -T $agent cdc-agent status --json 2>/dev/null | grep -Eq '\"state\": *\"streaming\"'"
done

log "writing into both sources"
"${COMPOSE[@]}" exec -T postgres psql -X -q -U postgres -c \
    "INSERT INTO orders (customer, total) SELECT 'late ' || g, g FROM generate_series(1, 50) g; DELETE FROM orders WHERE id <= 10"
"${COMPOSE[@]}" exec -T mariadb mariadb -uroot -pdemo-source-pw shop -e \
    "INSERT INTO products (name, price) VALUES ('doohickey', 1.00); UPDATE products SET price = 10.99 WHERE name = 'widget'"

warehouse() { "${COMPOSE[@]}" exec -T warehouse psql -X -q -t -A -U postgres -c "$1" 2>/dev/null; }
wait_for "140 orders in the warehouse" 240 bash -c "$(declare -p COMPOSE); [ \"\$(\"\${COMPOSE[@]}\" exec -T warehouse psql -X -q -t -A -U postgres -c 'SELECT count(*) FROM from_postgres.orders' 2>/dev/null)\" = 140 ]"
wait_for "4 products in the warehouse" 240 bash -c "$(declare -p COMPOSE); [ \"\$(\"\${COMPOSE[@]}\" exec -T warehouse psql -X -q -t -A -U postgres -c \"SELECT count(*) FROM from_mariadb.products WHERE price IS NOT NULL\" 2>/dev/null)\" = 4 ]"
[ "$(warehouse "SELECT price FROM from_mariadb.products WHERE name = 'widget'")" = 10.99 ] || die "the update did not reach the warehouse"

log "docker-compose exec agent cdc-agent status"
"${COMPOSE[@]}" exec -T agent cdc-agent status
status_of agent | grep -Eq '"events_total": *[1-9]' || die "status shows no events"

log "Prometheus: both agents scraped, the alert rules loaded"
wait_for "both scrape targets up" 120 bash -c "curl -fsS http://127.0.0.1:9090/api/v1/targets | python3 -c 'import json,sys; t=json.load(sys.stdin)[\"data\"][\"activeTargets\"]; sys.exit(0 if len(t)==2 and all(x[\"health\"]==\"up\" for x in t) else 1)'"
curl -fsS http://127.0.0.1:9090/api/v1/rules | grep -q CdcPipelineFailed || die "the alert rules are not loaded"
curl -fsS 'http://127.0.0.1:9090/api/v1/query?query=cdc_events_total' | grep -q shop_mariadb || die "no cdc-agent metrics in Prometheus"

log "the agents read their passwords from secret files and print them nowhere"
for agent in agent agent-mariadb; do
    if "${COMPOSE[@]}" logs --no-color "$agent" 2>&1 | grep -Eq 'demo-(source|warehouse)-pw'; then
        die "$agent's log shows a password"
    fi
    if "${COMPOSE[@]}" exec -T "$agent" cdc-agent status --json 2>&1 | grep -Eq 'demo-(source|warehouse)-pw'; then
        die "$agent's status shows a password"
    fi
done

log "docker-compose down -v"
trap - EXIT
"${COMPOSE[@]}" down -v >/dev/null
log "ok: both sources streamed into the warehouse, status answered in the container, Prometheus scraped both agents with the rules loaded"
