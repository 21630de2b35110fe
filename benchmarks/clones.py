"""A fresh clone of this repository at one commit, beside this checkout, for the A/B timings
(`suite_time.py`, `cpu_half_time.py`). Beside it, so that `../shared`, where tests and runs find the
data, is the same for every clone."""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def short(rev: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True,
                          check=True).stdout.strip()


@contextlib.contextmanager
def clone_at(rev: str, prefix: str = ".clone-"):
    """Yields the clone's path; removes it afterwards."""
    clone = Path(tempfile.mkdtemp(prefix=prefix, dir=ROOT.parent))
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", rev], check=True)
        yield clone
    finally:
        shutil.rmtree(clone, ignore_errors=True)
