"""Training throughput and model-FLOP utilisation of each model at batch 200 (the paper's).

    python benchmarks/train.py                 # Wide-ResNet-28-10, LeNet, MLP-640 on CIFAR-shaped data
    python benchmarks/train.py --small         # CPU: Wide-ResNet-10-1 and fewer steps
    OMP_NUM_THREADS=1 python benchmarks/train.py --quick-bf16   # the quick profile's steps: bf16 / fp32

One training step is `dnnknn.train.train_step`, the one `fit` takes: batch augmentation on the device,
autocast (bf16 on CUDA unless --fp32), channels-last convolutions, Nesterov SGD with the dataset's weight
decay (appendix A) on the weights only (`make_optimizer`). FLOPs per image are
counted with torch.utils.flop_counter over one forward and backward pass (not guessed); MFU =
FLOPs/image x images/s / the device's dense peak (--peak-tflops; known GPUs are filled in).
--quick-bf16 times the quick profile's training steps (MNIST-shaped, batch 200, Wide-ResNet-10-1,
LeNet, MLP-640) in fp32 and under bf16 autocast, and prints the ratio: the quick profile trains in
bf16 where the CPU computes it natively (`dnnknn.train.cpu_has_bf16`).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from dnnknn.config import RunConfig
from dnnknn.models import build_model, count_parameters
from dnnknn.train import cpu_has_bf16, make_optimizer, memory_format, resolve_device, train_step

PEAK_BF16_TFLOPS = {"H100": 790.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense


def device_peak(dev: torch.device, precision: str) -> float | None:
    if dev.type != "cuda":
        return None
    name = torch.cuda.get_device_name(dev)
    for key, tf in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tf if precision == "bf16" else tf / 2  # tf32 dense is half of bf16 on these parts
    return None


def bench(model_name, kw, dev, precision, batch, warmup, steps, shape=(3, 32, 32), flip=True):
    torch.manual_seed(0)
    model = build_model(model_name, shape, 10, **kw).to(dev)
    fmt = memory_format(model_name)  # as fit: channels-last for the convolutional models
    model = model.to(memory_format=fmt)
    cfg = RunConfig(dataset="cifar10" if shape[0] == 3 else "mnist", model=model_name, **kw).resolve()
    opt = make_optimizer(model, cfg)
    x_all = torch.randn(batch * 4, *shape, device=dev)
    y_all = torch.randint(0, 10, (batch * 4,), device=dev)
    g = torch.Generator(device=dev).manual_seed(0)

    def step(i):
        idx = slice((i % 4) * batch, (i % 4 + 1) * batch)
        return train_step(model, opt, x_all[idx], y_all[idx], gen=g, flip=flip, fmt=fmt,
                          precision="bf16-train" if precision == "bf16" else "fp32")

    with FlopCounterMode(display=False) as fc:
        step(0)
    flops_per_image = fc.get_total_flops() / batch
    for i in range(warmup):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    loss.item()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / steps
    return count_parameters(model), flops_per_image, batch / dt


def quick_bf16(dev, steps: int):
    """fp32 against bf16 autocast for the quick profile's models and data shape, interleaved."""
    print(f"# quick-profile training steps on {dev}, {torch.get_num_threads()} threads, native bf16: "
          f"{cpu_has_bf16() if dev.type == 'cpu' else 'cuda'}, torch {torch.__version__}")
    print("| model | fp32 images / s | bf16 images / s | bf16 / fp32 |\n|---|---|---|---|")
    for m, kw in (("wrn", {"depth": 10, "width": 1}), ("lenet", {}), ("mlp640", {})):
        ips = {"fp32": 0.0, "bf16": 0.0}
        for _ in range(2):  # interleaved, the best of two each: this VM's speed drifts
            for p in ips:
                ips[p] = max(ips[p], bench(m, kw, dev, p, 200, 2, steps, shape=(1, 28, 28), flip=False)[2])
        print(f"| {m} | {ips['fp32']:,.0f} | {ips['bf16']:,.0f} | {ips['bf16'] / ips['fp32']:.2f}x |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="CPU-sized: Wide-ResNet-10-1, 2 timed steps")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--steps", type=int, help="timed steps (default 20 on GPU, 2 with --small)")
    ap.add_argument("--models", nargs="+", default=["wrn", "lenet", "mlp640"])
    ap.add_argument("--peak-tflops", type=float, help="the device's dense peak for the chosen precision")
    ap.add_argument("--quick-bf16", action="store_true", help="the quick profile's steps, fp32 against bf16")
    a = ap.parse_args(argv)
    dev = resolve_device(a.device)
    if a.quick_bf16:
        return quick_bf16(dev, a.steps or 10)
    precision = "fp32" if a.fp32 or dev.type == "cpu" else "bf16"
    steps = a.steps or (2 if a.small else 20)
    warmup = 1 if a.small else 5
    batch = 16 if a.small and dev.type == "cpu" else a.batch
    peak = a.peak_tflops or device_peak(dev, precision)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"# training throughput on {name}, {precision}, batch {batch}, CIFAR-shaped 3x32x32, torch {torch.__version__}")
    print("| model | params (M) | GFLOP / image (fwd+bwd) | images / s | s / epoch (50k) | 200 epochs (h) | MFU |")
    print("|---|---|---|---|---|---|---|")
    for m in a.models:
        kw = {"depth": 10, "width": 1} if (m == "wrn" and a.small) else ({"depth": 28, "width": 10} if m == "wrn" else {})
        label = f"wrn-{kw['depth']}-{kw['width']}" if m == "wrn" else m
        params, fpi, ips = bench(m, kw, dev, precision, batch, warmup, steps)
        epoch = 50_000 / ips
        mfu = f"{100 * fpi * ips / (peak * 1e12):.1f}%" if peak else "n/a (pass --peak-tflops)"
        print(f"| {label} | {params / 1e6:.2f} | {fpi / 1e9:.3f} | {ips:,.0f} | {epoch:.1f} | "
              f"{200 * epoch / 3600:.2f} | {mfu} |", flush=True)


if __name__ == "__main__":
    main()
