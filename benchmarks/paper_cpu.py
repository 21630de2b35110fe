"""Wall time of the paper profile's CPU half: MNIST x {MLP-640, LeNet} x 3 seeds and appendix D's
full-batch GD run, trained one after another into an empty run store.

    python benchmarks/paper_cpu.py --runs-dir /tmp/cpu-half --data-dir ../shared/data

`--datasets cifar10-jpeg --models mlp640 --sections main` trains (or times) appendix A's CIFAR runs on
the JPEG copy of CIFAR-10 instead: 50,000 steps each.

Runs already in the store or in results/ are not trained again: to time the whole half, give an
empty --runs-dir and run it from a checkout whose results/ lacks these runs (a clone with
`rm -r results/*`; `benchmarks/cpu_half_time.py --ref REV` does that at two commits). Prints each
run's seconds and the total; the finished runs can then be copied into results/ with
`python -m dnnknn export KEY --runs-dir ...`.
"""
from __future__ import annotations

import argparse
import time

from dnnknn.profiles import Params

try:
    from dnnknn.experiments import grid_configs
except ImportError:  # before 93f29fc it lived in dnnknn.grid: cpu_half_time.py runs this script at older commits
    from dnnknn.grid import grid_configs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", required=True, help="run store (empty, to time every run)")
    ap.add_argument("--data-dir", help="where torchvision's MNIST is (default $DNNKNN_DATA)")
    ap.add_argument("--n-runs", type=int, default=3, help="seeds per model")
    ap.add_argument("--datasets", nargs="+", default=["mnist"], choices=("mnist", "cifar10-jpeg"))
    ap.add_argument("--models", nargs="+", default=["mlp640", "lenet"], choices=("mlp640", "lenet"))
    ap.add_argument("--sections", nargs="+", default=["main", "gd"], choices=("main", "gd"),
                    help="main: MNIST x {MLP-640, LeNet} x seeds; gd: appendix D's full-batch run")
    a = ap.parse_args()
    P = Params.from_notebook(profile="paper", datasets=tuple(a.datasets), models=tuple(a.models), n_runs=a.n_runs,
                             device="cpu", runs_dir=a.runs_dir, data_dir=a.data_dir, train_missing=True)
    cfgs = grid_configs(P, main="main" in a.sections, random=False, gd="gd" in a.sections)
    t = time.time()
    for c in cfgs:
        t1 = time.time()
        run = P.store().get(c, data_dir=P.data_dir, progress="log")
        m = run.meta
        batch = run.config.batch_size or int(m["dataset_repr"].split("train=(")[1].split(",")[0])  # GD: all
        train_s = m["wall_time_s"] - m["eval_time_s"]
        print(f"RUN {c.label()}: {time.time() - t1:.0f} s here; recorded {m['wall_time_s']:.0f} s, of which "
              f"evaluation {m['eval_time_s']:.0f} s, training {run.config.steps * batch / max(train_s, 1e-9):,.0f} "
              f"images/s ({run.key})", flush=True)
    print(f"total: {len(cfgs)} runs in {time.time() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
