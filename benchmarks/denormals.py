"""What subnormal weights cost a CPU training step, and what flushing them to zero gives back.

    python benchmarks/denormals.py            # LeNet on 32x32x3, batch 200, 20 steps each way (~1 min)

A strong weight decay shrinks the weights of units that stop receiving gradient (dead ReLUs)
geometrically, until they are subnormal floats (below 1.2e-38). x86 CPUs compute with those
through a slow microcode path, so a step can take several times longer: LeNet at the paper's
printed CIFAR-10 rate (`--weight-decay-rule paper-text`) slowed from about 5 to 0.6 steps/s by
step 10,000, with a million of its embedding layer's 2.6 million weights subnormal. `train.fit`
sets them to zero every 100 steps on a CPU (`train.flush_subnormal`). This script makes that state by
hand (a share of every layer's output units with all their weights at 1e-40) and times training steps
with and without the flush, on normal weights too (the flush's own cost).
"""
from __future__ import annotations

import argparse
import time

import torch

from dnnknn import RunConfig
from dnnknn.models import build_model
from dnnknn.train import FLUSH_EVERY, flush_subnormal, make_optimizer, train_step


def steps_per_second(model, opt, x, y, n: int, flush: bool) -> float:
    """Steps per second of `train.train_step`, with or without `train.fit`'s flush every FLUSH_EVERY steps (the
    first at the first warm-up step)."""
    for i in range(n + 2):  # two warm-up steps
        if i == 2:
            t = time.perf_counter()
        train_step(model, opt, x, y)
        if flush and i % FLUSH_EVERY == 0:
            flush_subnormal(opt)
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet", choices=("lenet", "mlp640"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--fraction", type=float, default=0.5,
                    help="share of each layer's output units whose weights are made subnormal")
    a = ap.parse_args()
    cfg = RunConfig(dataset="cifar10", model=a.model, weight_decay_rule="paper-text").resolve()
    torch.manual_seed(0)
    x, y = torch.randn(cfg.batch_size, 3, 32, 32), torch.randint(0, 10, (cfg.batch_size,))
    rates = {}
    for subnormal in (False, True):
        for flush in (False, True):
            torch.manual_seed(0)
            model = build_model(a.model, (3, 32, 32), 10)
            if subnormal:
                with torch.no_grad():
                    for p in model.parameters():  # whole output units, as a dead unit's weights decay
                        if p.dim() > 1:
                            p[torch.rand(len(p)) < a.fraction] = 1e-40
            name = f"{f'{a.fraction:.0%} of units subnormal' if subnormal else 'normal weights'}, " \
                   f"{'flushed' if flush else 'no flush'}"
            rates[name] = steps_per_second(model, make_optimizer(model, cfg), x, y, a.steps, flush)
            print(f"{name:>36}: {rates[name]:6.2f} steps/s", flush=True)
    ref = next(iter(rates.values()))
    for name, r in rates.items():
        print(f"{name:>36}: {r / ref:5.2f} x normal weights without the flush")


if __name__ == "__main__":
    main()
