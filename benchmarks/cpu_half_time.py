"""Wall time of the paper profile's CPU half at two commits, back to back, each in a fresh clone
with an empty results/ and an empty run store, and their ratio.

    python benchmarks/cpu_half_time.py --ref 37a5c9e            # the reference, then HEAD (~2.6 h on 2 cores)
    python benchmarks/cpu_half_time.py --ref 37a5c9e -- --n-runs 1 --models mlp640 --sections main   # a subset

Both commits are driven by this checkout's `benchmarks/paper_cpu.py` (options after `--` go to it), so
each is asked for the same list of runs (datasets x models x seeds, the GD run) and trains and searches
them with its own settings. Each run's line is printed as it finishes. Run it on an otherwise idle
machine; a clone left behind by a killed run is a `.cpu-half-*` folder beside the checkout.

Measured on a 2-core Xeon (December 2026), each kind of run as a back-to-back pair (MLP-640 and LeNet
with `--n-runs 1 --models M --sections main`, the GD run with `--sections gd`), the whole half summed
from them: 98.7 min at 37a5c9e, 57.3 min at 5148017 (58%); 43 of the 57 minutes are exact L1 searches.
On a 2-core AMD EPYC (Zen 4, December 2026), the whole half, `--ref 27f331d` against 44406e8, idle:
1,493 s against 1,398 s (93.6%), of which evaluation 888 against 655 s (74%). The full-batch GD run's
training alone took 309 s at the reference and 459 s at 44406e8, whose training code is the same (306 s
in an earlier pair): a step of 60,000 images takes 1.1 s with glibc's default malloc and 0.72 s with
MALLOC_MMAP_MAX_=0 (the median of 35 full-batch MLP-640 steps, each setting twice), which suggests
that its time follows how the kernel serves its large allocations (fresh pages each step).
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from clones import ROOT, clone_at, short

PAPER_CPU = Path(__file__).resolve().with_name("paper_cpu.py")


def cpu_half(rev: str, data_dir: str, args: list[str]) -> tuple[float, list[str]]:
    """(wall seconds, the RUN lines) of paper_cpu.py against the code at `rev`."""
    with clone_at(rev, prefix=".cpu-half-") as clone:
        for p in (clone / "results").iterdir():  # nothing to read: every run is trained
            if p.is_dir():
                shutil.rmtree(p)
        env = {**os.environ, "PYTHONPATH": str(clone)}
        cmd = [sys.executable, str(PAPER_CPU), "--runs-dir", str(clone / "runs"), "--data-dir", data_dir, *args]
        t = time.time()
        lines, tail = [], collections.deque(maxlen=30)  # the last lines, shown if it fails
        with subprocess.Popen(cmd, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as proc:
            for ln in proc.stdout:
                tail.append(ln)
                if ln.startswith(("RUN ", "total:")):
                    print(f"  {rev}: {ln.rstrip()}", flush=True)
                    lines.append(ln.rstrip())
        wall = time.time() - t
        if proc.returncode != 0:
            raise SystemExit("".join(tail) + f"paper_cpu.py failed at {rev} (exit {proc.returncode})")
    return wall, lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="the reference commit")
    ap.add_argument("--rev", default="HEAD", help="the commit compared with it (default HEAD)")
    ap.add_argument("--data-dir", default=os.environ.get("DNNKNN_DATA") or str(ROOT.parent / "shared" / "data"),
                    help="where torchvision's MNIST is (default $DNNKNN_DATA, else ../shared/data)")
    ap.add_argument("paper_cpu_args", nargs="*", help="passed to paper_cpu.py (default: the whole CPU half)")
    a = ap.parse_args()
    revs = [short(r) for r in (a.ref, a.rev)]
    walls = {}
    for rev in revs:
        walls[rev], lines = cpu_half(rev, a.data_dir, a.paper_cpu_args)
    runs = len([ln for ln in lines if ln.startswith("RUN ")])
    print(f"| {revs[0]} (s) | {revs[1]} (s) | ratio | runs |")
    print("|---|---|---|---|")
    print(f"| {walls[revs[0]]:.0f} | {walls[revs[1]]:.0f} | {walls[revs[1]] / walls[revs[0]]:.1%} | {runs} |")


if __name__ == "__main__":
    main()
