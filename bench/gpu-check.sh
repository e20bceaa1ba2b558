#!/usr/bin/env bash
# The project's GPU check: one command on the lent GPU machine, every figure written to one folder,
# a summary table printed last. About 6 minutes on an H100; the machine's start is extra.
#
# Prepare on the CPU machine, from the project's root (both folders are git-ignored, so the
# device call must name them in `carry`):
#   ../shared/gpu/wheels.sh optuna-dashboard bottle packaging   # .whl/: what the GPU machine lacks
#   mkdir -p .data/mnist && for f in ~/.cache/hpo/mnist/*; do gzip -c "$f" > .data/mnist/$(basename "$f").gz; done
#   cp gpu-check-out/gpu-check.db .data/ 2>/dev/null      # optional: continue an earlier check's study
# Run there (the device tool sets $OUT; elsewhere it is ./gpu-check-out):
#   bash bench/gpu-check.sh
# Try the plumbing here, in a minute or two, on the CPU:  GPU_CHECK_QUICK=1 PYTHON=.venv/bin/python bash bench/gpu-check.sh
#
# Steps, each with its own time limit, its log in $OUT/NAME.log and its exit status in the summary:
#   gpu-tests    pytest tests/test_gpu.py (the CUDA path)
#   train-speed  P1 and P2: seconds per epoch of the budget-8k base net, this trainer against the
#                seeds' loop, same process and device (bench/train_speed.py)
#   packing      P4: trials per hour, K trials of the base net's shape trained at once as one stacked
#                model (hpo run --pack K) against one at a time (bench/packing.py)
#   budget-8k    P3: `hpo run --study budget-8k --trials 100` under --timeout; the study database
#                is $OUT/gpu-check.db, so a later check continues it
#   export       the best five configs as YAML
#   verify       issue 11's number: the best config re-trained with 5 seeds at once (hpo verify
#                --workers 5 on the one GPU), final-epoch test accuracy as mean +- std
# Not measured here: P4's other way (K worker processes on one GPU, with or without MPS) and P5 (a CPU figure).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
QUICK=${GPU_CHECK_QUICK:-}
PY=${PYTHON:-python3}   # the GPU machine's python3; here, e.g. PYTHON=.venv/bin/python

if [ -d .whl ] && ! "$PY" -c "import optuna" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu-check: installing .whl/ failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
if [ -d .data/mnist ]; then
  (cd .data/mnist && for f in *.gz; do [ -e "${f%.gz}" ] || gunzip -k "$f"; done)
  export HPO_DATA_DIR=$PWD/.data   # a root: MNIST is in .data/mnist
fi
export HPO_OFFLINE=1 PYTHONUNBUFFERED=1
[ -f .data/gpu-check.db ] && [ ! -f "$OUT/gpu-check.db" ] && cp .data/gpu-check.db "$OUT/gpu-check.db"

if [ -n "$QUICK" ]; then
  DEVICE=cpu; STUDY=quickstart; TRIALS=3; STUDY_LIMIT=60; SPEED=(--train-subset 2000 --repeats 1)
  VERIFY=(--seeds 2 --workers 2 --epochs 1); PACKING=(--k 2 --plain 1 --train-subset 1000)
else
  DEVICE=cuda; STUDY=budget-8k; TRIALS=100; STUDY_LIMIT=150; SPEED=(--repeats 3)
  VERIFY=(--seeds 5 --workers 5); PACKING=(--k 4 8 16 32 --plain 2)
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader && nvidia-smi; } \
  > "$OUT/nvidia-smi.txt" 2>&1 || echo "no GPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" > "$OUT/nvidia-smi.txt"
: > "$OUT/steps.tsv"

step() {  # step NAME SECONDS COMMAND...: run it with a limit, log it, record its status and wall time
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name: $*" >&2
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >> "$OUT/steps.tsv"
  tail -n 3 "$OUT/$name.log" >&2
}

if [ -z "$QUICK" ]; then
  step gpu-tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py
fi
step train-speed 200 "$PY" bench/train_speed.py --device "$DEVICE" --preset mnistnet2 --batch-size 128 \
  "${SPEED[@]}" --json "$OUT/train_speed.json"
step packing 100 "$PY" bench/packing.py --device "$DEVICE" "${PACKING[@]}" --json "$OUT/packing.json"
# --timeout stops starting trials; a trial that started finishes, so the step's limit leaves room
step "$STUDY" $((STUDY_LIMIT + 60)) "$PY" -m hpo run --study "$STUDY" --trials "$TRIALS" --device "$DEVICE" \
  --storage "sqlite:///$OUT/gpu-check.db" --timeout "$STUDY_LIMIT" --quiet \
  --checkpoint-dir /tmp/hpo-checkpoints --artifacts "$OUT/artifacts"
step export 60 "$PY" -m hpo export --study "$STUDY" --top 5 -o "$OUT/best.yaml" --storage "sqlite:///$OUT/gpu-check.db"
step verify 120 "$PY" -m hpo verify --config "$OUT/best.yaml" "${VERIFY[@]}" --device "$DEVICE" --json

"$PY" bench/gpu_summary.py "$OUT" "$STUDY" | tee "$OUT/summary.txt"
