#!/usr/bin/env bash
# The compose stack on a host without an image registry (docs/operations.md, "The stack
# offline"). make stack-build | stack-up | stack-smoke | stack-down call this:
#
#   docker/stack.sh build   base image (debootstrap + docker import, once), the stand-ins for
#                           postgres/mongo/minio, the project image (targets cpu and gpu)
#   docker/stack.sh up      start every service, wait for every health check (bounded)
#   docker/stack.sh smoke   build, fresh volumes, up, the demo through the workers (a gpu worker
#                           killed mid-training, the retry resumes), a file anonymized through
#                           the API, down, up again (champion and dataset still there), down
#   docker/stack.sh down    stop and remove the containers (named volumes are kept)
#   docker/stack.sh clean   down and remove the volumes too
#   docker/stack.sh dc ARGS docker-compose ARGS on the harness's project, e.g. `dc logs gpu-worker`
#
# docker/compose.yaml keeps the real image names for users; the stand-ins come in through
# docker/compose.stack.yaml, rendered with a generated env file into docker/.stack/ (ignored by
# git; its secrets never leave this host). Settings: STACK_PROJECT (pyroblur-stack),
# STACK_WAIT_S (600, the bound on every wait), STACK_PORT_BASE (14000: Prefect 14200, FiftyOne
# 15151, MLflow 15000, API 18000, S3 19000/19001, away from a developer's `make server`),
# STACK_DEMO_SET (--set overrides of configs/demo.yaml), DEBIAN_MIRROR.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="$ROOT/docker/.stack"
PROJECT="${STACK_PROJECT:-pyroblur-stack}"
TAG="${PYROBLUR_IMAGE_TAG:-0.1.0}"
WAIT_S="${STACK_WAIT_S:-600}"
PORT_BASE="${STACK_PORT_BASE:-14000}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_IMAGE=pyroblur-local/debian:bookworm
PYTHON_IMAGE=pyroblur-local/python:3.11-slim-bookworm
# docker-compose 1.29 and a CLI without buildx: the classic builder (it reads /.dockerignore)
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
mkdir -p "$STATE"
LOG="${STACK_LOG:-$STATE/stack.log}"
T0=$(date +%s)

say() { printf '[%s +%4ss] %s\n' "$(date -u +%H:%M:%S)" "$(($(date +%s) - T0))" "$*" | tee -a "$LOG" >&2; }
die() { say "FAILED: $*"; exit 1; }
# step NAME CMD...: run a step, log its wall time
step() {
    local name="$1" start rc
    shift
    start=$(date +%s)
    say "step '$name' ..."
    set +e
    "$@"
    rc=$?
    set -e
    [ "$rc" -eq 0 ] || die "step '$name' (exit $rc after $(($(date +%s) - start)) s)"
    say "step '$name' done in $(($(date +%s) - start)) s"
}

need() { command -v "$1" >/dev/null || die "$1 not found: $2"; }

preflight() {
    need docker "install docker.io and start dockerd (docs/operations.md)"
    need docker-compose "apt-get install -y docker-compose"
    docker info >/dev/null 2>&1 || die "dockerd does not answer: start it as root, e.g. 'dockerd &' (docs/operations.md)"
}

# ---------------------------------------------------------------- build
build_debian() {
    if docker image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then
        say "$DEBIAN_IMAGE exists (docker rmi it to make it again)"
        return
    fi
    need debootstrap "apt-get install -y debootstrap"
    local dir="$STATE/rootfs"
    rm -rf "$dir"
    nice -n 10 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$dir" "$MIRROR"
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    tar -C "$dir" -c . | docker import - "$DEBIAN_IMAGE"
    rm -rf "$dir"
}

# The certificates this host trusts beyond Debian's own bundle (a TLS-inspecting proxy's CA):
# the local base trusts them too, or pip and npm cannot reach their registries from a build.
host_ca() {
    local out="$1"
    docker run --rm "$DEBIAN_IMAGE" cat /etc/ssl/certs/ca-certificates.crt > "$STATE/debian-ca.crt"
    python3 - "$STATE/debian-ca.crt" "$out" <<'EOF'
import re, sys
pem = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
def certs(path):
    try:
        return pem.findall(open(path).read())
    except OSError:
        return []
debian = set(certs(sys.argv[1]))
extra = [c for c in certs("/etc/ssl/certs/ca-certificates.crt") if c not in debian]
open(sys.argv[2], "w").write("".join(c + "\n" for c in extra))
print(f"host CA certificates beyond Debian's: {len(extra)}", file=sys.stderr)
EOF
}

dbuild() {  # dbuild TAG DOCKERFILE CONTEXT [ARGS...]
    local tag="$1" file="$2" ctx="$3"
    shift 3
    nice -n 10 docker build --network host -f "$file" -t "$tag" "$@" "$ctx" > "$STATE/build-${tag//[\/:]/_}.log" 2>&1 \
        || { tail -30 "$STATE/build-${tag//[\/:]/_}.log" >&2; return 1; }
}

build_python() {
    local ctx="$STATE/base-context"
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp "$ROOT/docker/stand-ins/python.Dockerfile" "$ctx/Dockerfile"
    host_ca "$ctx/host-ca.crt"
    dbuild "$PYTHON_IMAGE" "$ctx/Dockerfile" "$ctx" --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE"
}

build_standins() {
    local s
    for s in postgres mongo s3; do
        dbuild "pyroblur-local/$s:stand-in" "$ROOT/docker/stand-ins/$s.Dockerfile" "$ROOT/docker/stand-ins" || return 1
    done
}

build_project() {
    local target
    for target in cpu gpu; do
        dbuild "pyroblur-$target:$TAG" "$ROOT/docker/Dockerfile" "$ROOT" --target "$target" \
            --build-arg "BASE_IMAGE=$PYTHON_IMAGE" || return 1
    done
}

sizes() {
    say "image sizes (docker image inspect; layers shared between images are counted in each):"
    local img
    for img in "$DEBIAN_IMAGE" "$PYTHON_IMAGE" pyroblur-local/postgres:stand-in pyroblur-local/mongo:stand-in \
        pyroblur-local/s3:stand-in "pyroblur-cpu:$TAG" "pyroblur-gpu:$TAG"; do
        docker image inspect -f '{{.Size}}' "$img" 2>/dev/null \
            | awk -v i="$img" '{printf "  %-42s %7.0f MB\n", i, $1 / 1e6}' | tee -a "$LOG" >&2
    done
}

cmd_build() {
    preflight
    step "base image $DEBIAN_IMAGE (debootstrap)" build_debian
    step "base image $PYTHON_IMAGE" build_python
    step "stand-ins postgres, mongo, s3" build_standins
    step "project images pyroblur-cpu, pyroblur-gpu:$TAG" build_project
    sizes
}

# ---------------------------------------------------------------- compose
ENV_FILE="$STATE/env"
RENDERED="$STATE/compose.yaml"

make_env() {
    [ -s "$ENV_FILE" ] && return
    local key
    key="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
    umask 077
    printf '%s\n' "$key" > "$STATE/api-key"
    sed -e "s#^POSTGRES_PASSWORD=.*#POSTGRES_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')#" \
        -e "s#^PREFECT_AUTH_STRING=.*#PREFECT_AUTH_STRING=pyroblur:$(python3 -c 'import secrets; print(secrets.token_hex(16))')#" \
        -e "s#^MLFLOW_DB_PASSWORD=.*#MLFLOW_DB_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')#" \
        -e "s#^MINIO_ROOT_PASSWORD=.*#MINIO_ROOT_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')#" \
        -e "s#^PYROBLUR_SERVE_API_KEY_HASHES=.*#PYROBLUR_SERVE_API_KEY_HASHES=$(printf %s "$key" | sha256sum | cut -d' ' -f1)#" \
        -e "s#^PYROBLUR_IMAGE_TAG=.*#PYROBLUR_IMAGE_TAG=$TAG#" \
        -e "s#^PREFECT_PORT=.*#PREFECT_PORT=$((PORT_BASE + 200))#" \
        -e "s#^PREFECT_UI_API_URL=.*#PREFECT_UI_API_URL=http://localhost:$((PORT_BASE + 200))/api#" \
        -e "s#^FIFTYONE_PORT=.*#FIFTYONE_PORT=$((PORT_BASE + 1151))#" \
        -e "s#^MLFLOW_PORT=.*#MLFLOW_PORT=$((PORT_BASE + 1000))#" \
        -e "s#^SERVE_PORT=.*#SERVE_PORT=$((PORT_BASE + 4000))#" \
        -e "s#^MINIO_PORT=.*#MINIO_PORT=$((PORT_BASE + 5000))#" \
        -e "s#^MINIO_CONSOLE_PORT=.*#MINIO_CONSOLE_PORT=$((PORT_BASE + 5001))#" \
        -e "s#^BIND_ADDRESS=.*#BIND_ADDRESS=127.0.0.1#" \
        "$ROOT/docker/.env.example" > "$ENV_FILE"
    say "wrote $ENV_FILE (generated secrets) and $STATE/api-key"
}

envval() { sed -n "s/^$1=//p" "$ENV_FILE" | tail -1; }

render() {
    make_env
    umask 077
    docker-compose -p "$PROJECT" --env-file "$ENV_FILE" -f "$ROOT/docker/compose.yaml" \
        -f "$ROOT/docker/compose.stack.yaml" config > "$RENDERED.tmp"
    local gpu=0
    command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU' && gpu=1
    python3 - "$RENDERED.tmp" "$gpu" <<'EOF'
import sys, yaml
path, gpu = sys.argv[1], sys.argv[2] == "1"
doc = yaml.safe_load(open(path))
if not gpu:  # no GPU here: gpu-worker's runs use the CPU, as the process worker's do
    doc["services"]["gpu-worker"].pop("deploy", None)
    doc["services"]["gpu-worker"]["environment"]["CUDA_VISIBLE_DEVICES"] = ""
yaml.safe_dump(doc, open(path, "w"), sort_keys=False)
EOF
    mv "$RENDERED.tmp" "$RENDERED"
}

dc() { docker-compose -p "$PROJECT" -f "$RENDERED" "$@"; }

# Every service of the file has a container and is healthy (minio-init: exited 0) within
# STACK_WAIT_S, else the pending ones' logs.
wait_healthy() {
    local deadline=$(($(date +%s) + WAIT_S)) pending id name status svc
    while :; do
        pending=""
        for svc in $(dc config --services); do
            id=$(dc ps -q "$svc" 2>/dev/null)
            if [ -z "$id" ]; then
                pending="$pending $svc(no-container)"
                continue
            fi
            status=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}} {{.State.Status}} {{.State.ExitCode}}' "$id")
            case "$svc:$status" in
                minio-init:*" exited 0") ;;
                *:"healthy "*) ;;
                *) pending="$pending $svc($status)" ;;
            esac
        done
        [ -z "$pending" ] && return 0
        if [ "$(date +%s)" -gt "$deadline" ]; then
            say "not healthy within $WAIT_S s:$pending"
            for name in $pending; do dc logs --tail 40 "${name%%(*}" >&2 || true; done
            return 1
        fi
        sleep 3
    done
}

# compose up; `depends_on: service_healthy` makes it give up on a dependency that is not
# healthy yet (a loaded host): start again, bounded, until every service has its container
compose_up() {
    local deadline=$(($(date +%s) + WAIT_S))
    while :; do
        dc up -d --no-build "$@" && return 0
        [ "$(date +%s)" -gt "$deadline" ] && return 1
        say "compose up stopped at a dependency not healthy yet; again in 10 s"
        sleep 10
    done
}

cmd_up() {
    preflight
    render
    step "compose up (project $PROJECT)" compose_up
    step "every health check passes (bound $WAIT_S s)" wait_healthy
    dc ps | tee -a "$LOG" >&2
    say "Prefect UI http://127.0.0.1:$(envval PREFECT_PORT) (user:password = PREFECT_AUTH_STRING in $ENV_FILE), FiftyOne http://127.0.0.1:$(envval FIFTYONE_PORT), MLflow http://127.0.0.1:$(envval MLFLOW_PORT), API http://127.0.0.1:$(envval SERVE_PORT) (X-API-Key: $STATE/api-key)"
}

cmd_down() {
    [ -f "$RENDERED" ] || render
    step "compose down (volumes kept)" dc down --remove-orphans
}

cmd_clean() {
    [ -f "$RENDERED" ] || render
    step "compose down -v (volumes removed)" dc down -v --remove-orphans
}

# ---------------------------------------------------------------- smoke
# in CONTAINER: the smoke driver (docker/stack_smoke.py) inside the cpu worker's container
drive() { dc exec -T cpu-worker python /app/docker/stack_smoke.py "$@"; }

check_listeners() {
    ss -ltnp > "$STATE/ss-ltnp.txt"
    say "ss -ltnp (the stack's listeners are docker-proxy; full list in $STATE/ss-ltnp.txt):"
    grep docker-proxy "$STATE/ss-ltnp.txt" | tee -a "$LOG" >&2 || die "no docker-proxy listener: nothing published?"
    if grep docker-proxy "$STATE/ss-ltnp.txt" | awk '{print $4}' | grep -v '^127\.0\.0\.1:'; then
        die "a published port listens on an address other than 127.0.0.1"
    fi
}

check_auth() {
    local port code auth url
    port=$(envval PREFECT_PORT)
    auth=$(envval PREFECT_AUTH_STRING)
    for url in /api/flow_runs/filter /api/deployments/filter; do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d '{}' \
            "http://127.0.0.1:$port$url")
        say "curl without credentials POST $url -> $code"
        [ "$code" = 401 ] || die "the Prefect API answered $code without credentials (expected 401)"
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d '{}' \
            -u "pyroblur:wrong" "http://127.0.0.1:$port$url")
        say "curl with a wrong password POST $url -> $code"
        [ "$code" = 401 ] || die "the Prefect API answered $code to a wrong password (expected 401)"
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d '{}' \
            -u "$auth" "http://127.0.0.1:$port$url")
        say "curl with the auth string POST $url -> $code"
        [ "$code" = 200 ] || die "the Prefect API answered $code with credentials"
    done
}

kill_gpu_worker() {
    local id
    id=$(dc ps -q gpu-worker)
    say "docker kill gpu-worker ($id) during training"
    docker kill "$id" >/dev/null
    # restart policy unless-stopped: a killed container stays down until started again
    say "gpu-worker state after the kill: $(docker inspect -f '{{.State.Status}} exit {{.State.ExitCode}}' "$id")"
}

restart_gpu_worker() {
    compose_up gpu-worker
    wait_healthy
}

anonymize_file() {
    local port key out="$STATE/anonymized.jpg" code
    port=$(envval SERVE_PORT)
    key=$(cat "$STATE/api-key")
    drive sample-image > "$STATE/sample.jpg"
    curl -s -H "X-API-Key: $key" "http://127.0.0.1:$port/v1/model" | tee "$STATE/api-model.json" >&2
    echo >&2
    code=$(curl -s -o "$out" -D "$STATE/anonymized.headers" -w '%{http_code}' -H "X-API-Key: $key" \
        -F "file=@$STATE/sample.jpg;type=image/jpeg" "http://127.0.0.1:$port/v1/images")
    say "POST /v1/images -> $code, $(stat -c %s "$out") bytes, $(grep -i '^x-pyroblur' "$STATE/anonymized.headers" | tr -d '\r' | tr '\n' ' ')"
    [ "$code" = 200 ] || die "the API did not anonymize the file: $(head -c 400 "$out")"
    code=$(curl -s -o /dev/null -w '%{http_code}' -F "file=@$STATE/sample.jpg;type=image/jpeg" "http://127.0.0.1:$port/v1/images")
    say "POST /v1/images without an API key -> $code"
    [ "$code" = 401 ] || [ "$code" = 403 ] || die "the API answered $code without a key"
}

cmd_smoke() {
    : > "$LOG"
    say "stack smoke on $(hostname), $(nproc) cores, $(docker version -f '{{.Server.Version}}') dockerd, $(docker-compose version --short) compose"
    cmd_build
    render
    step "fresh volumes (compose down -v)" dc down -v --remove-orphans
    cmd_up
    check_listeners
    check_auth
    step "deploy prefect.yaml from the cpu worker (prefect deploy --all + deployments/setup.py)" drive deploy
    step "start the demo (configs/demo.yaml, train stage on the gpu pool)" drive start ${STACK_DEMO_SET:-}
    step "training runs on the gpu worker, first checkpoint written" drive wait-checkpoint
    step "kill the gpu worker" kill_gpu_worker
    step "child run Crashed, parent Failed (GpuStageError), gpu pool slot free" drive wait-crashed
    step "gpu worker back (compose up -d gpu-worker)" restart_gpu_worker
    step "Retry: the demo completes, training resumed from the checkpoint, champion promoted" drive retry
    step "anonymize a file through the API (anonymize-api, the champion)" anonymize_file
    step "record: champion and dataset before down" drive check
    cmd_down
    cmd_up
    step "after down/up: the champion and the FiftyOne dataset are still there" drive check --same-as-before
    cmd_down
    sizes
    say "smoke passed in $(($(date +%s) - T0)) s; log $LOG"
}

case "${1:-}" in
    build) cmd_build ;;
    up) cmd_up ;;
    down) cmd_down ;;
    clean) cmd_clean ;;
    smoke) cmd_smoke ;;
    ps) render && dc ps ;;
    dc) shift; render && dc "$@" ;;   # any docker-compose command on the harness's project
    logs) shift; render && dc logs --tail 100 "$@" ;;
    *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
