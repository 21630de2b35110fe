import os
import subprocess
import sys

from .conftest import ROOT

ARGS = ["grid", "--profile", "quick", "--executor", "local", "--models", "mlp640", "lenet", "--steps", "4", "--n-runs", "1",
        "--sections", "main", "--device", "cpu"]


def _grid(tmp_path):
    return subprocess.run([sys.executable, "-m", "dnnknn", *ARGS, "--runs-dir", str(tmp_path / "runs"),
                           "--log-dir", str(tmp_path / "logs")], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "TQDM_DISABLE": "1"})


def test_two_run_grid_through_submitit_local(tmp_path):
    r = _grid(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 runs in the grid, 0 already in the store, 2 to submit (local)" in r.stdout
    assert "failed" not in r.stdout
    finished = sorted(p.parent.name for p in (tmp_path / "runs").glob("*/measures.csv"))
    assert len(finished) == 2
    from dnnknn.runs import Run
    assert {Run(tmp_path / "runs" / k).config.model for k in finished} == {"mlp640", "lenet"}
    again = _grid(tmp_path)
    assert again.returncode == 0 and "2 already in the store, 0 to submit" in again.stdout
    assert "job " not in again.stdout
