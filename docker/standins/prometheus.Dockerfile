# A stand-in for the official prom/prometheus image, made from Debian's prometheus package, for
# machines where no image registry is reachable (docker/compose-test.sh tags it prom/prometheus
# there). Same entrypoint contract: prometheus's own flags as arguments, config in
# /etc/prometheus, data in /prometheus.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown nobody:nogroup /prometheus \
    && ln -s /usr/bin/prometheus /bin/prometheus 2>/dev/null || true
USER nobody
EXPOSE 9090
VOLUME ["/prometheus"]
WORKDIR /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
