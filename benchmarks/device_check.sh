#!/usr/bin/env bash
# The one prepared device check (under 6 minutes on one H100/H200):
#   1. training benchmark of the three models, 2. k-NN benchmark (on CUDA when present),
#   3-4. MLP-640, LeNet and Wide-ResNet-28-10 on real MNIST at the paper's settings with the k-NN evaluation.
# usage: benchmarks/device_check.sh OUT_DIR [--small]      (--small: seconds on a CPU, for CI)
# Needs MNIST in torchvision's layout under $DNNKNN_DATA (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: benchmarks/device_check.sh OUT_DIR [--small]}
SMALL=${2:-}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
export DNNKNN_DATA=${DNNKNN_DATA:-../shared/data}
{
  echo "# dnnknn device check $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo no-git)"
  "$PY" -c "import torch; print('torch', torch.__version__, '| cuda:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"
  echo; echo "## 1. training throughput"
  "$PY" benchmarks/train.py $SMALL
  echo; echo "## 2. exact k-NN"
  "$PY" benchmarks/knn.py --skip-sklearn $SMALL
  echo; echo "## 3-4. MNIST runs at the paper's settings"
  "$PY" benchmarks/device_runs.py --out "$OUT" $SMALL ${EXPORT:+--export}
} 2>&1 | tee "$OUT/summary.md"
