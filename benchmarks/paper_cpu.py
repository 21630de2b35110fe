"""Wall time of the paper profile's CPU half: MNIST x {MLP-640, LeNet} x 3 seeds and appendix D's
full-batch GD run, trained one after another into an empty run store.

    python benchmarks/paper_cpu.py --runs-dir /tmp/cpu-half --data-dir ../shared/data

Runs already in the store or in results/ are not trained again: to time the whole half, give an
empty --runs-dir and run it from a checkout whose results/ lacks these runs (a clone with
`rm -r results/*`). Prints each run's seconds and the total; the finished runs can then be
copied into results/ with `python -m dnnknn export KEY --runs-dir ...`.
"""
from __future__ import annotations

import argparse
import time

from dnnknn.grid import grid_configs
from dnnknn.profiles import Params


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", required=True, help="run store (empty, to time every run)")
    ap.add_argument("--data-dir", help="where torchvision's MNIST is (default $DNNKNN_DATA)")
    ap.add_argument("--n-runs", type=int, default=3, help="seeds per model")
    ap.add_argument("--sections", nargs="+", default=["main", "gd"], choices=("main", "gd"),
                    help="main: MNIST x {MLP-640, LeNet} x seeds; gd: appendix D's full-batch run")
    a = ap.parse_args()
    P = Params.from_notebook(profile="paper", datasets=("mnist",), models=("mlp640", "lenet"), n_runs=a.n_runs,
                             device="cpu", runs_dir=a.runs_dir, data_dir=a.data_dir, train_missing=True)
    cfgs = grid_configs(P, main="main" in a.sections, random=False, gd="gd" in a.sections)
    t = time.time()
    for c in cfgs:
        t1 = time.time()
        run = P.store().get(c, data_dir=P.data_dir, progress="log")
        print(f"RUN {c.label()}: {time.time() - t1:.0f} s ({run.key})", flush=True)
    print(f"CPU half: {len(cfgs)} runs in {time.time() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
