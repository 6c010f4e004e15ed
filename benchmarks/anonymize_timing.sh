#!/usr/bin/env bash
# Timing only, interleaved: `pyroblur anonymize` with --face-detector yolo, then union, then
# deface, on one clip, ROUNDS times; wall and CPU (user+system) seconds per command from
# /usr/bin/time, and the load average when it started (on a shared machine, compare rows of
# one round). No scoring: benchmarks/anonymize.py scores the outputs.
#
#   benchmarks/anonymize_timing.sh CLIP MODEL [ROUNDS=2] [OUT=a temporary folder]
#
# Run from the repository root with the virtualenv's bin/ in .venv (or set BIN).
set -euo pipefail
clip=$1 model=$2 rounds=${3:-2} out=${4:-$(mktemp -d)}
bin=${BIN:-.venv/bin}
mkdir -p "$out"
export YOLO_OFFLINE=1
common=(--model "$model" --device auto --batch-size 8 --no-progress --conf-face 0.25 --conf-plate 0.25)
for round in $(seq "$rounds"); do
  for mode in yolo union deface; do
    if [ "$mode" = deface ]; then
      cmd=("$bin/deface" "$clip" -o "$out/deface.mp4" --keep-audio)
    else
      cmd=("$bin/pyroblur" anonymize "$clip" "$out/$mode.mp4" "${common[@]}" --face-detector "$mode")
    fi
    load=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -f "round $round $mode: wall %e s, cpu %U+%S s, load $load" "${cmd[@]}" >/dev/null 2>"$out/$mode.err" \
      || { tail -5 "$out/$mode.err"; exit 1; }
    tail -1 "$out/$mode.err"
  done
done
