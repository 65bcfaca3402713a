#!/usr/bin/env bash
# Shared by docker/image.sh and docker/compose-test.sh (sourced, not run): a running dockerd and
# the Debian base image, on machines with or without an image registry.

WORK="${CDC_DOCKER_WORK:-/var/lib/cdc-docker-test}"
BASE_IMAGE=debian:bookworm-slim
mkdir -p "$WORK"

log() { echo "$(basename "$0" .sh): $*" >&2; }
die() {
    echo "$(basename "$0" .sh): error: $*" >&2
    exit 1
}
skip() {
    echo "$(basename "$0" .sh): SKIPPED: $*" >&2
    exit 0
}

ensure_docker() {
    docker info >/dev/null 2>&1 && return 0
    if ! command -v dockerd >/dev/null; then
        [ "$(id -u)" -eq 0 ] || skip "docker is not running and this user cannot install it"
        log "installing Debian's docker.io"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null ||
            skip "docker.io could not be installed"
    fi
    [ "$(id -u)" -eq 0 ] || skip "dockerd is not running, and only root can start it"
    mkdir -p "$WORK"
    log "starting dockerd (log: $WORK/dockerd.log)"
    nohup dockerd --iptables=false --bridge=none --storage-driver=overlay2 >"$WORK/dockerd.log" 2>&1 &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    skip "dockerd did not start here (see $WORK/dockerd.log)"
}

ensure_base_image() {
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
    if timeout 30 docker pull "$BASE_IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    log "no registry: making $BASE_IMAGE from Debian's packages (debootstrap --variant=minbase bookworm)"
    command -v debootstrap >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    local rootfs="$WORK/rootfs-bookworm"
    if [ ! -f "$rootfs/.complete" ]; then
        rm -rf "$rootfs"
        debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
            die "debootstrap failed (see $WORK/debootstrap.log)"
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
        touch "$rootfs/.complete"
    fi
    tar --exclude=./.complete -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
}

wait_for() {
    local what="$1" tries="$2"
    shift 2
    for _ in $(seq "$tries"); do
        "$@" && return 0
        sleep 0.5
    done
    die "timed out waiting for $what"
}
