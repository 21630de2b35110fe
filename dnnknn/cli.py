"""Command line: `python -m dnnknn train ...` (see --help)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from .config import CIFAR_SCHEDULE, MNIST_SCHEDULE, RunConfig, eval_schedule
from .errors import DnnKnnError
from .names import (DATASETS, LABELS, METRICS, MODELS, OPTIMIZERS, PIXELS, PRECISIONS, PAPER_SECTIONS, PROFILES, SECTIONS,
                    WEIGHT_DECAY_RULES)


def _pct(fractions) -> str:
    return "/".join(f"{round(100 * f)}" for f in fractions) + "%%"


def _train_parser(sub):
    p = sub.add_parser("train", help="train a network with the k-NN evaluation and print its measures",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="mnist5k", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--model", default="mlp640", choices=MODELS, help="network (appendix A)")
    p.add_argument("--steps", type=int, default=1000, help="training steps")
    p.add_argument("--depth", type=int, help="Wide-ResNet depth (default 28)")
    p.add_argument("--width", type=int, help="Wide-ResNet width (default 10)")
    p.add_argument("--labels", default="true", choices=LABELS,
                   help="random: uniformly random train and test labels, fixed by --label-seed")
    p.add_argument("--label-seed", type=int, default=0, help="seed of the random labels")
    p.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS,
                   help="sgd: Nesterov SGD batch 200; gd: full-batch gradient descent (appendix D)")
    p.add_argument("--batch-size", type=int, help="default 200 (sgd), whole training set (gd)")
    p.add_argument("--lr", type=float, help="initial learning rate (default 0.1 sgd, 10 gd)")
    p.add_argument("--lr-milestones", type=int, nargs="*",
                   help="steps where the lr is multiplied by 0.2 (default: the authors' schedule, MNIST at "
                        f"{_pct(MNIST_SCHEDULE)} of the steps, other data at {_pct(CIFAR_SCHEDULE)}; gd 200 300)")
    p.add_argument("--weight-decay", type=float, help="default: the paper's per model and dataset")
    p.add_argument("--weight-decay-rule", default="authors", choices=WEIGHT_DECAY_RULES,
                   help="authors: rate^2 for LeNet/MLP-640, the rate for Wide-ResNet (the authors' code); "
                        "paper-text: the rate as stated; both on conv/fc weights only")
    p.add_argument("--no-augment", action="store_true", help="no padding/crop/flip augmentation")
    p.add_argument("--pixels", default="standardised", choices=PIXELS,
                   help="standardised per image, or raw: the 0..255 values as floats (the authors' CIFAR-10 LeNet)")
    p.add_argument("--eval-steps", type=int, nargs="*", help="steps to evaluate at (default: 0, every steps/10, the last)")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps (and at 0 and the end)")
    p.add_argument("--k", type=int, nargs="+", default=[30], help="k values of the k-NN")
    p.add_argument("--metric", nargs="+", default=["l1"], choices=METRICS, help="k-NN distances")
    p.add_argument("--pca", type=int, nargs="*", default=[], help="also k-NN after PCA to these dims")
    p.add_argument("--eval-train", action="store_true", help="also evaluate on the training set")
    p.add_argument("--train-eval-steps", type=int, nargs="*",
                   help="with --eval-train: evaluate the training set at these steps only (default all)")
    p.add_argument("--exclude-self", action="store_true",
                   help="leave each training point out of its own neighbours (the paper keeps it)")
    p.add_argument("--probe-layers", nargs="*", default=[], help="k-NN on these layers at the last evaluation")
    p.add_argument("--limit", type=int, nargs=2, metavar=("N_TRAIN", "N_TEST"),
                   help="keep only the first images of each split")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 (the paper's); bf16: autocast for training and embedding; bf16-train: "
                        "training steps only, evaluation in fp32 (the quick book's on CPUs with native bf16)")
    p.add_argument("--data-dir", help="dataset root (default $DNNKNN_DATA or ~/.cache/dnnknn/data)")
    p.add_argument("--runs-dir", help="run store (default $DNNKNN_RUNS or ./runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-wait", action="store_true",
                   help="if another process is computing this run, stop at once instead of waiting for it")
    return p


def config_from_args(a, resolve: bool = True) -> RunConfig:
    """The run the train command describes; checked before torch is imported (resolve=False keeps
    the device as given)."""
    eval_steps = tuple(a.eval_steps) if a.eval_steps else None
    if a.eval_every is not None:
        if a.eval_every <= 0:
            raise DnnKnnError(f"--eval-every must be positive, got {a.eval_every}")
        eval_steps = eval_schedule(a.steps, a.eval_every)
    cfg = RunConfig(
        dataset=a.dataset, model=a.model, steps=a.steps, labels=a.labels, label_seed=a.label_seed,
        depth=a.depth, width=a.width, optimizer=a.optimizer, batch_size=a.batch_size, lr=a.lr,
        lr_milestones=tuple(a.lr_milestones) if a.lr_milestones is not None else None,
        weight_decay=a.weight_decay, weight_decay_rule=a.weight_decay_rule, augment=False if a.no_augment else None, pixels=a.pixels,
        eval_steps=eval_steps, ks=tuple(a.k), metrics=tuple(a.metric), pca_dims=tuple(a.pca),
        eval_train=a.eval_train, train_eval_steps=tuple(a.train_eval_steps) if a.train_eval_steps is not None else None,
        exclude_self=a.exclude_self, probe_layers=tuple(a.probe_layers),
        limit=tuple(a.limit) if a.limit else None, seed=a.seed, device=a.device, precision=a.precision)
    cfg.resolve()  # every setting checked (train_eval_steps against the evaluation steps, ...)
    if not resolve:
        return cfg
    from .train import resolve_device
    return dataclasses.replace(cfg, device=resolve_device(a.device).type)


def summary(run) -> str:
    """The final evaluation as a small table: DNN and k-NN accuracy, MC, ME, P_SAME per split."""
    import pandas as pd

    last = run.last_step(layer="embedding")
    cols = ["split", "metric", "k", "pca", "dnn_acc", "knn_acc", "MC", "ME", "P_SAME"]
    with pd.option_context("display.width", 120, "display.float_format", "{:.4f}".format):
        return last[cols].to_string(index=False)


def _interrupted_text(a) -> str:
    """What an interrupted command left: a training run's checkpoint, if it had written one."""
    if a.command == "train":
        from pathlib import Path

        from .runs import RunStore
        try:
            store = RunStore(a.runs_dir)
            ckpt = store.root / ".partial" / store.key(config_from_args(a, resolve=False)) / "ckpt.pt"
        except Exception:  # noqa: BLE001 - only for the message
            ckpt = Path("/nonexistent")
        if ckpt.exists():
            return f"the last checkpoint ({ckpt}) is kept; run the same command again to resume"
        return "nothing was saved yet; run the same command again to start it"
    if a.command == "book":
        return "the pages that had not finished were left as they were"
    return "stopped"


def _train(a) -> int:
    cfg = config_from_args(a)
    from .runs import RunStore

    store = RunStore(a.runs_dir)
    run = store.find(cfg)
    cached = run is not None
    if run is None:
        run = store.train(cfg, data_dir=a.data_dir, progress=not a.no_progress, wait=not a.no_wait)
    print(f"{run.config.label()} - last evaluation at step {max(run.config.resolve().eval_steps)}"
          + (" (from the run store, no training)" if cached else ""))
    print(summary(run))
    print(f"device: {run.meta['device_name']}; wall time {run.meta['wall_time_s']:.1f} s; "
          f"code {run.meta['code_version']}")
    print(f"records: {run.path}")
    return 0


def _book(a) -> int:
    from .book import main as book_main
    return book_main(a)


def _export(a) -> int:
    from .runs import RunStore, export, export_unfinished, unfinished

    store = RunStore(a.runs_dir)
    if not a.keys and a.unfinished:
        for key, step in unfinished(store):
            print(key, f"unfinished, at step {step}", sep="  |  ")
        return 0
    if not a.keys:
        for run in store.runs(report=lambda e: print(f"damaged (not exportable): {e}")):
            print(run.key, run.config.label(), run.meta["device_name"], sep="  |  ")
        return 0
    for key in a.keys:
        if a.unfinished:
            print(f"exported the unfinished run's checkpoint to {export_unfinished(store, key, a.to)}")
        else:
            print(f"exported {export(store, key, a.to)}")
    return 0


def _grid(a) -> int:
    from .experiments import grid_configs
    from .grid import submit
    from .profiles import Params

    P = Params.from_notebook(profile=a.profile, datasets=a.datasets, models=a.models, steps=a.steps,
                             n_runs=a.n_runs, device=a.device, data_dir=a.data_dir,
                             runs_dir=a.runs_dir, train_missing=True,
                             precision=None if a.precision == "auto" else a.precision)
    cfgs = grid_configs(P, *(s in a.sections for s in SECTIONS))
    if a.dry_run:
        store = P.store()
        for c in cfgs:
            print(("done    " if store.find(c) else "missing ") + c.label())
        return 0
    submit(P, cfgs, a.executor, a.log_dir, a.partition, a.gpus_per_job, a.cpus_per_job,
           a.timeout_min, wait=not a.no_wait)
    return 0


def parser() -> argparse.ArgumentParser:
    from . import gpubox

    ap = argparse.ArgumentParser(prog="python -m dnnknn", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    _train_parser(sub).set_defaults(func=_train)
    b = sub.add_parser("book", help="execute the notebooks with papermill and build the HTML book")
    b.add_argument("--only", nargs="+", help="only these notebooks (name prefixes, e.g. 01 paper/03)")
    b.add_argument("-p", nargs="+", action="append", metavar=("NAME", "VALUE"),
                   help="a notebook parameter (JSON value), e.g. -p steps 500 -p datasets '[\"mnist5k\"]'")
    b.add_argument("--profile", choices=PROFILES, help="the profile for the notebooks run")
    b.add_argument("--no-execute", action="store_true", help="only build the HTML from book/")
    b.add_argument("--no-build", action="store_true", help="only execute the notebooks")
    b.add_argument("-v", "--verbose", action="store_true",
                   help="print papermill's and each kernel's full log (by default in _build/logs/, one file a page)")
    b.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="notebooks executed side by side (each kernel gets cores / jobs threads)")
    b.set_defaults(func=_book)
    e = sub.add_parser("export", help="copy finished runs from the run store into results/ (committed)")
    e.add_argument("keys", nargs="*", help="run keys (folder names); none = list the store's runs")
    e.add_argument("--runs-dir", help="run store (default $DNNKNN_RUNS or ./runs)")
    e.add_argument("--to", default=None, help="destination (default: the repository's results/)")
    e.add_argument("--unfinished", action="store_true",
                   help="copy an unfinished run's last checkpoint to results/unfinished/KEY/, where a store on "
                        "another machine that reads results/ takes the run up")
    e.set_defaults(func=_export)
    g = sub.add_parser("grid", help="submit every run a profile needs through submitit (Slurm or local)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g.add_argument("--profile", default="paper", choices=PROFILES)
    g.add_argument("--executor", default="slurm", choices=("slurm", "local", "serial"),
                   help="slurm: one job per run; local: local processes through submitit, all at once; "
                        "serial: one run after another in this process (a CPU's long runs)")
    g.add_argument("--partition", help="Slurm partition")
    g.add_argument("--gpus-per-job", type=int, default=1)
    g.add_argument("--cpus-per-job", type=int, default=8)
    g.add_argument("--timeout-min", type=int, default=24 * 60, help="time limit per job")
    g.add_argument("--no-wait", action="store_true", help="return after submitting")
    g.add_argument("--log-dir", help="submitit logs (default <runs-dir>/grid-logs; shared on a cluster)")
    g.add_argument("--datasets", nargs="+", help=f"default: the profile's; any of {', '.join(DATASETS)}")
    g.add_argument("--models", nargs="+", choices=MODELS, help="default: the profile's (all three)")
    g.add_argument("--steps", type=int, help="default: the profile's")
    g.add_argument("--n-runs", type=int, help="seeds of every main run (the spread beside the paper's values; "
                                              "Table 1's 10) (default: the profile's)")
    g.add_argument("--sections", nargs="+", default=list(PAPER_SECTIONS), choices=SECTIONS,
                   help=f"which kinds of runs (default: {' '.join(PAPER_SECTIONS)}; depth: the Wide-ResNet-28-2 and -28-4 "
                        "on MNIST, with random labels too, that a CPU trains)")
    g.add_argument("--device", default="cuda", help="device the jobs train on")
    g.add_argument("--precision", default="auto", choices=("auto", *PRECISIONS),
                   help="the profile's by default (quick: bf16-train on a CPU with native bf16, else fp32; "
                        "paper: fp32); for a quick grid that feeds a book built on such a CPU: bf16-train")
    g.add_argument("--data-dir", help="dataset root, shared with the compute nodes")
    g.add_argument("--runs-dir", help="run store, shared with the compute nodes")
    g.add_argument("--dry-run", action="store_true", help="list the runs and what is missing; submit nothing")
    g.set_defaults(func=_grid)
    gpubox.add_commands(sub)
    return ap


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    try:
        rc = a.func(a)
        return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0
    except DnnKnnError as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except OSError as e:  # a full disk, a read-only or vanished folder: what, where, and no traceback
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or type(e).__name__}{where}; nothing unfinished was published: free the space "
              f"or fix the folder, then run the same command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {_interrupted_text(a)}", file=sys.stderr)
        return 130
