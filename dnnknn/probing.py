"""The paper's measures for any PyTorch classifier: does it predict like a k-NN on one of its layers?

    from dnnknn import probe
    report = probe(model, train, test, layer="avgpool", k=30, metric="l1")
    report.table        # layer, metric, k: DNN acc, k-NN acc, MC, ME, P_SAME

`model` is any `nn.Module` whose output is logits (N, classes). Features are taken with forward
hooks on the named modules (names from `model.named_modules()`; for a dnnknn `ProbedNet` its layer
names work too), 4-D maps globally average pooled, from one forward pass over each set; one
neighbour search per layer serves every k and metric.

`normalize=False` by default: the k-NN sees a layer as the next layer of the network does. The
paper normalises because its networks do (their last layer reads the L2-normalised vector, the
`embedding` layer of dnnknn's models); pass `normalize=True` to put any layer on the unit sphere.
"""
from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from . import knn as knnlib
from .errors import ConfigError
from .metrics import agreement
from .names import PAPER_METRIC
from .train import embed_batch


@dataclass
class ProbeReport:
    table: pd.DataFrame  # one row per (layer, metric, k)
    predictions: dict = field(repr=False, default_factory=dict)  # {"dnn", (layer, metric, k)}: (n_test,)
    labels: np.ndarray | None = field(repr=False, default=None)

    def __repr__(self):
        with pd.option_context("display.width", 120, "display.float_format", "{:.4f}".format):
            return f"ProbeReport\n{self.table.to_string()}"


def _module_names(model) -> dict[str, torch.nn.Module]:
    mods = dict(model.named_modules())
    stages = getattr(model, "stages", None)
    if isinstance(stages, torch.nn.ModuleDict):  # a dnnknn ProbedNet: its layer names too
        for name, m in stages.items():
            mods.setdefault(name, m)
    return mods


def _as_tensors(data, name: str):
    """(x, y) tensors from a (x, y) pair, a DataLoader / iterable of (x, y) batches, or a dnnknn
    dataset name ('train' or 'test' split)."""
    if isinstance(data, tuple) and len(data) == 2 and all(torch.is_tensor(t) or isinstance(t, np.ndarray) for t in data):
        x, y = (torch.as_tensor(t) for t in data)
    elif isinstance(data, torch.utils.data.DataLoader) or (hasattr(data, "__iter__") and not isinstance(data, (str, tuple))):
        xs, ys = [], []
        for batch in data:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise ConfigError(f"{name}: each batch must be (inputs, labels), got {type(batch).__name__}")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
        if not xs:
            raise ConfigError(f"{name}: the data loader gave no batch")
        x, y = torch.cat(xs), torch.cat(ys)
    else:
        raise ConfigError(f"{name} must be a DataLoader, an (x, y) pair of tensors or a dataset name, "
                          f"got {type(data).__name__}")
    if x.device.type == "meta" or y.device.type == "meta":
        raise ConfigError(f"{name}: the data is on the meta device (shapes only, no values); give real tensors")
    if len(y) == 0:
        raise ConfigError(f"{name}: the set is empty; give it at least one input")
    if y.ndim != 1 or len(x) != len(y) or y.dtype.is_floating_point:
        raise ConfigError(f"{name}: labels must be one integer class per input, got x {tuple(x.shape)} "
                          f"and y {tuple(y.shape)} ({y.dtype})")
    return x, y.long()


@torch.no_grad()
def _features(model, x, modules: dict[str, torch.nn.Module], batch: int, device, normalize: bool):
    """{layer: (N, D) float32} and logits (N, C), from one forward pass per batch."""
    store: dict[str, list] = {n: [] for n in modules}
    logits = []

    calls = dict.fromkeys(modules, 0)

    def hook_for(name):
        def hook(_module, _inputs, out):
            out = out[0] if isinstance(out, (tuple, list)) else out
            if not torch.is_tensor(out):
                raise ConfigError(f"layer {name!r} outputs {type(out).__name__}, not a tensor")
            f = out.float().mean((2, 3)) if out.ndim == 4 else out.float().flatten(1)
            store[name].append(f.cpu())
            calls[name] += 1
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(x), batch):
            out = model(x[s:s + batch].to(device))
            if not torch.is_tensor(out) or out.ndim != 2:
                raise ConfigError(f"the model's output must be logits of shape (N, classes), got "
                                  f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}")
            logits.append(out.float().cpu())
            for name, n in calls.items():  # one output per forward pass, or the layer is ambiguous
                if n != 1:
                    raise ConfigError(f"layer {name!r} ran {n} times in one forward pass (a module "
                                      f"{'reused' if n else 'never called'} by the model's forward); "
                                      f"probe a module that runs once, such as its parent block")
                calls[name] = 0
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    feats = {n: torch.cat(v) for n, v in store.items()}
    if normalize:
        feats = {n: torch.nn.functional.normalize(f, dim=1) for n, f in feats.items()}
    return feats, torch.cat(logits)


def probe(model: torch.nn.Module, train, test, layer="embedding", k=30, metric="l1", normalize: bool = False,
          batch: int | None = None, device=None, data_dir=None) -> ProbeReport:
    """k-NN on `layer` (a name or several) of `model`, fitted on `train`, against the model's own
    predictions on `test`: accuracy of both, MC, ME and P_SAME for every k and metric."""
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = [layer] if isinstance(layer, str) else list(layer)
    ks = list(k) if isinstance(k, (list, tuple, range, np.ndarray)) else [k]
    metrics = [metric] if isinstance(metric, str) else list(metric)
    if not layers or not ks or not metrics:
        raise ConfigError("give at least one layer, one k and one metric")
    if any(not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1 for v in ks):
        raise ConfigError(f"k must be a positive integer or a list of them, got {k!r}")
    if batch is not None and (not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1):
        raise ConfigError(f"batch must be a positive integer (inputs per forward pass), got {batch!r}")
    knnlib._check_metrics(tuple(metrics))
    mods = _module_names(model)
    for name in layers:
        if name not in mods:
            near = difflib.get_close_matches(name, [n for n in mods if n], n=5, cutoff=0.4)
            raise ConfigError(f"no layer {name!r} in this model; nearest names: {', '.join(near) or 'none'} "
                              f"(all: model.named_modules())")
    if isinstance(train, str) or isinstance(test, str):
        from .data import load_dataset
        if isinstance(train, str):
            ds = load_dataset(train, data_dir)
            train = (ds.x_train, ds.y_train)
        if isinstance(test, str):
            ds = load_dataset(test, data_dir)
            test = (ds.x_test, ds.y_test)
    x_tr, y_tr = _as_tensors(train, "train")
    x_te, y_te = _as_tensors(test, "test")
    knnlib.check_k(max(ks), len(y_tr))
    from .train import resolve_device
    device = resolve_device(str(device)) if device is not None else next(model.parameters(), torch.empty(0)).device
    if device.type == "meta":
        raise ConfigError("the model is on the meta device (no weights): load its weights, or move it to 'cpu' or 'cuda'")
    batch = batch or embed_batch(device)
    modules = {n: mods[n] for n in layers}
    f_tr, _ = _features(model, x_tr, modules, batch, device, normalize)
    f_te, logits = _features(model, x_te, modules, batch, device, normalize)
    num_classes = logits.shape[1]
    for split, y in (("train", y_tr), ("test", y_te)):
        if y.min() < 0 or y.max() >= num_classes:
            raise ConfigError(f"{split} labels go from {int(y.min())} to {int(y.max())}, but the model has "
                              f"{num_classes} outputs; labels must lie in [0, {num_classes})")
    dnn = logits.argmax(1).numpy()
    labels = y_te.numpy()
    rows, preds = [], {"dnn": dnn}
    for name in layers:
        got = knnlib.predict_spaces(f_tr[name], y_tr.numpy(), f_te[name], num_classes, ks, tuple(metrics))
        for (mt, kk, _), pred in got.items():
            preds[(name, mt, kk)] = pred
            rows.append({"layer": name, "metric": mt, "k": kk, **agreement(pred, dnn, labels)})
    table = pd.DataFrame(rows).set_index(["layer", "metric", "k"])
    return ProbeReport(table, preds, labels)


@functools.lru_cache(maxsize=8)
def input_knn(dataset: str, ks=(1, 5, 30, 100), metric: str = PAPER_METRIC, pixels: str = "standardised",
              limit=None, data_dir=None) -> dict[int, float] | None:
    """Figure 2's first point: the k-NN test accuracy on the input images, globally average pooled as
    every 2-D layer is (one value per channel). {k: accuracy}; None where the dataset is not on disk."""
    from .data import load_dataset
    from .errors import DataNotFoundError
    from .knn import KNNClassifier

    try:
        ds = load_dataset(dataset, data_dir, limit=limit, pixels=pixels, download=False)
    except DataNotFoundError:
        return None
    pooled = [x.mean((2, 3)).numpy() for x in (ds.x_train, ds.x_test)]  # (N, C)
    pred = KNNClassifier(k=max(ks), metric=metric).fit(pooled[0], ds.y_train.numpy()).predict_many(pooled[1], ks)
    y = ds.y_test.numpy()
    return {k: float((pred[(metric, k)] == y).mean()) for k in ks}


def probe_during_training(model: torch.nn.Module, data, steps, layer="embedding", k=30, metric=PAPER_METRIC,
                          **train_kw) -> dict[int, ProbeReport]:
    """Train `model` on `data` (a dnnknn `Dataset`) with `train.train_module`, one run to the last of
    `steps`, and `probe` it on the training and test sets after each of `steps` (0: before
    training): {step: report}."""
    from .train import train_module

    wanted, reports = sorted(set(steps)), {}

    def probe_at(s):
        if s in wanted:
            reports[s] = probe(model, (data.x_train, data.y_train), (data.x_test, data.y_test), layer=layer, k=k,
                               metric=metric)

    train_module(model, data, wanted[-1], on_step=probe_at, **train_kw)
    probe_at(wanted[-1])
    return reports


def training_table(reports: dict[int, ProbeReport], layer: str, metric: str = PAPER_METRIC, k: int = 30) -> pd.DataFrame:
    """One layer's measures (%, MC, ME, P_SAME) at each probed step of `probe_during_training`."""
    rows = []
    for s, rep in reports.items():
        r = rep.table.loc[(layer, metric, k)]
        rows.append({"step": s, "DNN acc (%)": round(100 * r.dnn_acc, 2), "k-NN acc (%)": round(100 * r.knn_acc, 2),
                     "MC": round(r.MC, 4), "ME": round(r.ME, 4), "P_SAME": round(r.P_SAME, 4)})
    return pd.DataFrame(rows).set_index("step")
