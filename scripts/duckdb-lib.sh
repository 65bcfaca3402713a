#!/usr/bin/env bash
# DuckDB's prebuilt C library (libduckdb.so), which the DuckDB sink links against: fetched once
# from the npm registry (DuckDB ships it inside its Node.js bindings package), checked against a
# pinned SHA-256 and kept in /var/cache/cdc-agent/duckdb-$VERSION. Building DuckDB's C++ from
# source instead (the `duckdb-bundled` cargo feature) takes half an hour on two cores.
#
#   scripts/duckdb-lib.sh          make sure the library is there; prints its folder
#
# `.cargo/config.toml` points the build at that folder (DUCKDB_LIB_DIR), and build.rs writes it
# into the binary's run path, next to `$ORIGIN` (a copy of libduckdb.so beside the binary).
# Installs npm (Debian's package) when it is missing.
set -euo pipefail

VERSION=1.5.6
PACKAGE="@duckdb/node-bindings-linux-x64@1.5.6-r.1"
# sha256 of the package tarball and of the library in it, as fetched on 2026-12-07.
TARBALL_SHA256=1b9f82478539bb9a1d1df44bd103121a12ae52142c07158dc52b97d2ec1d69ff
LIBRARY_SHA256=3f4962cdd266eab2b479a5b5a4a6d063d279b2954ae814ed00385d553b747633
DIR="${CDC_DUCKDB_LIB_DIR:-/var/cache/cdc-agent/duckdb-$VERSION}"

log() { echo "duckdb-lib: $*" >&2; }
die() {
    echo "duckdb-lib: error: $*" >&2
    exit 1
}

library_ok() {
    [ -f "$DIR/libduckdb.so" ] &&
        [ "$(sha256sum "$DIR/libduckdb.so" | cut -d' ' -f1)" = "$LIBRARY_SHA256" ]
}

if library_ok; then
    echo "$DIR"
    exit 0
fi

case "$(uname -m)" in
x86_64) ;;
*) die "the prebuilt library is for x86_64 Linux; on $(uname -m) build with --features duckdb-bundled" ;;
esac

if ! command -v npm >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "npm is missing (apt-get install npm, as root)"
    log "installing npm (Debian's package)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >&2 ||
        die "apt-get install npm failed"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log "fetching $PACKAGE (24 MB, once per machine)"
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null) || die "npm pack $PACKAGE failed"
tarball="$(ls "$work"/*.tgz)"
[ "$(sha256sum "$tarball" | cut -d' ' -f1)" = "$TARBALL_SHA256" ] ||
    die "$PACKAGE does not match its pinned SHA-256: refusing to use it"
tar -xzf "$tarball" -C "$work" package/libduckdb.so package/LICENSE
mkdir -p "$DIR"
# Into place by rename, so a build never sees half a library.
install -m 0644 "$work/package/LICENSE" "$DIR/LICENSE"
install -m 0755 "$work/package/libduckdb.so" "$DIR/libduckdb.so.tmp"
mv "$DIR/libduckdb.so.tmp" "$DIR/libduckdb.so"
library_ok || die "the library in $PACKAGE does not match its pinned SHA-256"
log "libduckdb.so (DuckDB $VERSION) in $DIR"
echo "$DIR"
