"""The benchmarks and the prepared device check run end to end on CPU with --small."""
import os
import subprocess

import pytest

from .conftest import ROOT


@pytest.mark.slow
def test_device_check_small_on_cpu(tmp_path):
    out = tmp_path / "check"
    r = subprocess.run(["bash", "benchmarks/device_check.sh", str(out), "--small"], cwd=ROOT, capture_output=True,
                       text=True, timeout=1200, env={**os.environ, "TQDM_DISABLE": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    for needle in ("| wrn-10-1 |", "| lenet |", "| mlp640 |", "GFLOP / image",           # 1. training
                   "faiss IndexFlat L1 / dnnknn L1", "single L1",                    # 2. k-NN
                   "mlp640 on mnist5k", "lenet on mnist5k", "wrn-10-1 on mnist5k"):  # 3-4. runs
        assert needle in summary, needle
    assert len(list((out / "runs").glob("*/measures.csv"))) == 3
