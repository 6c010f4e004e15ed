#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md, as JSON, in one command (docs/benchmarks.md "GPU").
#
#   bash benchmarks/gpu_suite.sh                 # on a CUDA host: results in $OUT or gpu-results/
#   bash benchmarks/gpu_suite.sh --cpu           # dry run on the CPU at toy sizes (proves the wiring)
#   bash benchmarks/gpu_suite.sh --only train,anonymize --out /tmp/results
#
# Steps (each one's JSON is written as soon as it ends, so a run cut short keeps what it did):
#   install    wheels from .whl/ (benchmarks/fetch_gpu_wheels.sh) for what the host lacks, into
#              a --target folder put first on PYTHONPATH; the polars shim if polars is missing
#   env        environment.json: GPU model, driver, torch/CUDA/cuDNN, library versions, AMP check
#   tests      gpu-tests.json: `pytest -m gpu tests/test_gpu.py` (AMP training, resume, FP16
#              parity, benchmark stage, anonymize on CUDA)
#   train      train.json: YOLO11l@640 throughput (a) Prefect task (b) yolo train (c) step only
#   anonymize  anonymize.json: frames/s at 1280x720 and 1920x1080, per-stage profile
#   benchmark  benchmark.json: benchmark stage, ms/image at batch 1, images/s at batch 32 FP16,
#              ONNX parity, FP16 vs FP32 parity
#   summary.json gathers them with each step's exit status and seconds; suite.log has the output.
#
# Environment: OUT / GPU_SUITE_OUT (output folder), PYTHON (interpreter; default .venv/bin/python
# if present, else python3), GPU_SUITE_SITE (where wheels are installed, default
# /tmp/pyroblur-gpu-site), GPU_SUITE_CACHE (where the trained checkpoint waits for the anonymize
# and benchmark steps, also of a later call), GPU_SUITE_POLARS_SHIM=1 (use the shim even where polars exists),
# TRAIN_IMAGES / TRAIN_EPOCHS / TRAIN_BATCH / ANON_FRAMES (sizes of the GPU run).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
OUT_DIR="${GPU_SUITE_OUT:-${OUT:-$ROOT/gpu-results}}"
MODE=gpu
ONLY="install,env,tests,train,anonymize,benchmark"
while (($#)); do
    case "$1" in
        --cpu | --dry-run) MODE=cpu ;;
        --out) OUT_DIR="$2"; shift ;;
        --only) ONLY="install,env,$2"; shift ;;
        -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pyroblur-gpu-suite.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
LOG="$OUT_DIR/suite.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
SITE="${GPU_SUITE_SITE:-/tmp/pyroblur-gpu-site}"

export YOLO_OFFLINE=1 PYTHONUNBUFFERED=1 DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
export FIFTYONE_DO_NOT_TRACK=true YOLO_CONFIG_DIR="$WORK/yolo-config" MPLBACKEND=Agg
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

STATUS="$WORK/status.tsv"
: >"$STATUS"
want() { [[ ",$ONLY," == *",$1,"* ]]; }
# run_step NAME TIMEOUT_S CMD...: time a step, record its exit status, never stop the suite.
run_step() {
    local name="$1" limit="$2"
    shift 2
    echo "=== [$(date -u +%H:%M:%S)] $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --signal=TERM --kill-after=15 "$limit" "$@"
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >>"$STATUS"
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    return 0
}

echo "PyroBlur GPU suite: mode=$MODE python=$PY out=$OUT_DIR started $(date -u +%FT%TZ)"

# --- install: only the wheels whose distribution the host lacks --------------------------------
if want install; then
    start=$SECONDS
    shopt -s nullglob
    wheels=("$ROOT"/.whl/*.whl "$ROOT"/.whl-av/*.whl)  # .whl-av/: PyAV, carried in a call of its own
    if ((${#wheels[@]})); then
        # what the host, or an earlier run's $SITE (a warm machine), already has is skipped
        mapfile -t missing < <(PYTHONPATH="$SITE:$PYTHONPATH" "$PY" - "${wheels[@]}" <<'EOF'
import importlib.metadata as md, re, sys
for whl in sys.argv[1:]:
    name = whl.rsplit("/", 1)[-1].split("-")[0]
    try:
        md.distribution(re.sub(r"[-_.]+", "-", name))
    except md.PackageNotFoundError:
        print(whl)
EOF
        )
        if ((${#missing[@]})); then
            echo "installing ${#missing[@]} of ${#wheels[@]} carried wheels into $SITE"
            "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
                --no-cache-dir --upgrade --target "$SITE" "${missing[@]}" || echo "pip install failed" >&2
        else
            echo "every carried wheel is already installed"
        fi
        export PYTHONPATH="$SITE:$PYTHONPATH"
    else
        echo "no wheels in .whl/ (benchmarks/fetch_gpu_wheels.sh fetches them where PyPI is reachable)"
    fi
    if [[ "${GPU_SUITE_POLARS_SHIM:-0}" == 1 ]] || ! "$PY" -c "import polars" 2>/dev/null; then
        echo "polars missing (or GPU_SUITE_POLARS_SHIM=1): using benchmarks/gpu_shims/polars"
        export PYTHONPATH="$ROOT/benchmarks/gpu_shims:$PYTHONPATH"
    fi
    if ! "$PY" -c "import ultralytics, pydantic, torch" 2>/dev/null; then
        echo "ultralytics/pydantic/torch not importable: run benchmarks/fetch_gpu_wheels.sh first" >&2
    fi
    printf 'install\t0\t%s\n' "$((SECONDS - start))" >>"$STATUS"
fi

if [[ "$MODE" == gpu ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "WARNING: torch sees no CUDA device: the GPU tests will skip and the figures are CPU ones" >&2
fi

# --- env -------------------------------------------------------------------------------------------
if want env; then
    run_step env 120 "$PY" - "$OUT_DIR/environment.json" <<'EOF'
import json, subprocess, sys
sys.path.insert(0, "benchmarks")
from gpu_common import amp_check_offline, environment

info = environment()
info["amp_check"] = amp_check_offline()
try:
    info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
except OSError:
    info["git_commit"] = None
open(sys.argv[1], "w").write(json.dumps(info, indent=2, default=str) + "\n")
print(json.dumps(info, indent=2, default=str))
EOF
fi

# --- sizes ------------------------------------------------------------------------------------------
if [[ "$MODE" == cpu ]]; then
    TRAIN_ARGS=(--device cpu --model yolo11n.yaml --imgsz 64 --batch 8 --epochs 2 --images 16
        --steps 2 --warmup-steps 1 --workers 0)
    ANON_ARGS=(--device cpu --resolutions 320x180 --frames 8 --batch 4 --imgsz 64 --model yolo11n.yaml)
    BENCH_ARGS=(--device cpu --imgsz 64 --images 8 --speed-images 4 --model yolo11n.yaml)
    LIMIT_TRAIN=240 LIMIT_ANON=120 LIMIT_BENCH=120
else
    TRAIN_ARGS=(--device auto --model yolo11l.yaml --imgsz 640 --batch "${TRAIN_BATCH:-32}"
        --epochs "${TRAIN_EPOCHS:-3}" --images "${TRAIN_IMAGES:-2000}" --workers auto --cache ram)
    ANON_ARGS=(--device auto --frames "${ANON_FRAMES:-600}" --batch 32 --imgsz 640 --model yolo11l.yaml)
    BENCH_ARGS=(--device auto --imgsz 640 --images 200 --speed-images 50 --model yolo11l.yaml)
    LIMIT_TRAIN=300 LIMIT_ANON=180 LIMIT_BENCH=150
fi
# kept across calls (a warm device machine, or --only anonymize,benchmark after --only train)
CACHE="${GPU_SUITE_CACHE:-${TMPDIR:-/tmp}/pyroblur-gpu-suite-cache}/$MODE"
mkdir -p "$CACHE"
WEIGHTS="$CACHE/trained.pt"
want train && rm -f "$WEIGHTS"

# --- tests ------------------------------------------------------------------------------------------
if want tests; then
    run_step tests 240 "$PY" -m pytest -p no:cacheprovider -q -rs -m gpu tests/test_gpu.py \
        --junitxml="$WORK/junit.xml"
    "$PY" - "$WORK/junit.xml" "$OUT_DIR/gpu-tests.json" <<'EOF'
import json, sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as exc:
    result = {"error": f"no junit report: {exc}"}
else:
    cases = []
    for case in root.iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (node.get("message") or node.text or "")[:2000]
        cases.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)), "message": message})
    result = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    result["tests"] = cases
open(sys.argv[2], "w").write(json.dumps(result, indent=2) + "\n")
print(json.dumps({k: v for k, v in result.items() if k != "tests"}))
EOF
fi

# --- figures ----------------------------------------------------------------------------------------
if want train; then
    run_step train "$LIMIT_TRAIN" "$PY" benchmarks/train_throughput.py "${TRAIN_ARGS[@]}" \
        --keep-weights "$WEIGHTS" --out "$OUT_DIR/train.json"
fi
# a checkpoint the training step produced (real boxes for NMS/blur), else random weights
WEIGHT_ARGS=()
[[ -f "$WEIGHTS" ]] && WEIGHT_ARGS=(--weights "$WEIGHTS")
if want anonymize; then
    run_step anonymize "$LIMIT_ANON" "$PY" benchmarks/gpu_anonymize.py "${ANON_ARGS[@]}" "${WEIGHT_ARGS[@]}" \
        --out "$OUT_DIR/anonymize.json"
fi
if want benchmark; then
    run_step benchmark "$LIMIT_BENCH" "$PY" benchmarks/gpu_benchmark.py "${BENCH_ARGS[@]}" "${WEIGHT_ARGS[@]}" \
        --out "$OUT_DIR/benchmark.json"
fi

# --- summary ----------------------------------------------------------------------------------------
"$PY" - "$OUT_DIR" "$STATUS" "$MODE" <<'EOF'
import json, sys
from pathlib import Path

out, status, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
steps = {}
for line in status.read_text().splitlines():
    name, rc, seconds = line.split("\t")
    steps[name] = {"exit": int(rc), "seconds": int(seconds)}
summary = {"mode": mode, "steps": steps}
for name in ("environment", "gpu-tests", "train", "anonymize", "benchmark"):
    f = out / f"{name}.json"
    summary[name] = json.loads(f.read_text()) if f.exists() else None
t = summary["train"] or {}
a = summary["anonymize"] or {}
b = summary["benchmark"] or {}
env = summary["environment"] or {}
summary["headline"] = {
    "gpu": env.get("gpu"),
    "driver": (env.get("nvidia_smi") or [{}])[0].get("driver_version") if isinstance(env.get("nvidia_smi"), list) else None,
    "torch": env.get("torch"),
    "cuda": env.get("torch_cuda"),
    "train_ratios": t.get("ratios"),
    "train_steady_images_per_s": {k: (t.get(k) or {}).get("steady_images_per_s") for k in ("prefect", "yolo_cli")},
    "step_images_per_s": ((t.get("step") or {}).get("same_settings") or {}).get("images_per_s"),
    "anonymize_frames_per_s": {
        res: {k: v.get("frames_per_s") for k, v in run.items() if isinstance(v, dict)}
        for res, run in (a.get("runs") or {}).items()
    },
    "benchmark": (b.get("stage") or {}),
    "gpu_tests": {k: (summary["gpu-tests"] or {}).get(k) for k in ("passed", "failed", "skipped")},
}
ratios = t.get("ratios") or {}
fps720 = summary["headline"]["anonymize_frames_per_s"].get("1280x720") or {}
measured = [v for k, v in fps720.items() if isinstance(v, (int, float)) and k != "overlapped_gt_boxes"]


def met(value, target):
    return None if value is None else value >= target


summary["headline"]["targets_met"] = {
    "a_over_b >= 0.98": met(ratios.get("a_over_b"), 0.98),
    "a_over_c >= 0.85": met(ratios.get("a_over_c"), 0.85),
    "1280x720 >= 200 frames/s (pyroblur anonymize)": met(fps720.get("pyroblur"), 200),
    "1280x720 >= 200 frames/s (best stage pipeline, model's own boxes)": met(max(measured, default=None), 200),
}
(out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
print(json.dumps(summary["headline"], indent=2, default=str))
failed = [n for n, s in steps.items() if s["exit"] != 0]
print("failed steps: " + (", ".join(failed) if failed else "none"))
sys.exit(1 if failed else 0)
EOF
rc=$?
echo "PyroBlur GPU suite finished $(date -u +%FT%TZ): results in $OUT_DIR (exit $rc)"
exit $rc
