# A stand-in for the official postgres:15 image, made from Debian's packages, for machines where
# no image registry is reachable (docker/compose-test.sh tags it postgres:15 there). It follows
# the official image's contract as far as compose.yaml uses it: POSTGRES_PASSWORD, scripts in
# /docker-entrypoint-initdb.d on first start, `postgres -c ...` arguments, data in PGDATA.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /docker-entrypoint-initdb.d /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
ENV PGDATA=/var/lib/postgresql/data PATH=/usr/lib/postgresql/15/bin:$PATH
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
