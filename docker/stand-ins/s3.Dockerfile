# Offline stand-in for MinIO (docker/stack.sh only; compose.yaml keeps minio/minio): s3rver, an
# S3 API on the file system (objects survive a restart in the volume at /data), with MinIO's
# MINIO_ROOT_USER / MINIO_ROOT_PASSWORD as the only accepted key pair (signatures are checked).
ARG DEBIAN_IMAGE=pyroblur-local/debian:bookworm
ARG PYTHON_IMAGE=pyroblur-local/python:3.11-slim-bookworm
# the build stage: the local Python base for its CA certificates (npm reaches the registry)
FROM ${PYTHON_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm ca-certificates
WORKDIR /opt/s3
RUN npm install --omit=dev --no-audit --no-fund s3rver@3.7.1 && npm cache clean --force

FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && useradd --system --uid 999 --home-dir /data s3 \
    && mkdir -p /data \
    && chown s3:s3 /data
COPY --from=build /opt/s3/node_modules /opt/s3/node_modules
COPY s3-server.js s3-health.js /opt/s3/
USER s3
VOLUME ["/data"]
EXPOSE 9000
CMD ["node", "/opt/s3/s3-server.js"]
