"""Whether bf16-train (training steps under bf16 autocast, every evaluation in fp32) gives the numbers
fp32 gives: short runs of one network at appendix A's settings in both precisions, over seeds, their
final measures side by side, and each measure's difference of means against the fp32 seeds' spread.

    python benchmarks/precision_pair.py --dataset cifar10-jpeg --model lenet --steps 1000 --seeds 2 \\
        --runs-dir /tmp/precision --data-dir ../shared/data

The verdict per measure: "agree" when |mean bf16 - mean fp32| <= 2 x the fp32 seeds' sample std (with
one seed per precision there is no spread, and nothing is judged). The runs are the paper profile's
main runs shortened to --steps (the learning-rate drops at 30/60/80% of them), evaluated at the start
and the end, without the layer probes. Prints the training throughput of each run too.
"""
from __future__ import annotations

import argparse
import dataclasses

from dnnknn import experiments, report
from dnnknn.profiles import Params

MEASURES = ("dnn_acc", "knn_acc", "MC", "ME", "P_SAME")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cifar10-jpeg")
    ap.add_argument("--model", default="lenet", choices=("mlp640", "lenet", "wrn"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=2, help="seeds per precision")
    ap.add_argument("--runs-dir", required=True)
    ap.add_argument("--data-dir", help="default $DNNKNN_DATA")
    a = ap.parse_args()
    P = Params.from_notebook(profile="paper", device="cpu", runs_dir=a.runs_dir, data_dir=a.data_dir)
    finals = {}
    print("| precision | seed | DNN (%) | k-NN (%) | MC | ME | P_SAME | training (img/s) | run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for precision in ("fp32", "bf16-train"):
        for seed in range(a.seeds):
            cfg = dataclasses.replace(experiments.main_config(P, a.dataset, a.model, seed), steps=a.steps,
                                      eval_steps=(0, a.steps), full_eval_steps=(a.steps,), train_eval_steps=(a.steps,),
                                      probe_layers=(), neighbour_images=0, precision=precision)
            run = P.store().get(cfg, data_dir=P.data_dir, progress="log")
            f = run.final(split="test", k=30, metric="l1")
            finals.setdefault(precision, []).append(f)
            m = run.meta
            rate = cfg.steps * run.config.batch_size / max(m["wall_time_s"] - m["eval_time_s"], 1e-9)
            print(f"| {precision} | {seed} | {100 * f.dnn_acc:.2f} | {100 * f.knn_acc:.2f} | {f.MC:.4f} | {f.ME:.4f} | "
                  f"{f.P_SAME:.4f} | {rate:,.0f} | {run.key} |", flush=True)
    print("\n| measure | fp32 (mean ± std) | bf16-train (mean ± std) | abs(difference of means) | 2 x fp32 std | verdict |")
    print("|---|---|---|---|---|---|")
    for q in MEASURES:
        a32, b16 = ([float(getattr(f, q)) for f in finals[p]] for p in ("fp32", "bf16-train"))
        m32, s32, n = report.spread(a32)
        m16 = report.spread(b16)[0]
        diff = abs(m16 - m32)
        verdict = "no spread (1 seed)" if n < 2 else "agree" if diff <= 2 * s32 else "differ"
        print(f"| {q} | {report.fmt_spread(a32, 4)} | {report.fmt_spread(b16, 4)} | {diff:.4f} | "
              f"{2 * s32:.4f} | {verdict} |")


if __name__ == "__main__":
    main()
