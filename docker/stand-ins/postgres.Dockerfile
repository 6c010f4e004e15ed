# Offline stand-in for postgres:16-alpine (docker/stack.sh only; compose.yaml keeps the real
# image): Debian 12's PostgreSQL 15 with the official image's interface, POSTGRES_USER /
# POSTGRES_PASSWORD / POSTGRES_DB on first start, data in /var/lib/postgresql/data, pg_isready.
ARG DEBIAN_IMAGE=pyroblur-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
ENV LANG=C.UTF-8 \
    PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
# No docs, man pages or translations (dpkg skips them), and no JIT: Debian's postgresql-15
# depends on LLVM (105 MB) for its optional JIT, which the server here runs without (jit=off).
RUN printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-exclude=/usr/share/man/*' \
        'path-exclude=/usr/share/locale/*' > /etc/dpkg/dpkg.cfg.d/slim \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -f /usr/lib/x86_64-linux-gnu/libLLVM-*.so* /usr/lib/postgresql/15/lib/llvmjit* \
    && rm -rf /usr/lib/postgresql/15/lib/bitcode \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old \
    && mkdir -p /var/run/postgresql "$PGDATA" \
    && chown postgres:postgres /var/run/postgresql "$PGDATA" \
    && chmod 700 "$PGDATA"
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
USER postgres
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
