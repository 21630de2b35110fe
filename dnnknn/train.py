"""Training with the paper's schedule (appendix A, D) and the k-NN evaluation along the way.

`fit(cfg, data, workdir)` trains `cfg.model` on `data`, and at each of `cfg.eval_steps` (step 0 =
before training) records the network's predictions and the k-NN predictions on the test set (and
the training set when `cfg.eval_train`), for every k, metric and PCA dimension from one neighbour
search per metric. It checkpoints into `workdir` and resumes from there: randomness is drawn per
step from (seed, step) - the epoch's permutation from (seed, epoch), the augmentation from
(seed, step) - so a resumed run replays exactly the steps an uninterrupted run would have taken.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import atomic, knn as knnlib
from .config import RunConfig
from .data import Dataset, augment
from .errors import ConfigError, TrainingDiverged, UnsafeCheckpoint
from .metrics import agreement
from .models import build_model
from .names import PRECISIONS


@dataclass
class Records:
    """What a run produces: a long table of measures plus every prediction it came from."""
    rows: list[dict] = field(default_factory=list)      # one per (step, split, layer, metric, k, pca)
    losses: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, lr)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # predictions and labels
    wall: float = 0.0  # seconds of training and evaluation, over all resumed sessions
    eval_wall: float = 0.0  # ...of which evaluation (embedding and k-NN)


def lr_at(cfg: RunConfig, step: int) -> float:
    return cfg.lr * cfg.lr_factor ** sum(step >= m for m in cfg.lr_milestones)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device) if isinstance(device, (str, torch.device)) else None
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):  # meta, mps, ...: not devices a run can train and search on
        raise ConfigError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda' (or 'cuda:N')")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but no CUDA GPU is visible; use 'cpu' or 'auto'")
    return dev


@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, from Linux's /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def decay_groups(model: torch.nn.Module, coefficient: float) -> list[dict]:
    """SGD parameter groups: the weights of convolutions and fully connected layers decayed with
    `coefficient`; biases and batch-norm parameters not decayed (the authors' code decays its
    `DW` variables only)."""
    decayed, rest = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            is_weight = name == "weight" and isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))
            (decayed if is_weight else rest).append(p)
    return [{"params": decayed, "weight_decay": coefficient}, {"params": rest, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.SGD:
    """Nesterov SGD (appendix A) or plain GD (momentum 0), decay on weights only."""
    return torch.optim.SGD(decay_groups(model, cfg.effective_weight_decay), lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.momentum > 0)


def _step_generator(device, seed: int, salt: int, n: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + salt * 7_919 + n)


class EpochOrder:
    """The seeded batches of the training set: one permutation per epoch, drawn from (seed, epoch),
    so that any step's batch is known without replaying the steps before it (exact resume).
    `order(step)` gives the step's indices, or None when a batch is the whole set."""

    def __init__(self, n: int, batch: int, seed: int, device):
        self.n, self.batch, self.seed, self.device = n, min(batch or n, n), seed, device
        self.per_epoch = max(1, n // self.batch)
        self.epoch, self.perm = -1, None

    def __call__(self, step: int) -> torch.Tensor | None:
        if self.batch >= self.n:
            return None
        epoch = step // self.per_epoch
        if epoch != self.epoch:
            g = _step_generator("cpu", self.seed, 1, epoch)
            self.perm, self.epoch = torch.randperm(self.n, generator=g).to(self.device), epoch
        i = step % self.per_epoch
        return self.perm[i * self.batch:(i + 1) * self.batch]


def autocast(device: torch.device, precision: str, training: bool = True):
    """bf16 autocast for "bf16" (training and embedding) and "bf16-train" (training steps only)."""
    on = precision == "bf16" or (precision == "bf16-train" and training)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def memory_format(model_name: str) -> torch.memory_format:
    """Channels-last for the convolutional models, on GPUs and CPUs alike (2-core CPU, MNIST-5k:
    a Wide-ResNet-10-1 step 145 -> 111 ms, LeNet's embedding pass 25% faster)."""
    return torch.contiguous_format if model_name == "mlp640" else torch.channels_last


def batch_at(data: Dataset, order: "EpochOrder", step: int, device=None):
    """(x, y, black levels or None) of the step's training batch, on `device` (default: where the data is)."""
    idx = order(step)
    if idx is None:
        x, y, black = data.x_train, data.y_train, data.black_train
    else:
        black = None if data.black_train is None else data.black_train[idx.to(data.black_train.device)]
        idx = idx.to(data.x_train.device)
        x, y = data.x_train[idx], data.y_train[idx]
    if device is not None:
        x, y, black = x.to(device), y.to(device), None if black is None else black.to(device)
    return x, y, black


# A cross-entropy this large has diverged (it starts near ln(classes), 2.3 to 4.6): the run stops,
# publishing nothing, instead of recording a finite but meaningless model
DIVERGED_LOSS = 1e3
FLUSH_EVERY = 100  # steps between flush_subnormal calls on a CPU (one flush: ~16% of a LeNet step)


@torch.no_grad()
def flush_subnormal(opt: torch.optim.Optimizer):
    """Set the weights and optimiser state below float32's smallest normal number (1.2e-38) to zero:
    x86 CPUs compute with subnormal numbers in microcode, and a strong weight decay makes a dead unit's
    weights subnormal (`benchmarks/denormals.py`; the book's list of choices). `fit` calls it every
    FLUSH_EVERY steps on a CPU."""
    tiny = torch.finfo(torch.float32).tiny
    for group in opt.param_groups:
        for p in group["params"]:
            for t in (p, *opt.state.get(p, {}).values()):
                if torch.is_tensor(t) and t.is_floating_point() and t.dim() > 0:
                    t.masked_fill_(t.abs() < tiny, 0.0)


def train_step(model, opt, x, y, lr: float | None = None, gen: torch.Generator | None = None, *,
               flip: bool = False, black=None, precision: str = "fp32", fmt=torch.contiguous_format) -> torch.Tensor:
    """One optimiser step on the batch (x, y): the batch augmentation when `gen` is given (padding with
    `black`, the images' black levels, or zeros), forward under `precision`'s autocast, cross-entropy,
    backward, update; `lr` sets every group's rate first. The one training step of `fit`,
    `train_module`, the GPU box's calibration, benchmarks/train.py and benchmarks/denormals.py.
    Returns the loss as a 0-d tensor (reading it waits for the device)."""
    if gen is not None:
        x = augment(x, flip, gen, black=black)
    x = x.contiguous(memory_format=fmt)
    if lr is not None:
        for group in opt.param_groups:
            group["lr"] = lr
    model.train()
    with autocast(x.device, precision):
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def embed_batch(device: torch.device) -> int:
    """Images per forward pass when embedding: 1,000 on a GPU, 128 on a CPU (see `embed`)."""
    return 1000 if device.type == "cuda" else 128


@torch.no_grad()
def embed(model, x: torch.Tensor, layers=("embedding",), batch: int | None = None,
          precision: str = "fp32", fmt=torch.contiguous_format) -> dict[str, torch.Tensor]:
    """Features of the named layers and the logits for all of x, in eval mode, in batches (default
    1,000 on a GPU; 128 on a CPU, where a batch's activations then stay in cache: 3x faster than
    1,000 for the Wide-ResNet on MNIST-5k)."""
    batch = batch or embed_batch(x.device)
    was_training = model.training
    model.eval()
    parts: dict[str, list] = {}
    for s in range(0, len(x), batch):
        with autocast(x.device, precision, training=False):
            out = model.features(x[s:s + batch].contiguous(memory_format=fmt), layers, logits=True)
        for k, v in out.items():
            parts.setdefault(k, []).append(v.float().cpu())
    model.train(was_training)
    return {k: torch.cat(v) for k, v in parts.items()}


def pred_key(step: int, split: str, layer: str | None = None, metric=None, k=None, pca=0) -> str:
    """The name of a prediction array in predictions.npz: the DNN's ("<step>/<split>/dnn") when
    layer is None, else the k-NN's on that layer. The true labels are "labels/<split>"."""
    return f"{step}/{split}/dnn" if layer is None else f"{step}/{split}/{layer}/{metric}/{k}/{pca}"


NEIGHBOURS = 5  # nearest training images recorded per chosen test image (cfg.neighbour_images)


def neighbour_queries(n_test: int, count: int) -> np.ndarray:
    """The test images whose neighbours a run records: `count` of them drawn once from seed 0, the
    same for every run of a dataset (sorted indices)."""
    return np.sort(np.random.default_rng(0).choice(n_test, min(count, n_test), replace=False)).astype(np.int32)


def neighbour_key(step: int, what: str) -> str:
    """predictions.npz names: "<step>/neighbours/index" and ".../distance", (queries, NEIGHBOURS)
    nearest first; the test images queried are "neighbours/queries"."""
    return f"{step}/neighbours/{what}"


def evaluate(model, data: Dataset, cfg: RunConfig, step: int, rec: Records, layers=("embedding",)):
    """Record predictions and measures at `step` for each layer (k-NN fitted on the training
    set's features of that layer) on the test set, and on the training set when asked."""
    feats = {s: embed(model, x, layers, precision=cfg.precision, fmt=memory_format(cfg.model))
             for s, x in (("train", data.x_train), ("test", data.x_test))}
    labels = {s: y.cpu().numpy() for s, y in (("train", data.y_train), ("test", data.y_test))}
    on_train = cfg.eval_train and (cfg.train_eval_steps is None or step in cfg.train_eval_steps)
    for split, f in feats.items():
        bad = [name for name, v in f.items() if not torch.isfinite(v).all()]
        if bad:
            raise TrainingDiverged(
                f"the network's {bad[0]} on the {split} set became NaN or infinite by step {step} of "
                f"{cfg.label()} (lr {lr_at(cfg, max(step - 1, 0)):g}); lower the learning rate (--lr)")
    if cfg.neighbour_images:
        q = neighbour_queries(len(labels["test"]), cfg.neighbour_images)
        metric = cfg.metrics[0]
        dist, idx = knnlib.search(feats["test"]["embedding"][q], feats["train"]["embedding"],
                                  min(NEIGHBOURS, len(labels["train"])), (metric,), device=cfg.device)[metric]
        rec.arrays.setdefault("neighbours/queries", q)
        rec.arrays[neighbour_key(step, "index")] = idx.astype(np.int32)
        rec.arrays[neighbour_key(step, "distance")] = dist.astype(np.float32)
    for split in ("test", "train") if on_train else ("test",):
        dnn = feats[split]["logits"].argmax(1).numpy()
        rec.arrays[pred_key(step, split)] = dnn.astype(np.int16)
        rec.arrays.setdefault(f"labels/{split}", labels[split].astype(np.int16))
        for layer in layers:
            # the embedding: every k, metric and PCA space (at a full step; else the curves' k and
            # metric); another probed layer: probe_ks, the first metric; on the training set without
            # train_full only the curves' space (Table 2), not the layers (Figure 2 is the test set's)
            emb, full = layer == "embedding", cfg.is_full_eval(step, split)
            if not emb and split == "train" and not cfg.train_full:
                continue
            ks, metrics, pca = ((cfg.ks, cfg.metrics, cfg.pca_dims) if full else ((cfg.curve_k,), cfg.metrics[:1], ())
                                ) if emb else (cfg.probe_ks, cfg.metrics[:1], ())
            preds = knnlib.predict_spaces(
                feats["train"][layer].numpy(), labels["train"], feats[split][layer].numpy(), data.num_classes,
                ks, metrics, pca, exclude_self=cfg.exclude_self and split == "train", device=cfg.device)
            for (metric, k, p), pred in preds.items():
                rec.arrays[pred_key(step, split, layer, metric, k, p)] = pred.astype(np.int16)
                rec.rows.append({"step": step, "split": split, "layer": layer, "metric": metric,
                                 "k": k, "pca": p, **agreement(pred, dnn, labels[split])})


def check_fits(cfg: RunConfig, n_train: int):
    """Settings checked before anything is written or trained: the largest k and the PCA
    dimensions against the training set's size, the probed layers against the model's."""
    probe_ks = cfg.probe_ks if set(cfg.probe_layers) - {"embedding"} else ()
    knnlib.check_k(max((*cfg.ks, *probe_ks)), n_train, cfg.exclude_self,
                   "ks and probe_ks" if probe_ks else "ks")
    from .names import layer_names
    names = layer_names(cfg.model, cfg.depth, cfg.width)
    if unknown := [n for n in cfg.probe_layers if n not in names]:
        raise ConfigError(f"unknown layer {unknown[0]!r} for {cfg.model}; it has {list(names)}")
    if cfg.pca_dims and max(cfg.pca_dims) > n_train:
        raise ConfigError(f"PCA to {max(cfg.pca_dims)} dimensions needs at least that many training images "
                          f"({n_train} here); choose pca_dims <= {n_train}")


def fit(cfg: RunConfig, data: Dataset, workdir: str | os.PathLike, progress: bool | str = True,
        on_step=None) -> Records:
    """Train and evaluate; resume from `workdir/ckpt.pt` when present. `cfg` must be resolved.
    progress: True = a progress bar; "log" = one printed line per evaluation; False = silent.
    on_step(step): called before each training step (after that step's evaluation and checkpoint).
    The final checkpoint (the trained model at the last step) is left in `workdir`."""
    dev = resolve_device(cfg.device)
    cfg = dataclasses.replace(cfg, device=str(dev))  # the k-NN searches where the model runs
    check_fits(cfg, len(data.y_train))
    if data.pixels != cfg.pixels:
        raise ConfigError(f"the run asks for {cfg.pixels} pixels and the dataset holds {data.pixels} ones; "
                          f"load it with load_dataset(..., pixels={cfg.pixels!r})")
    if cfg.augment and cfg.pad_fill != "zero" and cfg.pixels != "raw" and data.black_train is None:
        raise ConfigError("pad_fill 'black' needs the dataset's black levels (Dataset.black_train, which "
                          "load_dataset fills); build the Dataset with them, or use pad_fill='zero'")
    workdir = Path(workdir)
    ckpt_path = workdir / "ckpt.pt"

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.shape, data.num_classes, depth=cfg.depth, width=cfg.width).to(dev)
    fmt = memory_format(cfg.model)
    model = model.to(memory_format=fmt)
    opt = make_optimizer(model, cfg)
    workdir.mkdir(parents=True, exist_ok=True)  # only once the settings are known to be good
    if workdir.stat().st_uid == os.getuid():
        workdir.chmod(0o700)  # a checkpoint is read back: nobody else may write into its folder
    data = data.to(dev)
    n_train = len(data.y_train)
    rec, start, wall = Records(), 0, 0.0
    if ckpt_path.exists() or ckpt_path.is_symlink():
        check_private(workdir)
        try:
            ck = load_checkpoint(ckpt_path, dev)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            rec, start, wall = ck["records"], ck["step"], ck["wall"]
            print(f"resuming {cfg.label()} from step {start}", flush=True)  # with or without a bar
        except Exception as e:  # noqa: BLE001 - truncated, garbled or foreign: start afresh
            why = " ".join(str(e).split())[:80] or type(e).__name__
            print(f"warning: the checkpoint {ckpt_path} cannot be read ({type(e).__name__}: {why}); "
                  f"starting {cfg.label()} from step 0", file=sys.stderr, flush=True)
            ckpt_path.unlink()
            torch.manual_seed(cfg.seed)  # the same initial model as a run that never had a checkpoint
            model = build_model(cfg.model, data.shape, data.num_classes, depth=cfg.depth,
                                width=cfg.width).to(dev).to(memory_format=fmt)
            opt = make_optimizer(model, cfg)

    def save(step):
        save_checkpoint(ckpt_path, model, opt, rec, step, wall + time.time() - t0)

    order = EpochOrder(n_train, cfg.batch_size, cfg.seed, dev)
    last_eval = _last_eval_text(rec)
    t0 = last_ckpt = time.time()
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=start, disable=progress is not True, desc=cfg.label(),
               leave=False, dynamic_ncols=True)
    step = start
    try:
        while True:
            if step in cfg.eval_steps and not any(r["step"] == step for r in rec.rows):
                final = step == max(cfg.eval_steps)
                layers = ["embedding"] + [n for n in cfg.probe_layers if n != "embedding"] if final else ["embedding"]
                t_eval = time.time()
                evaluate(model, data, cfg, step, rec, layers)
                rec.eval_wall += time.time() - t_eval
                last_eval = _last_eval_text(rec)
                bar.set_postfix_str(last_eval)
                if progress == "log":
                    print(f"  {cfg.label()}: {last_eval} ({time.time() - t0:.0f} s)", flush=True)
                save(step)
                last_ckpt = time.time()
            if step >= cfg.steps:
                break
            if on_step is not None:
                on_step(step)
            x, y, black = batch_at(data, order, step)
            lr = lr_at(cfg, step)
            gen = _step_generator(dev, cfg.seed, 2, step) if cfg.augment else None
            loss_v = train_step(model, opt, x, y, lr, gen, flip=data.flip, fmt=fmt, precision=cfg.precision,
                                black=None if cfg.pad_fill == "zero" else black).item()
            if dev.type == "cpu" and (step + 1) % FLUSH_EVERY == 0:
                flush_subnormal(opt)
            if not math.isfinite(loss_v) or loss_v > DIVERGED_LOSS:
                raise TrainingDiverged(
                    f"the loss became {loss_v:.4g} at step {step + 1} of {cfg.label()} (lr {lr:g}"
                    f"{'' if not math.isfinite(loss_v) else f'; above {DIVERGED_LOSS:g}: diverged'}); "
                    f"lower the learning rate (--lr) or check the data")
            step += 1
            rec.losses.append((step, loss_v, lr))
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix_str(f"loss {loss_v:.3f} | {last_eval}")
            if time.time() - last_ckpt > 120:
                save(step)
                last_ckpt = time.time()
    finally:
        bar.close()
    rec.wall = wall + time.time() - t0
    return rec


def check_private(folder: Path):
    """A checkpoint's folder and file belong to this user, and nobody else can write to them: a
    run never resumes from what another user of a shared run store could have put there."""
    for p in (folder, folder / "ckpt.pt"):
        st = p.lstat()
        if p.is_symlink() or st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            why = ("is a symlink" if p.is_symlink() else f"belongs to user id {st.st_uid}" if st.st_uid != os.getuid()
                   else "can be written by other users")
            raise UnsafeCheckpoint(f"will not resume from {p}: it {why}; remove {folder} to train the run "
                                   f"from step 0, or use a run store of your own (--runs-dir)")


def _plain_records(rec: Records) -> dict:
    """Records as tensors and plain data, which torch.load(weights_only=True) reads back."""
    if bad := [k for k, a in rec.arrays.items() if np.asarray(a).dtype.kind not in "biuf"]:
        raise TypeError(f"record arrays {bad} are not numeric")
    return {"rows": json.dumps(rec.rows), "losses": torch.tensor(rec.losses, dtype=torch.float64).reshape(-1, 3),
            "arrays": {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in rec.arrays.items()},
            "wall": float(rec.wall), "eval_wall": float(rec.eval_wall)}


def _records(d: dict) -> Records:
    losses = [(int(s), float(loss), float(lr)) for s, loss, lr in d["losses"].tolist()]
    return Records(json.loads(d["rows"]), losses, {k: t.numpy() for k, t in d["arrays"].items()},
                   float(d["wall"]), float(d["eval_wall"]))


def save_checkpoint(path: Path, model, opt, rec: Records, step: int, wall: float):
    """Tensors and plain data only; serialised in memory, then written under a fresh temporary name
    (a full disk is an OSError: torch's zip writer, writing to the file itself, says "unexpected pos")."""
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "records": _plain_records(rec),
                "step": int(step), "wall": float(wall)}, buf)
    atomic.write_bytes(path, buf.getbuffer(), perms=0o600)


def load_checkpoint(path: Path, dev) -> dict:
    """What save_checkpoint wrote, read with weights_only=True: a file that holds anything else
    (a pickled object, a function call) fails to load instead of running."""
    ck = torch.load(path, map_location=dev, weights_only=True)
    return {**ck, "records": _records(ck["records"])}


def _last_eval_text(rec: Records) -> str:
    """'step S: dnn A knn B' for the last test evaluation (k nearest to 30, the first metric)."""
    rows = [r for r in rec.rows if r["split"] == "test" and r["layer"] == "embedding" and r["pca"] == 0]
    if not rows:
        return ""
    last = [r for r in rows if r["step"] == rows[-1]["step"] and r["metric"] == rows[0]["metric"]]
    r = min(last, key=lambda r: abs(r["k"] - 30))
    return f"step {r['step']}: dnn {r['dnn_acc']:.3f} knn(k={r['k']}) {r['knn_acc']:.3f}"


def train_module(model: torch.nn.Module, data: Dataset, steps: int, batch: int = 200, lr: float = 0.05,
                 momentum: float = 0.9, weight_decay: float = 5e-4, seed: int = 0, augment_batches: bool = True,
                 device: str = "auto", start: int = 0, precision: str = "fp32", on_step=None) -> list[float]:
    """Train any classifier (logits out) with Nesterov SGD on `data` for steps start..steps-1, with the
    same seeded data order and batch augmentation as `fit`, decay on conv / linear weights only, under
    `precision`'s autocast (a RunConfig precision: "bf16-train" where the CPU computes bf16);
    on_step(step), when given, is called before each step (after `step` steps); returns the losses. For `dnnknn.probe` on networks that are not dnnknn's (see the book's last
    chapter)."""
    if not isinstance(steps, int) or steps < start:
        raise ConfigError(f"steps must be an integer >= start ({start}), got {steps!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = resolve_device(device)
    model.to(dev).train()
    opt = torch.optim.SGD(decay_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=momentum > 0)
    order, losses = EpochOrder(len(data.y_train), batch, seed, "cpu"), []
    for step in range(start, steps):
        if on_step is not None:
            on_step(step)
        x, y, black = batch_at(data, order, step, dev)
        gen = _step_generator(dev, seed, 2, step) if augment_batches else None
        loss = train_step(model, opt, x, y, gen=gen, flip=data.flip, black=black, precision=precision).item()
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss} at step {step + 1} (lr {lr:g}); lower lr")
        losses.append(loss)
    return losses
