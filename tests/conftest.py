import contextlib
import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    d = tmp_path / "runs"
    monkeypatch.setenv("DNNKNN_RUNS", str(d))
    return d


needs_shared_mnist = pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(),
                                        reason="../shared/data (MNIST) is not present")
os.environ.setdefault("TQDM_DISABLE", "1")


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(argv, env=None) -> CliResult:
    """`python -m dnnknn ARGV` in this process (its output captured, `env` added to the environment):
    seconds faster than a subprocess, which only the tests of signals and of the entry point need."""
    from dnnknn import cli

    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, {k: str(v) for k, v in (env or {}).items()}), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own errors
            rc = e.code
    return CliResult(rc, out.getvalue(), err.getvalue())


def copy_tree(dest: Path, numba_cache: bool = False):
    """A checkout's files (tracked, and untracked ones git does not ignore) copied into `dest`: a
    repository of its own for commands that write into it (book/, results/). numba_cache: with the
    k-NN kernels numba compiled here (valid there: the sources keep their times), as in a checkout
    that has run once; without, the first k-NN search there compiles them (~15 s)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    if numba_cache:
        files += [str(p.relative_to(ROOT)) for ext in ("nbi", "nbc") for p in (ROOT / "dnnknn").glob(f"__pycache__/*.{ext}")]
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
