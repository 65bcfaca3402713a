# A stand-in for the official mariadb:10.11 image, made from Debian's packages, for machines where
# no image registry is reachable (docker/compose-test.sh tags it mariadb:10.11 there). It follows
# the official image's contract as far as compose.yaml uses it: MARIADB_ROOT_PASSWORD,
# MARIADB_DATABASE, scripts in /docker-entrypoint-initdb.d on first start, mariadbd options as
# arguments, data in /var/lib/mysql.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends mariadb-server \
    && rm -rf /var/lib/apt/lists/* /var/lib/mysql/* \
    && mkdir -p /docker-entrypoint-initdb.d /run/mysqld \
    && chown mysql:mysql /run/mysqld /var/lib/mysql
COPY mariadb-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME ["/var/lib/mysql"]
EXPOSE 3306
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["mariadbd"]
