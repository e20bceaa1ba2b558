#!/usr/bin/env bash
# Create .venv and install hpo into it: torch first, so that a machine without a GPU gets
# the CPU build instead of several GB of CUDA packages, then hpo with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }

if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  :  # already there
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  pip install -q torch                                   # CUDA build from PyPI
elif pip install -q "torch==2.13.0+cpu" 2>/dev/null; then
  :  # a CPU wheel this machine carries (pip's find-links); PyPI itself has no +cpu builds
else
  pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi

pip install -q -e ".[test]"
echo "installed hpo into $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
