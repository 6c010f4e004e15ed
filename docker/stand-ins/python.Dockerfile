# Offline stand-in for python:3.11-slim-bookworm (docker/stack.sh; no image registry here):
# Debian 12's Python 3.11 in a virtual environment on PATH, so `pip install` in the project's
# Dockerfile works as on the official image (Debian's own Python refuses system-wide pip).
# FROM: pyroblur-local/debian:bookworm, made by `debootstrap --variant=minbase` + `docker import`.
# host-ca.crt: the certificates this host trusts beyond Debian's own (stack.sh copies them in;
# empty where there are none), e.g. the CA of a TLS-inspecting proxy in front of PyPI.
ARG DEBIAN_IMAGE=pyroblur-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
ENV LANG=C.UTF-8 \
    PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
COPY host-ca.crt /usr/local/share/ca-certificates/host-ca.crt
RUN update-ca-certificates >/dev/null \
    && printf '%s\n' \
        'deb http://deb.debian.org/debian bookworm main' \
        'deb http://deb.debian.org/debian bookworm-updates main' \
        'deb http://deb.debian.org/debian-security bookworm-security main' > /etc/apt/sources.list \
    && python3 -m venv /opt/python \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /root/.cache
CMD ["python3"]
