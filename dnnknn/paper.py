"""The numbers the paper states, and tables setting ours beside them (the book's last page).

Only the paper's values are typed here (from ../shared/paper/dnn-or-knn.md); every number of ours is
read from a run record.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from . import experiments, report
from .experiments import seed_runs
from .plots import name
from .profiles import LEGACY_VARIANT, NOT_RUN, Params

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


@dataclass(frozen=True)
class Stated:
    """A number as the paper prints it ("4.44", "≈ 0.997"), and where."""
    text: str
    where: str

    @property
    def value(self) -> float:
        return float(self.text.lstrip("≈ "))

    @property
    def precision(self) -> float:
        """Half a unit of the last printed digit; a whole unit where the paper writes "≈"."""
        digits = len(self.text.split(".")[1]) if "." in self.text else 0
        return 10.0 ** -digits * (1.0 if self.text.startswith("≈") else 0.5)


# The numbers in the paper's text: (model, dataset, quantity) -> Stated. Dataset None: stated for
# the model across datasets (LeNet's "ME roughly around 0.8" for Figures 3 (d)-(f)).
STATED = {
    # "the difference between the k-NN and DNN accuracies": no sign given, so set beside |k-NN − DNN|
    ("mlp640", "mnist", "|k-NN − DNN| (%)"): Stated("4.44", "section 4.1"),
    ("mlp640", "cifar10", "|k-NN − DNN| (%)"): Stated("4.52", "section 4.1"),
    ("mlp640", "mnist", "MC"): Stated("≈ 0.997", "section 4.3"),
    ("lenet", None, "MC"): Stated("≈ 1.0", "section 4.3, Figures 3 (d)–(f)"),
    ("lenet", None, "ME"): Stated("≈ 0.8", "section 4.3, Figures 3 (d)–(f)"),
    ("wrn", "cifar10", "MC"): Stated("0.999", "section 4.3"),
    ("wrn", "cifar10", "ME"): Stated("0.965", "section 4.3"),
    ("wrn", "mnist", "P_SAME"): Stated("0.9998", "section 4.3"),
    ("wrn", "cifar10", "P_SAME"): Stated("0.9971", "section 4.3"),
    ("wrn", "cifar100", "P_SAME"): Stated("0.981", "section 4.3"),
    ("wrn", "mnist", "random-label training accuracy (%)"): Stated("100", "section 4.4"),
    ("wrn", "cifar10", "random-label training accuracy (%)"): Stated("100", "section 4.4"),
    ("wrn", "cifar100", "random-label training accuracy (%)"): Stated("99.972", "section 4.4"),
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


# Per-run quantities (k = 30, L1, the last evaluation): name -> function of a run
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
    "DNN random-label training accuracy (%)": lambda r: 100 * _final(r, "train").dnn_acc,
    "k-NN random-label training accuracy (%)": lambda r: 100 * _final(r, "train").knn_acc,
}


def digits(quantity: str) -> int:
    """Decimals shown for a quantity: 2 for percentages, 4 for probabilities."""
    return 2 if "(%)" in quantity else 4


def stated_rows():
    """(model, dataset, our quantity, Stated) for every number in the paper's text; the random-label
    accuracy is stated for the DNN and the k-NN alike."""
    for (model, dataset, q), st in STATED.items():
        for quantity in ([f"DNN {q}", f"k-NN {q}"] if q.startswith("random-label") else [q]):
            yield model, dataset, quantity, st


def _quick_column(quick: Params) -> str:
    """'quick profile', with the precision its runs trained in when that is not fp32."""
    prec = quick.train_precision
    return "quick profile" + ("" if prec == "fp32" else f" ({prec})")


def side_by_side(quick: Params, full: Params) -> pd.DataFrame:
    """The numbers in the paper's text (sections 4.1, 4.3, 4.4), ours beside them: the paper
    profile as mean ± std over its seeds, with whether the paper's value lies within 2 std. A value
    the paper states for a model across datasets is set beside our MNIST runs."""
    rows = []
    for model, dataset, quantity, st in stated_rows():
        ours_d = dataset or "mnist"
        kind = "random" if "random-label" in quantity else "main"
        fn = QUANTITIES[quantity]
        runs = seed_runs(full, model, ours_d, kind)
        vals = [fn(r) for r in runs]
        qruns = seed_runs(dataclasses.replace(quick, n_runs=1), model, _quick_dataset(ours_d), kind)
        ds = experiments.dataset_name(dataset, runs) if dataset else "all datasets (ours: MNIST)"
        rows.append({"quantity": f"{name(model)}, {ds}: {quantity}",
                     "paper": st.text, "where": st.where,
                     "paper profile (mean ± std over seeds)": report.fmt_spread(vals, digits(quantity)),
                     "paper value within 2 std": within(st.value, vals),
                     f"{_quick_column(quick)}, 1 run": report.fmt_spread([fn(r) for r in qruns], digits(quantity))
                     if _quick_dataset(ours_d) else "no such data offline",
                     "paper-profile runs": ", ".join(r.key for r in runs) or NOT_RUN})
    return pd.DataFrame(rows).set_index("quantity")


def seed_summary(full: Params, dataset: str = "mnist", models=("mlp640", "lenet"), legacy: bool = True) -> pd.DataFrame:
    """Every measure at the end of training (k = 30, L1), mean ± std over the paper profile's
    seeds, with the paper's value where it states one, and (where a stand-in's runs are among them)
    the data the runs trained on; with `legacy`, the same for the runs dnnknn 0.2 made
    (`profiles.LEGACY_VARIANT`) beside them."""
    stated = {(m, q): (st.value, st.text) for m, d, q, st in stated_rows() if d in (dataset, None)}
    for (m, d), (g_dnn, g_knn) in TABLE2.items():
        if d == dataset:
            stated[(m, "DNN generalisation gap (%)")] = (g_dnn, f"{g_dnn:.1f}")
            stated[(m, "k-NN generalisation gap (%)")] = (g_knn, f"{g_knn:.1f}")
    rows = []
    for m in models:
        runs = seed_runs(full, m, dataset)
        old = seed_runs(full, m, dataset, "legacy") if legacy else []
        for q, fn in QUANTITIES.items():
            if "random-label" in q:
                continue
            vals = [fn(r) for r in runs]
            paper, printed = stated.get((m, q), (None, "—"))
            row = {"model": name(m), "quantity": q, "data": experiments.dataset_name(dataset, runs),
                   "ours (mean ± std)": report.fmt_spread(vals, digits(q)),
                   "paper": printed, "paper value within 2 std": within(paper, vals)}
            if legacy:
                olds = [fn(r) for r in old]
                row[f"{LEGACY_VARIANT}: ours"] = report.fmt_spread(olds, digits(q))
                row[f"{LEGACY_VARIANT}: within 2 std"] = within(paper, olds)
            rows.append(row)
    table = pd.DataFrame(rows).set_index(["model", "quantity"])
    return table if (table.data != name(dataset)).any() else table.drop(columns="data")  # named where it differs


def gap_sign_note(full: Params, model: str = "mlp640") -> str:
    """One sentence: the sign of our k-NN − DNN on each dataset, which the paper does not give."""
    parts = []
    for d in ("mnist", "cifar10"):
        runs = seed_runs(full, model, d)
        if runs:
            mean = report.spread([QUANTITIES["k-NN − DNN (%)"](r) for r in runs])[0]
            side = "above the DNN" if mean > 0 else "below the DNN" if mean < 0 else "level with the DNN"
            parts.append(f"{side} on {experiments.dataset_name(d, runs)} ({mean:+.2f} points, mean of {len(runs)} "
                         f"run{'s' * (len(runs) > 1)})")
    lead = f"The paper gives {name(model)}'s difference between the k-NN and the DNN without its sign"
    return f"{lead}; our k-NN is {' and '.join(parts)}." if parts else f"{lead}; no run of ours here gives one."


def run_costs(full: Params, datasets=("mnist", "cifar10"), models=("mlp640", "lenet")) -> tuple[pd.DataFrame, str]:
    """Each paper-profile main run's cost as its meta.json recorded it: wall time, the part spent
    evaluating, and the training throughput (steps x batch / the rest of the wall time, which also
    holds start-up and data loading: a lower bound); and the devices the runs were made on, in words."""
    rows, devices = [], set()
    for d in datasets:
        for m in models:
            for r in seed_runs(full, m, d):
                wall, ev = r.meta["wall_time_s"], r.meta.get("eval_time_s")
                train_s = wall - ev if ev is not None else None
                devices.add(r.meta["device_name"])
                rows.append({"run": r.key, "model": name(m), "dataset": name(r.config.dataset), "seed": r.config.seed,
                             "wall (min)": f"{wall / 60:.1f}", "evaluating (min)": "—" if ev is None else f"{ev / 60:.1f}",
                             "training (img/s)": "—" if not train_s else
                             f"{r.config.steps * r.config.batch_size / train_s:,.0f}"})
    table = pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame({"run": [NOT_RUN]}).set_index("run")
    return table, ", ".join(sorted(devices)) or NOT_RUN


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
        row = {"model": name(model), "dataset": experiments.dataset_name(dataset, runs)}
        for who, paper, i in (("DNN", p_dnn, 0), ("k-NN", p_knn, 1)):
            row[f"paper {who}"] = f"{paper:.1f}"  # as printed
            row[f"ours {who}"] = o[who]
            row[f"{who}: paper within 2 std"] = within(paper, [report.generalization_gaps(r)[i] for r in runs])
            row[f"{_quick_column(quick)} {who}"] = q[who] if _quick_dataset(dataset) else "no such data offline"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["model", "dataset"])


def table1_side_by_side(full: Params) -> pd.DataFrame:
    out, index = {}, None
    for d in ("cifar10", "cifar100"):
        runs = seed_runs(full, "wrn", d)  # a dataset's own runs, else its stand-in's, never both
        ours = report.robustness_table({(d, r.config.seed): r for r in runs} or {(d, 0): None})
        index = ours.index
        for i, metric in enumerate(("l1", "l2")):
            printed = TABLE1[(d, metric)] + [TABLE1_DNN[d]]
            out[(name(d), metric.upper(), "paper")] = [f"{v:.2f}" for v in printed]  # as the paper prints them
            out[(experiments.dataset_name(d, runs), metric.upper(), "ours")] = list(ours.iloc[:, i])
    return pd.DataFrame(out, index=index)
