"""The numbers the paper states, and tables setting ours beside them (the book's last page).

Only the paper's values are typed here (from ../shared/paper/dnn-or-knn.md); every number of ours is
read from a run record.
"""
from __future__ import annotations

import pandas as pd

from . import experiments as ex
from .metrics import generalization_error
from .plots import name

TABLE1_ROWS = ["1", "1 + PCA", "5", "5 + PCA", "30", "30 + PCA", "150", "150 + PCA", "1000", "1000 + PCA"]
TABLE1 = {  # appendix B, Table 1: mean test accuracy (%) over 10 runs, Wide-ResNet-28-10
    ("cifar10", "l1"): [95.24, 95.25, 95.26, 95.23, 95.25, 95.20, 95.25, 95.20, 95.24, 95.19],
    ("cifar10", "l2"): [95.23, 95.24, 95.25, 95.24, 95.23, 95.22, 95.21, 95.21, 95.22, 95.22],
    ("cifar100", "l1"): [78.91, 78.87, 79.00, 78.96, 78.97, 78.97, 78.97, 78.96, 76.58, 71.38],
    ("cifar100", "l2"): [78.91, 78.85, 78.99, 78.97, 78.98, 78.95, 78.98, 78.94, 74.66, 70.41],
}
TABLE1_DNN = {"cifar10": 95.22, "cifar100": 78.99}
TABLE2 = {  # appendix C, Table 2: generalisation error (%), (DNN, k-NN)
    ("wrn", "mnist"): (0.6, 0.7), ("wrn", "cifar10"): (4.8, 4.8), ("wrn", "cifar100"): (21.1, 21.1),
    ("lenet", "mnist"): (0.3, 0.2), ("lenet", "cifar10"): (6.8, 7.9), ("lenet", "cifar100"): (39.1, 39.7),
    ("mlp640", "mnist"): (0.8, 0.4), ("mlp640", "cifar10"): (5.0, 4.9), ("mlp640", "cifar100"): (2.6, 5.3),
}
NOT_RUN = "not run here"


def _quick_dataset(dataset: str) -> str | None:
    return "mnist5k" if dataset == "mnist" else None  # no CIFAR offline


def _get(P: ex.Params, cfg):
    return P.get(cfg) if cfg is not None else None


def side_by_side(quick: ex.Params, full: ex.Params) -> pd.DataFrame:
    """The numbers in the paper's text (sections 4.1, 4.3, 4.4), ours beside them."""
    rows = []

    def add(what, paper, fn, model, dataset, kind="main"):
        cells = {}
        for label, P, d in (("paper profile", full, dataset), ("quick profile", quick, _quick_dataset(dataset))):
            if d is None:
                cells[label], cells[f"{label} run"] = NOT_RUN, "no such data offline"
                continue
            cfg = P.main_config(d, model) if kind == "main" else P.random_config(d, model)
            run = _get(P, cfg)
            cells[label] = fn(run) if run is not None else NOT_RUN
            cells[f"{label} run"] = (f"{run.key} ({cfg.label()}; {run.meta['device_name']})" if run is not None
                                     else cfg.label())
        rows.append({"quantity": what, "paper": paper, **cells})

    fin = lambda run, split="test": run.final(split=split, k=30, metric="l1")  # noqa: E731
    add("MLP-640, MNIST: |k-NN − DNN| test accuracy (%)", "4.44",
        lambda r: f"{100 * abs(fin(r).knn_acc - fin(r).dnn_acc):.2f}", "mlp640", "mnist")
    add("MLP-640, CIFAR-10: |k-NN − DNN| test accuracy (%)", "4.52",
        lambda r: f"{100 * abs(fin(r).knn_acc - fin(r).dnn_acc):.2f}", "mlp640", "cifar10")
    add("MLP-640, MNIST: MC", "≈ 0.997", lambda r: f"{fin(r).MC:.3f}", "mlp640", "mnist")
    add("LeNet, MNIST: ME", "≈ 0.8", lambda r: f"{fin(r).ME:.3f}", "lenet", "mnist")
    add("Wide-ResNet, CIFAR-10: MC", "0.999", lambda r: f"{fin(r).MC:.3f}", "wrn", "cifar10")
    add("Wide-ResNet, CIFAR-10: ME", "0.965", lambda r: f"{fin(r).ME:.3f}", "wrn", "cifar10")
    for d, v in (("mnist", "0.9998"), ("cifar10", "0.9971"), ("cifar100", "0.981")):
        add(f"Wide-ResNet, {name(d)}: P_SAME (test)", v, lambda r: f"{fin(r).P_SAME:.4f}", "wrn", d)
    for d, v in (("mnist", "100"), ("cifar10", "100"), ("cifar100", "99.972")):
        add(f"Wide-ResNet, {name(d)}, random labels: training accuracy (%)", v,
            lambda r: f"DNN {100 * fin(r, 'train').dnn_acc:.3f}, k-NN {100 * fin(r, 'train').knn_acc:.3f}",
            "wrn", d, kind="random")
    return pd.DataFrame(rows).set_index("quantity")


def table2_side_by_side(quick: ex.Params, full: ex.Params) -> pd.DataFrame:
    rows = []
    for (model, dataset), (p_dnn, p_knn) in TABLE2.items():
        row = {"model": name(model), "dataset": name(dataset), "paper DNN": p_dnn, "paper k-NN": p_knn}
        for label, P, d in (("paper profile", full, dataset), ("quick profile", quick, _quick_dataset(dataset))):
            run = _get(P, P.main_config(d, model)) if d else None
            if run is None:
                row[f"{label} DNN"] = row[f"{label} k-NN"] = NOT_RUN
                continue
            te, tr = run.final(split="test"), run.final(split="train")
            row[f"{label} DNN"] = round(100 * generalization_error(tr.dnn_acc, te.dnn_acc), 2)
            row[f"{label} k-NN"] = round(100 * generalization_error(tr.knn_acc, te.knn_acc), 2)
            row[f"{label} run"] = run.key
        rows.append(row)
    return pd.DataFrame(rows).set_index(["model", "dataset"]).fillna("")


def table1_side_by_side(full: ex.Params) -> pd.DataFrame:
    runs = {(d, s): _get(full, full.main_config(d, "wrn", s)) for d in ("cifar10", "cifar100")
            for s in range(full.n_runs)}
    ours = ex.robustness_table(runs)
    out = {}
    for (d, metric), values in TABLE1.items():
        out[(name(d), metric.upper(), "paper")] = values + [TABLE1_DNN[d]]
        out[(name(d), metric.upper(), "ours")] = list(ours[(name(d), metric.upper())])
    return pd.DataFrame(out, index=pd.Index(TABLE1_ROWS + ["DNN accuracy"], name="k"))
