#!/bin/bash
# The official mariadb image's entrypoint, in brief (see mariadb.Dockerfile).
set -euo pipefail
if [ "${1:0:1}" = '-' ]; then set -- mariadbd "$@"; fi
if [ "$1" != mariadbd ]; then exec "$@"; fi
shift
if [ ! -d /var/lib/mysql/mysql ]; then
    : "${MARIADB_ROOT_PASSWORD:?set MARIADB_ROOT_PASSWORD}"
    chown mysql:mysql /var/lib/mysql
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
    mariadbd --user=mysql --skip-networking --socket=/run/mysqld/init.sock &
    pid=$!
    for _ in $(seq 120); do
        mariadb --socket=/run/mysqld/init.sock -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
        sleep 0.5
    done
    {
        echo "CREATE USER 'root'@'%' IDENTIFIED BY '${MARIADB_ROOT_PASSWORD}';"
        echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '${MARIADB_ROOT_PASSWORD}';"
        [ -n "${MARIADB_DATABASE:-}" ] && echo "CREATE DATABASE IF NOT EXISTS \`${MARIADB_DATABASE}\`;"
        echo "FLUSH PRIVILEGES;"
    } | mariadb --socket=/run/mysqld/init.sock -uroot
    for f in /docker-entrypoint-initdb.d/*.sql; do
        [ -e "$f" ] && mariadb --socket=/run/mysqld/init.sock -uroot -p"${MARIADB_ROOT_PASSWORD}" "${MARIADB_DATABASE:-}" <"$f"
    done
    kill "$pid"
    wait "$pid" || true
fi
exec mariadbd --user=mysql --bind-address=0.0.0.0 "$@"
