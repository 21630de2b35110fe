"""Step (3) and (4) of the device check: MLP-640, LeNet and Wide-ResNet-28-10 on real MNIST at the
paper's settings (1,000 steps, k-NN evaluation every 100 steps), into OUT/runs, with a summary table.

    python benchmarks/device_runs.py --out OUT [--small] [--data-dir ../shared/data] [--export]

--small (CPU): the quick profile's models on mnist5k for 10 steps. --export copies the runs into the
repository's results/ so that the book can show them.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from dnnknn.experiments import Params
from dnnknn.runs import export


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--data-dir", default=os.environ.get("DNNKNN_DATA", "../shared/data"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--export", action="store_true", help="copy the finished runs into results/")
    a = ap.parse_args(argv)
    if a.small:
        P = Params.from_notebook(profile="quick", steps=10, eval_every=5, device=a.device,
                                 runs_dir=str(Path(a.out) / "runs"), train_missing=True)
        dataset = "mnist5k"
    else:
        P = Params.from_notebook(profile="paper", device=a.device, data_dir=a.data_dir,
                                 runs_dir=str(Path(a.out) / "runs"), train_missing=True)
        dataset = "mnist"
    print(f"| run | device | wall (s) | test DNN | test k-NN (k=30, L1) | MC | ME | P_SAME | train DNN | train k-NN |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in ("mlp640", "lenet", "wrn"):
        cfg = P.main_config(dataset, model)
        t = time.time()
        run = P.store().get(cfg, data_dir=P.data_dir, progress=False)
        te, tr = run.final(split="test"), run.final(split="train")
        print(f"| {cfg.label()} ({run.key}) | {run.meta['device_name']} | {time.time() - t:.0f} | "
              f"{100 * te.dnn_acc:.2f} | {100 * te.knn_acc:.2f} | {te.MC:.4f} | {te.ME:.4f} | {te.P_SAME:.4f} | "
              f"{100 * tr.dnn_acc:.2f} | {100 * tr.knn_acc:.2f} |", flush=True)
        if a.export:
            export(P.store(), run.key)


if __name__ == "__main__":
    main()
