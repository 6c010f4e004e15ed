#!/bin/sh
# Start a Prefect worker for $WORK_POOL; create the pool first (with our job template and a
# concurrency limit) when it does not exist yet. Any arguments replace the worker command,
# e.g. `prefect server start` or the FiftyOne App in docker/compose.yaml.
set -eu

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

: "${PREFECT_API_URL:?set PREFECT_API_URL, e.g. http://prefect-server:4200/api}"
# Flow runs inherit the worker's environment:
# - heartbeats every 30 s: the pyroblur-crash-silent-runs automation (make deploy) sets a run
#   Crashed when they stop (its worker died), which frees the pool's slot;
# - the library's loggers go into each run's logs in the UI (outside a run: console only).
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY="${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-30}"
export PREFECT_LOGGING_EXTRA_LOGGERS="${PREFECT_LOGGING_EXTRA_LOGGERS:-pyroblur}"
export PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="${PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW:-ignore}"
# prefect.yaml's pull step changes into this directory (the code): /app in the images.
PYROBLUR_CODE_DIR="${PYROBLUR_CODE_DIR:-$(pwd)}"
export PYROBLUR_CODE_DIR

if ! prefect work-pool inspect "$WORK_POOL" >/dev/null 2>&1; then
    if [ -n "${WORK_POOL_TEMPLATE:-}" ]; then
        prefect work-pool create "$WORK_POOL" --type "$WORK_POOL_TYPE" \
            --base-job-template "$WORK_POOL_TEMPLATE" || true   # another worker may have won
    else
        prefect work-pool create "$WORK_POOL" --type "$WORK_POOL_TYPE" || true
    fi
fi
# The pool-wide limit (WORK_POOL_LIMIT: for the gpu pool, the number of GPUs its workers
# hold together) survives worker restarts; each worker takes at most WORK_POOL_CONCURRENCY
# runs (gpu: 1, its own GPU, from its CUDA_VISIBLE_DEVICES, which its runs inherit).
prefect work-pool set-concurrency-limit "$WORK_POOL" "${WORK_POOL_LIMIT:-$WORK_POOL_CONCURRENCY}"

# The dead-worker protection's second line: a sweeper beside the worker sets Crashed the runs
# whose heartbeats stopped, reading the server's records (deployments/sweeper.py), in case the
# automation's event was lost. It shares the worker's process group, so it stops with it.
python "$PYROBLUR_CODE_DIR/deployments/sweeper.py" &

# WORKER_HEALTHCHECK=1 (the compose services): the worker's health endpoint on
# PREFECT_WORKER_WEBSERVER_HOST:PORT, which answers 503 once the worker stopped polling.
exec prefect worker start --pool "$WORK_POOL" --type "$WORK_POOL_TYPE" \
    --limit "$WORK_POOL_CONCURRENCY" --name "${WORKER_NAME:-$WORK_POOL-$(hostname)}" \
    ${WORKER_HEALTHCHECK:+--with-healthcheck}
