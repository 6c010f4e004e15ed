#!/usr/bin/env bash
# Download, here (where PyPI can be reached), the wheels that benchmarks/gpu_suite.sh installs on
# a GPU host that has no network: the "device" machine of this workplace (Python 3.12, torch 2.11
# + torchvision 0.26 CUDA, opencv-python-headless, numpy, pandas, pyyaml, requests, pytest,
# scikit-image, onnx, onnxruntime... already installed; see docs/benchmarks.md "GPU").
#
#   bash benchmarks/fetch_gpu_wheels.sh            # core + prefect  -> .whl/
#   bash benchmarks/fetch_gpu_wheels.sh --core     # core only (no orchestrated run (a))
#   bash benchmarks/fetch_gpu_wheels.sh --polars   # also the real polars (+54 MB; else a shim is used)
#   bash benchmarks/fetch_gpu_wheels.sh --ffmpeg   # imageio-ffmpeg with its ffmpeg binary (+68 MB)
#   bash benchmarks/fetch_gpu_wheels.sh --av       # also PyAV (video I/O, 36 MB) into .whl-av/: carry it
#                                                  # in a second `run` call (64 MiB per call)
#   WHEEL_DIR=/some/dir PYTHON=python3 bash benchmarks/fetch_gpu_wheels.sh
#
# The pins are the versions this project's .venv runs (pyproject.toml), minus what the GPU image
# already holds (torch, torchvision, numpy, opencv-python-headless, matplotlib, scipy, psutil,
# pillow, requests, httpx, anyio, rich, typer, click, jinja2, pyyaml, packaging, ...).
# Left out on purpose: torch/torchvision/nvidia-* (the host's CUDA build is kept), opencv-python
# (the host's opencv-python-headless provides the same cv2; two cv2 owners break each other).
# `--no-deps`: every needed dependency is named below; the closure was computed from the .venv's
# metadata (extras such as httpx[http2] followed) and checked against the image's package list.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${WHEEL_DIR:-$ROOT/.whl}"
PY="${PYTHON:-python3}"
WITH_PREFECT=1
WITH_FFMPEG=0
WITH_POLARS=0
WITH_AV=0
for arg in "$@"; do
    case "$arg" in
        --core) WITH_PREFECT=0 ;;
        --ffmpeg) WITH_FFMPEG=1 ;;
        --polars) WITH_POLARS=1 ;;
        --av) WITH_AV=1 ;;
        -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

# ultralytics and what it imports that the image lacks (ultralytics-thop: FLOPs in model.info;
# ultralytics-platform: a declared dependency, imported lazily), onnxslim (ONNX export with
# simplify=True for the parity check), pydantic (the pyroblur library's configs and manifests),
# lap (ultralytics' ByteTrack, which pyroblur's video gap filling uses, imports it).
# polars is left out by default: ultralytics reads results.csv with it when it saves a checkpoint,
# and its runtime wheel is 54 MB of the 64 MiB a device call carries; gpu_suite.sh then puts
# benchmarks/gpu_shims/polars (pandas-backed, that one call only) on PYTHONPATH. --polars carries it.
CORE=(
    ultralytics==8.4.190
    ultralytics-thop==2.2.3
    ultralytics-platform==0.1.99
    onnxslim==0.1.98
    pydantic==2.14.3
    pydantic-core==2.50.4
    annotated-types==0.8.0
    typing-inspection==0.4.5
    lap==0.5.13
)
POLARS=(polars==2.1.0 polars-runtime-32==2.1.0)

# prefect 3.8.8 and its dependencies missing from the image (fastapi pinned to 0.150.0: newer
# ones break prefect 3.8.8's API server; sqlalchemy < 2.1 for its scheduler; see pyproject.toml).
PREFECT=(
    prefect==3.8.8
    aiosqlite==0.22.1 alembic==1.20.1 amplitude-analytics==1.3.0 apprise==1.13.1
    asgi-lifespan==2.1.0 asyncpg==0.32.0 beartype==0.23.1 burner-redis==0.1.7 cachetools==7.3.2
    cffi==2.1.1 coolname==5.0.0 cronsim==2.8 cryptography==50.0.2 cyclopts==5.4.0
    dateparser==1.5.0 docker==7.2.0 docstring-parser==0.18.0 exceptiongroup==1.3.1
    fastapi==0.150.0 graphviz==0.21 greenlet==3.5.6 griffe==2.4.1 griffecli==2.4.1
    griffelib==2.4.1 h2==4.4.1 hpack==4.2.0 hyperframe==6.1.0 jinja2-humanize-extension==0.4.0
    jsonpatch==1.47 jsonpointer==3.12 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
    mako==1.4.3 oauthlib==4.0.1 opentelemetry-api==1.45.2 orjson==3.13.0 pendulum==3.3.0
    py-key-value-aio==0.5.0 pycparser==3.12 pydantic-extra-types==2.11.1
    pydantic-settings==2.16.3 pydocket==0.27.0 python-dotenv==1.2.4 python-json-logger==4.2.0
    python-slugify==9.0.0 pytz==2026.6 readchar==4.2.2 redis==8.1.0 referencing==0.37.0
    requests-oauthlib==2.0.0 rfc3339-validator==0.1.4 rich-rst==2.2.0 rpds-py==2026.9.1
    ruamel-yaml==0.19.1 ruamel-yaml-clib==0.2.15 semver==3.1.1 sniffio==1.3.1
    sqlalchemy==2.0.58 starlette==1.3.1 text-unidecode==1.3 toml==0.10.2 tzdata==2026.6
    tzlocal==5.4.5 uncalled-for==0.6.1 uvicorn==0.54.0 websockets==16.1.1
)

# imageio-ffmpeg: pyroblur's own video path (gpu_anonymize.py's "pyroblur" run) finds ffmpeg through
# it. Its manylinux wheel bundles an ffmpeg binary (68 MB): by default a pure-python wheel is built
# from the sdist instead (27 kB; it then uses an ffmpeg on the host's PATH or IMAGEIO_FFMPEG_EXE,
# and that run is reported as skipped where the host has none). --ffmpeg carries the binary.
FFMPEG=(imageio-ffmpeg==0.8.1)

PINS=("${CORE[@]}")
((WITH_PREFECT)) && PINS+=("${PREFECT[@]}")
((WITH_POLARS)) && PINS+=("${POLARS[@]}")
((WITH_FFMPEG)) && PINS+=("${FFMPEG[@]}")

# pip matches manylinux_2_N tags exactly: name every N the pinned wheels use. Pure-python
# (py3-none-any) wheels match whatever platforms are named.
PLATFORMS=()
for tag in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 \
    manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64 linux_x86_64; do
    PLATFORMS+=(--platform "$tag")
done

mkdir -p "$DEST"
download() {
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
        "${PLATFORMS[@]}" -d "$DEST" "$@"
}
if ! download "${PINS[@]}"; then
    echo "one download of all pins failed; trying one by one to name the culprits" >&2
    failed=()
    for pin in "${PINS[@]}"; do download "$pin" || failed+=("$pin"); done
    if ((${#failed[@]})); then
        echo "FAILED: ${failed[*]}" >&2
        exit 1
    fi
fi

if ((!WITH_FFMPEG)); then
    rm -f "$DEST"/imageio_ffmpeg-*.whl
    "$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-binary=:all: -w "$DEST" "${FFMPEG[@]}"
fi
ALL=("${PINS[@]}")
((WITH_FFMPEG)) || ALL+=("${FFMPEG[@]}")

# Keep exactly one version per distribution: two make the --no-deps install on the host fail.
"$PY" - "$DEST" "${ALL[@]}" <<'EOF'
import re, sys
from pathlib import Path

dest, pins = Path(sys.argv[1]), sys.argv[2:]
norm = lambda s: re.sub(r"[-_.]+", "_", s).lower()
wanted = {norm(p.split("==")[0]): p.split("==")[1] for p in pins}
for whl in sorted(dest.glob("*.whl")):
    name, version = whl.name.split("-")[:2]
    if norm(name) not in wanted or wanted[norm(name)] != version:
        print(f"removing {whl.name} (not pinned by this script)")
        whl.unlink()
missing = [p for p in pins if not any(norm(w.name.split("-")[0]) == norm(p.split("==")[0]) for w in dest.glob("*.whl"))]
if missing:
    sys.exit(f"missing wheels: {missing}")
EOF

echo "wheels in $DEST: $(ls "$DEST"/*.whl | wc -l) files, $(du -sh "$DEST" | cut -f1)"

# PyAV: pyroblur's video path (decode, encode, audio copy). Its wheel alone is 36 MB, so it has
# a folder of its own, carried in a call of its own; gpu_suite.sh installs from both.
if ((WITH_AV)); then
    AV_DEST="${AV_WHEEL_DIR:-$ROOT/.whl-av}"
    rm -rf "$AV_DEST" && mkdir -p "$AV_DEST"
    DEST="$AV_DEST" download av==18.1.0
    echo "PyAV in $AV_DEST: $(du -sh "$AV_DEST" | cut -f1)"
fi
