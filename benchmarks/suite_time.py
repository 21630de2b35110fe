"""Wall time of the test suite at two commits, back to back, each in a fresh clone, and their ratio.

    python benchmarks/suite_time.py --ref 37a5c9e            # the reference, then HEAD
    python benchmarks/suite_time.py --ref 37a5c9e --rev main --repeat 2
    python benchmarks/suite_time.py --ref 37a5c9e -- -x tests/test_knn.py   # pytest's own options after --

Each clone is made beside this checkout (so that `../shared`, where the tests find the data, is the
same for both) and removed after; each suite runs with this interpreter and the clone first on
PYTHONPATH, as `make test` runs it. Run it on an otherwise idle machine: the ratio is only as good
as the quiet it was measured in (on a 2-core machine, pairs taken minutes apart differed by 5%).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

from clones import clone_at, short


def suite_seconds(rev: str, pytest_args: list[str]) -> tuple[float, str]:
    """(wall seconds, pytest's summary line) of the suite at `rev`, in a fresh clone."""
    with clone_at(rev, prefix=".suite-time-") as clone:
        env = {**os.environ, "PYTHONPATH": str(clone)}
        t = time.time()
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
                           cwd=clone, env=env, capture_output=True, text=True)
        wall = time.time() - t
    summary = next((ln for ln in reversed(r.stdout.splitlines()) if re.search(r"\d+ (passed|failed)", ln)),
                   r.stdout[-300:])
    if r.returncode != 0:
        print(r.stdout[-3000:], file=sys.stderr)
    return wall, summary.strip("= ")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="the reference commit")
    ap.add_argument("--rev", default="HEAD", help="the commit compared with it (default HEAD)")
    ap.add_argument("--repeat", type=int, default=1, help="pairs to measure, one after another")
    ap.add_argument("pytest_args", nargs="*", help="passed to pytest (default: the whole suite)")
    a = ap.parse_args()
    revs = [short(r) for r in (a.ref, a.rev)]
    print(f"| pair | {revs[0]} (s) | {revs[1]} (s) | ratio | pytest at {revs[0]} | pytest at {revs[1]} |")
    print("|---|---|---|---|---|---|")
    for i in range(a.repeat):  # the order alternates, so that neither is always the one measured second
        first, second = (suite_seconds(r, a.pytest_args) for r in (revs if i % 2 == 0 else revs[::-1]))
        (w0, s0), (w1, s1) = (first, second) if i % 2 == 0 else (second, first)
        print(f"| {i + 1} | {w0:.0f} | {w1:.0f} | {w1 / w0:.1%} | {s0} | {s1} |", flush=True)


if __name__ == "__main__":
    main()
