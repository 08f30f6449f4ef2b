#!/usr/bin/env bash
# Install PyTorch into the given interpreter's environment without pulling CUDA wheels onto machines that have no GPU.
#   1. torch already importable            -> keep it (users choose their own build).
#   2. a local torch wheel in a find-links  -> install that version from disk (offline CPU machines, CI here).
#   3. no NVIDIA GPU                        -> the CPU build from PyTorch's CPU index.
#   4. otherwise                            -> the default build from PyPI (CUDA).
set -euo pipefail
PY=${1:-python3}
if "$PY" -c "import torch" 2>/dev/null; then
  echo "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
  exit 0
fi
links="${PIP_FIND_LINKS:-} $("$PY" -m pip config get global.find-links 2>/dev/null || true) /opt/wheels"
for dir in $links; do
  dir=${dir#file://}
  wheel=$(ls "$dir"/torch-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$wheel" ]; then
    version=$(basename "$wheel" | cut -d- -f2 | cut -d+ -f1)
    echo "installing torch==$version from $dir"
    exec "$PY" -m pip install -q "torch==$version"
  fi
done
if ! command -v nvidia-smi >/dev/null 2>&1; then
  exec "$PY" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
exec "$PY" -m pip install -q torch
