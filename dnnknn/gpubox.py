"""A GPU box for a few minutes: stage the data here, run one prepared job there, import what comes back.

For a GPU you reach for minutes (a rented box over ssh/rsync, a cloud notebook, a cluster node),
the job is sized to travel light: the repository plus one staged data folder (at most
`--max-send-mib`, 64 MiB, together), one command under a time budget with only `python3` and torch,
numpy, numba, pandas, scikit-learn there (no mlxtend, papermill, jupyter-book, submitit, faiss), and
at most `--max-files` (8) files of `--max-file-mib` (16 MiB) back from its output folder. So:

    python -m dnnknn gpu-stage                  # here: data packs into .gpubox/, prints both jobs
    python3 -m dnnknn gpu-run --job mnist ...  # there: prints a time budget, runs what fits
    python -m dnnknn import OUT/records.tar.gz  # here: verified run records into results/

The core library knows nothing of this module; the command line registers its three commands
(`add_commands`).

Jobs and their items, most valuable first (each job ends inside `--budget` seconds, 480 by
default; an item whose estimate no longer fits is skipped with a line saying so):
- `mnist`: Wide-ResNet-28-10 on MNIST at appendix A's settings (Figures 1-4, Table 2); the same
  network on MNIST with random labels, train and test evaluated along training (Figure 5,
  appendix E), for `RANDOM_STEPS` steps.
- `cifar10-jpeg`: MLP-640 and LeNet on the JPEG copy of CIFAR-10 at appendix A's settings (50,000
  steps); then the training-throughput / MFU and CUDA k-NN benchmarks.
`--small` runs the same items at toy sizes on a CPU (the rehearsal in tests/test_gpubox.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zlib
import tempfile
import time
from pathlib import Path

from .errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
STAGE = ".gpubox"  # ignored by git; copied to the GPU machine with the repository
JOBS = {"mnist": "mnist", "cifar10-jpeg": "cifar10-jpeg"}  # job -> the dataset it carries
# Section 4.4: the random-label networks are trained until they fit the training set (Figure 5
# shows training accuracy reaching 100%). 60,000 random MNIST labels need tens of epochs; 15,000
# steps of batch 200 are 50 epochs, which is what fits one 10-minute job beside the true-label run.
RANDOM_STEPS = 15_000
OUT_FILES, OUT_FILE_MIB = 8, 16  # default limits on what comes back from $OUT
SEND_MIB = 64  # default limit on what a job sends: the repository and its staged data folder


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse type): 'nan' or '-5' is refused in one line."""
    import math
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return v


def add_commands(sub):
    """The GPU-box commands, on the command line's subparsers. Each `func` returns what it made (not
    an int), so the command line exits 0 unless it raises."""
    ds = sub.add_parser("gpu-stage", help="pack the data of the two GPU jobs into .gpubox/ and print "
                                          "what to copy to a GPU machine and the command to run there")
    ds.add_argument("--data-dir", help="where MNIST and cifar10-jpeg are (default $DNNKNN_DATA or ../shared/data)")
    ds.add_argument("--small", action="store_true", help="small packs, for the CPU rehearsal")
    ds.add_argument("--max-send-mib", type=float, default=SEND_MIB,
                    help="what the GPU machine can be sent at once: the repository and a job's data folder")
    ds.set_defaults(func=lambda a: stage(a.data_dir, small=a.small, max_send_mib=a.max_send_mib))
    dr = sub.add_parser("gpu-run", help="on the GPU machine: run one job's items within a time budget",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    dr.add_argument("--job", required=True, choices=tuple(JOBS))
    dr.add_argument("--data-dir", required=True, help="the staged folder copied with the repository")
    dr.add_argument("--out", required=True, help="records.tar.gz and summary.md are written here")
    dr.add_argument("--budget", type=_seconds, default=480.0, help="seconds; items that no longer fit are skipped")
    dr.add_argument("--device", default="auto")
    dr.add_argument("--small", action="store_true", help="toy sizes (a CPU rehearsal)")
    dr.add_argument("--max-files", type=int, default=OUT_FILES, help="files the output folder may hold")
    dr.add_argument("--max-file-mib", type=float, default=OUT_FILE_MIB, help="size of each file in it")
    dr.set_defaults(func=lambda a: run_job(a.job, a.data_dir, a.out, small=a.small, device=a.device,
                                            budget=a.budget, max_files=a.max_files, max_file_mib=a.max_file_mib))
    im = sub.add_parser("import", help="verify the run records a GPU job sent back and copy them into results/")
    im.add_argument("archive", help="records.tar.gz from a GPU job")
    im.add_argument("--to", help="destination (default: the repository's results/)")
    im.add_argument("--max-mib", type=float, default=MAX_ARCHIVE_MIB,
                    help="the most the archive may unpack to (MiB); each run's predictions at most --max-array-mib")
    im.add_argument("--max-array-mib", type=float, default=MAX_ARRAY_MIB, help="the largest array a run may hold (MiB)")

    im.set_defaults(func=lambda a: [print(f"imported {p}") for p in import_archive(a.archive, a.to, a.max_mib,
                                                                                   a.max_array_mib)])


def stage(data_dir: str | os.PathLike | None = None, small: bool = False, dest: str = STAGE,
          max_send_mib: float = SEND_MIB) -> dict:
    """Pack each job's data into `dest/<job>/` and print what to copy and the command to run there."""
    from .data import pack_dataset

    src = Path(data_dir or os.environ.get("DNNKNN_DATA") or ROOT.parent / "shared" / "data")
    limit = (2000, 500) if small else None
    jobs = {}
    for job, dataset in JOBS.items():
        folder = Path(dest) / job
        t = time.time()
        pack = pack_dataset(dataset, src, ROOT / folder / f"{dataset}.npz", limit=limit)  # dest may be absolute
        mb = pack.stat().st_size / 2**20
        cmd = (f"python3 -m dnnknn gpu-run --job {job} --data-dir {folder} --out $OUT"
               + (" --small --device cpu" if small else ""))
        jobs[job] = {"send": [str(folder)], "command": cmd, "pack": str(pack), "MiB": round(mb, 1)}
        print(f"{job}: packed {dataset} from {src} into {pack} ({mb:.1f} MiB, {time.time() - t:.0f} s)")
        print(f"  send:    {json.dumps([str(folder)])} (with the repository)")
        print(f"  command: {cmd}")
    tree = _tree_bytes()
    for job, c in jobs.items():
        total = (tree + Path(c["pack"]).stat().st_size) / 2**20
        c["send_MiB"] = round(total, 1)
        print(f"{job}: the repository ({tree / 2**20:.1f} MiB) and the pack make {total:.1f} MiB of the "
              f"{max_send_mib:g} MiB a job sends" + ("" if total <= max_send_mib else "  <-- TOO BIG for a quick transfer"))
    print("Copy the repository and each job's folder to the GPU machine (rsync, scp, a notebook's upload), run the "
          "job's command there with $OUT an empty folder, and copy $OUT/records.tar.gz back; then, here:\n"
          "  python -m dnnknn import records.tar.gz")
    return jobs


def _tree_bytes() -> int:
    """Bytes of the repository a job sends besides its data folder: tracked files and untracked files that
    git does not ignore."""
    try:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30).stdout.split("\0")
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())


# -- the GPU machine's side -------------------------------------------------------------------------------

def _params(small: bool, device: str, data_dir: str, runs_dir: str):
    from .profiles import Params

    if small:
        return Params.from_notebook(profile="quick", steps=12, eval_every=6, random_steps=12,
                                    random_limit=[400, 200], device=device, data_dir=data_dir,
                                    runs_dir=runs_dir, train_missing=True)
    return Params.from_notebook(profile="paper", random_steps=RANDOM_STEPS, device=device, data_dir=data_dir,
                                runs_dir=runs_dir, train_missing=True)


def _items(job: str, P, small: bool) -> list[tuple[str, object]]:
    """(name, RunConfig or benchmark command) in order of value."""
    import dataclasses

    from . import experiments

    lim = (1500, 400) if small else None

    def sized(cfg):
        return dataclasses.replace(cfg, limit=lim) if lim and cfg.limit is None else cfg

    if job == "mnist":
        return [("wrn-mnist", sized(experiments.main_config(P, "mnist", "wrn"))),
                ("wrn-mnist-random-labels", sized(experiments.random_config(P, "mnist", "wrn")))]
    items = [(f"{m}-cifar10-jpeg", sized(experiments.main_config(P, "cifar10-jpeg", m))) for m in ("mlp640", "lenet")]
    small_flag = ["--small"] if small else []
    items += [("benchmark-train", [sys.executable, "benchmarks/train.py", *small_flag]),
              ("benchmark-knn", [sys.executable, "benchmarks/knn.py", "--skip-sklearn", "--repeat", "1",
                                 *small_flag])]
    return items


def _calibrate(cfg, data, dev) -> tuple[float, float]:
    """(seconds per training step, seconds per image embedded) for cfg's model on this device."""
    import torch

    from .models import build_model
    from .train import embed, make_optimizer, memory_format, train_step

    fmt = memory_format(cfg.model)
    model = build_model(cfg.model, data.shape, data.num_classes, depth=cfg.depth, width=cfg.width).to(dev)
    model = model.to(memory_format=fmt)
    opt = make_optimizer(model, cfg)
    b = min(cfg.batch_size or len(data.y_train), len(data.y_train))
    x, y = data.x_train[:b].to(dev), data.y_train[:b].to(dev)
    black = None if data.black_train is None or cfg.pad_fill == "zero" else data.black_train[:b].to(dev)
    gen = torch.Generator(device=dev).manual_seed(0) if cfg.augment else None

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for i in range(5):  # 2 warm-up steps, 3 timed
        if i == 2:
            sync()
            t = time.time()
        train_step(model, opt, x, y, gen=gen, flip=data.flip, black=black, precision=cfg.precision, fmt=fmt)
    sync()
    per_step = (time.time() - t) / 3
    n = min(2000, len(data.x_test))
    embed(model, data.x_test[:n].to(dev), fmt=fmt)
    sync()
    t = time.time()
    embed(model, data.x_test[:n].to(dev), model.layer_names, fmt=fmt)
    sync()
    return per_step, (time.time() - t) / n


def estimate(cfg, data, dev, timed: dict | None = None) -> float:
    """Seconds for a run: training steps plus one embedding of both splits per evaluation, plus
    20% for the k-NN searches and the records, plus a fixed start-up allowance. timed: calibrations
    already made, by network, precision, batch and image shape."""
    batch = min(cfg.batch_size or len(data.y_train), len(data.y_train))  # as _calibrate times it
    # not told apart: with or without augmentation (on the device, a small part of a step), so the
    # random-label run of a network reuses its main run's timing
    what = (cfg.model, cfg.depth, cfg.width, cfg.precision, batch, data.shape, data.num_classes)
    timed = {} if timed is None else timed
    if what not in timed:
        timed[what] = _calibrate(cfg, data, dev)
    per_step, per_image = timed[what]
    n_eval = len(cfg.eval_steps)
    images = n_eval * len(data.y_test) + (n_eval if cfg.eval_train else 1) * len(data.y_train)
    return 15 + 1.2 * (cfg.steps * per_step + images * per_image)  # 15 s: loading, numba compilation


def run_job(job: str, data_dir: str, out: str, small: bool = False, device: str = "auto",
             budget: float = 480.0, runs_dir: str | None = None, max_files: int = OUT_FILES,
             max_file_mib: float = OUT_FILE_MIB) -> Path:
    """Run a job's items that fit in `budget` seconds; records.tar.gz and summary.md in `out` are
    rewritten after every item, so what finished comes back even if the job is cut short. Without
    `runs_dir` the runs go to a temporary folder, removed at the end (their records are in `out`).
    Ends by checking `out` against the limits on what comes back (max_files of max_file_mib)."""
    limits = (max_files, max_file_mib)
    if runs_dir is not None:
        return _run_job(job, data_dir, out, small, device, budget, runs_dir, limits)
    tmp = tempfile.mkdtemp(prefix="dnnknn-gpu-runs-")
    try:
        return _run_job(job, data_dir, out, small, device, budget, tmp, limits)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_job(job, data_dir, out, small, device, budget, runs_dir, limits=(OUT_FILES, OUT_FILE_MIB)) -> Path:
    import torch

    from .data import load_dataset
    from .runs import RunStore, code_version, device_name
    from .train import resolve_device

    t0 = time.time()
    if job not in JOBS:
        raise ConfigError(f"unknown job {job!r}; choose one of {', '.join(JOBS)}")
    if not Path(data_dir).is_dir():
        raise ConfigError(f"no staged data in {data_dir}; run `python -m dnnknn gpu-stage` first and "
                          f"copy that folder with the repository")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    P = _params(small, dev.type, data_dir, runs_dir)
    store = RunStore(runs_dir)
    lines = []

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    say(f"# dnnknn GPU job: {job}{' (--small)' if small else ''}")
    say(f"{device_name(str(dev))}; torch {torch.__version__}; code {code_version()}; budget {budget:.0f} s")
    items = _items(job, P, small)
    datasets, timed = {}, {}
    say("\n## Time budget (estimated seconds per item, from a few timed steps on this device)\n")
    say("| item | what | steps | evaluations | estimated s |")
    say("|---|---|---|---|---|")
    plan = []
    for name, what in items:
        if isinstance(what, list):
            est = 60.0 if not small else 30.0
            say(f"| {name} | {' '.join(Path(w).name for w in what[1:])} | | | {est:.0f} (allowance) |")
        else:
            cfg = what.resolve()
            key = (cfg.dataset, cfg.labels, cfg.limit, cfg.pixels)
            if key not in datasets:
                datasets[key] = load_dataset(cfg.dataset, data_dir, labels=cfg.labels, label_seed=cfg.label_seed,
                                             limit=cfg.limit, pixels=cfg.pixels)
            est = estimate(cfg, datasets[key], dev, timed)
            say(f"| {name} | {cfg.label()} | {cfg.steps:,} | {len(cfg.eval_steps)} | {est:.0f} |")
        plan.append((name, what, est))
    say(f"\ncalibration took {time.time() - t0:.0f} s\n")
    say("## Results\n")
    say("| item | run | wall (s) | test DNN (%) | test k-NN (%) | MC | ME | P_SAME | train DNN (%) | train k-NN (%) |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    finished, notes = [], []
    archive = out / "records.tar.gz"

    def flush():
        write_archive(finished, archive)
        (out / "summary.md").write_text("\n".join(lines + [""] + notes) + "\n")

    for name, what, est in plan:
        left = budget - (time.time() - t0)
        if est > left:
            notes.append(f"skipped {name}: estimated {est:.0f} s, {left:.0f} s left in the budget")
            say(f"| {name} | skipped: estimated {est:.0f} s, {left:.0f} s left | | | | | | | | |")
            continue
        t = time.time()
        if isinstance(what, list):
            try:
                r = subprocess.run(what, cwd=ROOT, capture_output=True, text=True, timeout=max(30, left))
                notes.append(f"## {name} ({time.time() - t:.0f} s, exit {r.returncode})\n\n{r.stdout}"
                             + (f"\n{r.stderr[-2000:]}" if r.returncode else ""))
                say(f"| {name} | benchmark, exit {r.returncode} (output below) | {time.time() - t:.0f} | | | | | | | |")
            except subprocess.TimeoutExpired:
                say(f"| {name} | stopped at the budget's end ({left:.0f} s) | {time.time() - t:.0f} | | | | | | | |")
            flush()
            continue
        cfg = what
        try:
            run = store.get(cfg, data_dir=data_dir, progress="log")
        except Exception as e:  # noqa: BLE001 - one item's failure (e.g. out of memory) keeps the others
            say(f"| {name} | failed: {type(e).__name__}: {' '.join(str(e).split())[:200]} | {time.time() - t:.0f} | | | | | | | |")
            flush()
            continue
        finished.append(run)
        te = run.final(split="test")
        tr = run.final(split="train") if run.config.eval_train else None
        train = f"{100 * tr.dnn_acc:.2f} | {100 * tr.knn_acc:.2f}" if tr is not None else " | "
        say(f"| {name} | {run.config.label()} ({run.key}) | {run.meta['wall_time_s']:.0f} (est. {est:.0f}) | "
            f"{100 * te.dnn_acc:.2f} | {100 * te.knn_acc:.2f} | {te.MC:.4f} | {te.ME:.4f} | {te.P_SAME:.4f} | {train} |")
        flush()
    say("")
    for n in notes:
        print(n)
    say(f"total {time.time() - t0:.0f} s")
    flush()
    check_out(out, *limits)
    print(f"wrote {archive} ({len(finished)} runs) and {out / 'summary.md'}")
    return archive


def write_archive(runs, path: Path):
    """The runs' compact records (no checkpoints), each under its key, in one tar.gz."""
    from .runs import MANIFEST, RUN_FILES

    from .atomic import open_temp

    with open_temp(path) as tmp, tarfile.open(fileobj=tmp, mode="w:gz") as tar:
        for run in runs:
            for f in (*RUN_FILES, MANIFEST):
                tar.add(run.path / f, arcname=f"{run.key}/{f}")


def check_out(out: Path, max_files: int = OUT_FILES, max_file_mib: float = OUT_FILE_MIB):
    """That the output folder fits what can be copied back: at most max_files of max_file_mib each."""
    files = [p for p in Path(out).rglob("*") if p.is_file()]
    if len(files) > max_files:
        raise ConfigError(f"{out} holds {len(files)} files; a job sends back at most {max_files} (--max-files)")
    big = [p for p in files if p.stat().st_size > max_file_mib * 2**20]
    if big:
        raise ConfigError(f"{big[0]} is {big[0].stat().st_size / 2**20:.1f} MiB; a job sends back at most "
                          f"{max_file_mib:g} MiB a file (--max-file-mib)")


MAX_ARCHIVE_MIB = 1024.0  # what an archive of run records may unpack to: a paper-profile grid's is ~100 MiB
MAX_ARRAY_MIB = 256.0  # the largest prediction array of a run: CIFAR-100's training set is 0.4 MiB per array


def _check_sizes(tar: tarfile.TarFile, path: Path, max_mib: float):
    """The members' unpacked sizes, read from their headers before anything is written."""
    total = 0
    for m in tar:
        total += m.size
        if total > max_mib * 2**20:
            raise ConfigError(f"{path} unpacks to more than {max_mib:g} MiB (at {m.name}); it is not a run "
                              f"archive, or pass a larger --max-mib")


def import_archive(path: str | os.PathLike, to: str | os.PathLike | None = None, max_mib: float = MAX_ARCHIVE_MIB,
                   max_array_mib: float = MAX_ARRAY_MIB) -> list[Path]:
    """Verify each run in a archive a GPU job sent back against its manifest and publish it into `to`
    (default: the repository's results/). The archive may unpack to `max_mib` at most, and each run's
    arrays to `max_array_mib` each."""
    from .runs import RunStore, check_npz, export

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no archive {path}; the GPU job writes $OUT/records.tar.gz")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with tarfile.open(path) as tar:
                _check_sizes(tar, path, max_mib)
            with tarfile.open(path) as tar:
                tar.extractall(tmp, filter="data")  # refuses absolute paths and links out of tmp
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            why = " ".join(str(e).split())[:100] or type(e).__name__
            raise ConfigError(f"{path} is not a whole run archive ({type(e).__name__}: {why}); copy "
                              f"records.tar.gz again from the GPU machine") from None
        keys = sorted(p.name for p in Path(tmp).iterdir() if p.is_dir())
        if not keys:
            raise ConfigError(f"{path} holds no run; the GPU machine's records.tar.gz has one folder per run")
        store = RunStore(tmp)
        for key in keys:  # all checked before any is published
            store._open(Path(tmp) / key)  # raises DamagedRun, also for a config that is not its key's
            check_npz(Path(tmp) / key / "predictions.npz", max_array_mib)
        return [export(store, key, to) for key in keys]
