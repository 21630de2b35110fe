"""The numbers the paper states, and tables setting ours beside them (the book's last page).

Only the paper's values are typed here (from ../shared/paper/dnn-or-knn.md); every number of ours is
read from a run record.
"""
from __future__ import annotations

import dataclasses

import pandas as pd

from . import report
from .plots import name
from .profiles import Params, seed_runs

TABLE1 = {  # appendix B, Table 1: mean test accuracy (%) over 10 runs, Wide-ResNet-28-10; rows as
    # report.robustness_table's: k = 1, 1 + PCA, 5, 5 + PCA, 30, 30 + PCA, 150, 150 + PCA, 1000, 1000 + PCA
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


def _quick_dataset(dataset: str) -> str | None:
    return "mnist5k" if dataset == "mnist" else None  # no CIFAR offline


def within(paper: float | None, values, width: float = 2.0) -> str:
    """Whether the paper's value lies within mean ± 2 std of ours: 'yes', 'no', or why not known."""
    mean, std, n = report.spread(values)
    if paper is None or n == 0:
        return "—"
    if n < 2:
        return "no spread (1 run)"
    inside = abs(paper - mean) <= width * std
    return "yes" if inside else f"no ({abs(paper - mean) / std:.1f} std away)" if std > 0 else "no (std 0)"


def _final(run, split="test"):
    return run.final(split=split, k=30, metric="l1")


# Per-run quantities (k = 30, L1, the last evaluation): name -> (function of a run, percent?)
QUANTITIES = {
    "DNN test acc (%)": lambda r: 100 * _final(r).dnn_acc,
    "k-NN test acc (%)": lambda r: 100 * _final(r).knn_acc,
    "k-NN − DNN (%)": lambda r: 100 * (_final(r).knn_acc - _final(r).dnn_acc),
    "|k-NN − DNN| (%)": lambda r: 100 * abs(_final(r).knn_acc - _final(r).dnn_acc),
    "MC": lambda r: _final(r).MC,
    "ME": lambda r: _final(r).ME,
    "P_SAME": lambda r: _final(r).P_SAME,
    "DNN generalisation gap (%)": lambda r: report.generalization_gaps(r)[0],
    "k-NN generalisation gap (%)": lambda r: report.generalization_gaps(r)[1],
}


def _quick_column(quick: Params) -> str:
    """'quick profile', with the precision its runs trained in when that is not fp32."""
    prec = quick.train_precision
    return "quick profile" + ("" if prec == "fp32" else f" ({prec})")


def side_by_side(quick: Params, full: Params) -> pd.DataFrame:
    """The numbers in the paper's text (sections 4.1, 4.3, 4.4), ours beside them: the paper
    profile as mean ± std over its seeds, with whether the paper's value lies within 2 std."""
    rows = []

    def add(what, paper_text, paper, quantity, model, dataset, kind="main"):
        fn = QUANTITIES[quantity] if isinstance(quantity, str) else quantity
        digits = 2 if "(%)" in what else 4
        runs = seed_runs(full, model, dataset, kind)
        vals = [fn(r) for r in runs]
        qruns = seed_runs(dataclasses.replace(quick, n_runs=1), model, _quick_dataset(dataset), kind)
        rows.append({"quantity": what, "paper": paper_text,
                     "paper profile (mean ± std over seeds)": report.fmt_spread(vals, digits),
                     "paper value within 2 std": within(paper, vals),
                     f"{_quick_column(quick)}, 1 run": report.fmt_spread([fn(r) for r in qruns], digits)
                     if _quick_dataset(dataset) else "no such data offline",
                     "paper-profile runs": ", ".join(r.key for r in runs) or full.how_to_fill(
                         full.main_config(dataset, model) if kind == "main" else full.random_config(dataset, model))})

    add("MLP-640, MNIST: |k-NN − DNN| test accuracy (%)", "4.44", 4.44, "|k-NN − DNN| (%)", "mlp640", "mnist")
    add("MLP-640, CIFAR-10: |k-NN − DNN| test accuracy (%)", "4.52", 4.52, "|k-NN − DNN| (%)", "mlp640", "cifar10")
    add("MLP-640, MNIST: MC", "≈ 0.997", 0.997, "MC", "mlp640", "mnist")
    add("LeNet, MNIST: ME", "≈ 0.8", 0.8, "ME", "lenet", "mnist")
    add("Wide-ResNet, CIFAR-10: MC", "0.999", 0.999, "MC", "wrn", "cifar10")
    add("Wide-ResNet, CIFAR-10: ME", "0.965", 0.965, "ME", "wrn", "cifar10")
    for d, v in (("mnist", 0.9998), ("cifar10", 0.9971), ("cifar100", 0.981)):
        add(f"Wide-ResNet, {name(d)}: P_SAME (test)", f"{v}", v, "P_SAME", "wrn", d)
    for d, v in (("mnist", 100.0), ("cifar10", 100.0), ("cifar100", 99.972)):
        add(f"Wide-ResNet, {name(d)}, random labels: DNN training accuracy (%)", f"{v:g}", v,
            lambda r: 100 * _final(r, "train").dnn_acc, "wrn", d, kind="random")
        add(f"Wide-ResNet, {name(d)}, random labels: k-NN training accuracy (%)", f"{v:g}", v,
            lambda r: 100 * _final(r, "train").knn_acc, "wrn", d, kind="random")
    return pd.DataFrame(rows).set_index("quantity")


def seed_summary(full: Params, dataset: str = "mnist", models=("mlp640", "lenet")) -> pd.DataFrame:
    """Every measure at the end of training (k = 30, L1), mean ± std over the paper profile's
    seeds, with the paper's value where it states one."""
    stated = {("mlp640", "|k-NN − DNN| (%)"): 4.44, ("mlp640", "MC"): 0.997, ("lenet", "ME"): 0.8}
    for (m, d), (g_dnn, g_knn) in TABLE2.items():
        if d == dataset:
            stated[(m, "DNN generalisation gap (%)")], stated[(m, "k-NN generalisation gap (%)")] = g_dnn, g_knn
    rows = []
    for m in models:
        runs = seed_runs(full, m, dataset)
        for q, fn in QUANTITIES.items():
            vals = [fn(r) for r in runs]
            paper = stated.get((m, q))
            rows.append({"model": name(m), "quantity": q, "ours (mean ± std)": report.fmt_spread(vals, 4 if "%" not in q else 2),
                         "paper": "—" if paper is None else f"{paper:g}", "paper value within 2 std": within(paper, vals)})
    return pd.DataFrame(rows).set_index(["model", "quantity"])


def table2_side_by_side(quick: Params, full: Params) -> pd.DataFrame:
    """Table 2 (generalisation gap, %): the paper's (DNN, k-NN) beside ours, mean ± std over seeds."""
    quick1 = dataclasses.replace(quick, n_runs=1)
    runs_of = {key: seed_runs(full, *key) for key in TABLE2}  # read once: each read verifies the files
    ours = report.generalization_table(runs_of)
    fast = report.generalization_table({key: seed_runs(quick1, key[0], _quick_dataset(key[1])) for key in TABLE2})
    rows = []
    for (model, dataset), (p_dnn, p_knn), (_, o), (_, q) in zip(TABLE2, TABLE2.values(), ours.iterrows(),
                                                               fast.iterrows()):
        runs = runs_of[(model, dataset)]
        row = {"model": name(model), "dataset": name(dataset)}
        for who, paper, i in (("DNN", p_dnn, 0), ("k-NN", p_knn, 1)):
            row[f"paper {who}"] = paper
            row[f"ours {who}"] = o[who]
            row[f"{who}: paper within 2 std"] = within(paper, [report.generalization_gaps(r)[i] for r in runs])
            row[f"{_quick_column(quick)} {who}"] = q[who] if _quick_dataset(dataset) else "no such data offline"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["model", "dataset"])


def table1_side_by_side(full: Params) -> pd.DataFrame:
    runs = {(d, s): full.get(full.main_config(d, "wrn", s)) for d in ("cifar10", "cifar100")
            for s in range(full.n_runs)}
    ours = report.robustness_table(runs)
    out = {}
    for (d, metric), values in TABLE1.items():
        out[(name(d), metric.upper(), "paper")] = values + [TABLE1_DNN[d]]
        out[(name(d), metric.upper(), "ours")] = list(ours[(name(d), metric.upper())])
    return pd.DataFrame(out, index=ours.index)
