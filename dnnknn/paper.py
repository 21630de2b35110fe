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
from .metrics import spread
from .names import PAPER_K, PAPER_METRIC, name
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


# The step each MNIST number of the paper was read at, from the authors' files (CIFAR: the last, 50,000).
# Figure 1's MNIST row, section 4.1's 4.44% and Table 2: runs with LAST_STEP = 501 (`examples/train/
# train_simple.ini` at b84f959 and 501a6cb), plotted to step 500 (`plots/knn_accuracy_plots.py` at 48646ef,
# lines 85-86), Table 2 read at ckpt-500 (`examples/test/test_simple.ini` at b5e7428). Figures 3 and 4 and
# section 4.3's numbers: 1,000-step runs (`plots/ma_md_scores.py`, `plots/psame_plots.py` at 48646ef).
MNIST_STEP = {"Figure 1": 500, "section 4.1": 500, "Table 2": 500, "Figure 3": 1000, "Figure 4": 1000,
              "section 4.3": 1000, "Figure 2": 1000}
STEP_SOURCE = {500: "`train_simple.ini` at b84f959 / 501a6cb (LAST_STEP = 501), `test_simple.ini` at b5e7428 (ckpt-500)",
               1000: "`plots/ma_md_scores.py` and `plots/psame_plots.py` at 48646ef (`*_steps_1000` runs)"}


def paper_step(dataset: str, where: str) -> int | None:
    """The step the paper's number at `where` ("Figure 1", "section 4.1", "Table 2", ...) was read at
    on `dataset`: MNIST's from MNIST_STEP, None (the last step) elsewhere."""
    if dataset not in ("mnist",):
        return None
    return next((s for w, s in MNIST_STEP.items() if where.startswith(w)), None)


# Figure 2 as the authors plotted it: k-NN test accuracy (%) by layer for k = 1, 5, 30, 100, and the DNN's,
# typed from `plots/lenet_knn_layer_plots.py` and `plots/wrn_knn_layer_plots.py` at 48646ef (their
# second CIFAR panel is CIFAR-100, mislabelled 'cifar10' in a comment there). The layers in our names.
FIGURE2_SOURCE = {"lenet": "`plots/lenet_knn_layer_plots.py` at 48646ef",
                  "wrn": "`plots/wrn_knn_layer_plots.py` at 48646ef"}
FIGURE2_LAYERS = {"lenet": ("input", "conv1", "pool1", "conv2", "pool2", "embedding"),
                  "wrn": ("input", "init_conv", *(f"unit_{g}_{i}" for g in (1, 2, 3) for i in range(4)), "embedding")}
# The authors' plot labels its Wide-ResNet units from 1 (unit_1_1 ... unit_3_4), and so does the paper's
# text ("unit_2_2"); their model's scopes, and ours, count from 0 (`lib/models/resnet_model.py` at 48646ef)
PAPER_UNIT = {f"unit_{g}_{i + 1}": f"unit_{g}_{i}" for g in (1, 2, 3) for i in range(4)}  # paper -> ours
FIGURE2 = {  # (model, dataset): ({k: accuracies by layer}, DNN accuracy)
    ("lenet", "mnist"): ({1: [11.48, 72.96, 66.98, 97.66, 97.62, 99.27], 5: [12.83, 75.25, 69.8, 97.76, 97.52, 99.22],
                          30: [13.86, 73.37, 70.18, 97, 96.88, 99.06], 100: [15.14, 69.76, 67.68, 96.06, 95.84, 98.94]},
                         98.84),
    ("lenet", "cifar10"): ({1: [16.85, 42.74, 42.93, 58.98, 58.69, 83.09], 5: [18.8, 45.27, 45.37, 62.78, 62.53, 83.38],
                            30: [22.57, 47.7, 48.19, 63.73, 63.4, 83.49], 100: [24.42, 46.45, 46.77, 61.92, 62.05, 83.28]},
                           84.75),
    ("lenet", "cifar100"): ({1: [2.9, 20.26, 20.31, 32.11, 32.09, 51.87], 5: [3.29, 18.98, 19.28, 31.9, 32.27, 52.44],
                             30: [4.63, 20.9, 21.51, 33.96, 34.1, 52.2], 100: [5.54, 19.98, 20.61, 31.86, 32.14, 52.71]},
                            53.35),
    ("wrn", "mnist"): ({1: [17.39, 54.21, 87.21, 94.71, 96.69, 97.53, 98.33, 99.06, 99.17, 99.35, 99.35, 99.29, 99.26, 99.27, 99.28],
                        5: [20.53, 56.89, 87.94, 95.02, 96.82, 97.74, 98.4, 99.04, 99.31, 99.45, 99.47, 99.5, 99.45, 99.45, 99.44],
                        30: [21.98, 59.04, 85.66, 93.73, 96.04, 97.02, 98.08, 98.79, 99.15, 99.36, 99.41, 99.49, 99.42, 99.46, 99.44],
                        100: [22.71, 57.39, 82.21, 91.91, 94.79, 96.32, 97.58, 98.57, 98.98, 99.22, 99.37, 99.44, 99.46, 99.47, 99.42]},
                       99.31),
    ("wrn", "cifar10"): ({1: [18.35, 34.36, 45.35, 48.06, 52.24, 54.11, 59.52, 65.37, 70.1, 73.26, 84.66, 94.53, 95.14, 95.12, 95.13],
                          5: [20.78, 37.28, 47.8, 50.88, 55, 57.17, 62.57, 68.77, 73.89, 77.03, 86.99, 94.6, 95.17, 95.21, 95.19],
                          30: [24.62, 39.8, 49.34, 51.99, 54.77, 57.6, 63.1, 69.26, 74.42, 77.32, 86.88, 94.48, 95.2, 95.3, 95.2],
                          100: [25.92, 38.45, 47.18, 49.91, 52.89, 54.96, 60.74, 66.83, 72.33, 75.38, 85.83, 94.25, 95.17, 95.25, 95.18]},
                         95.2),
    ("wrn", "cifar100"): ({1: [3.79, 13.27, 21.92, 26.1, 29.59, 31.51, 34.69, 39.65, 42.85, 44.11, 51.4, 67.13, 77.36, 77.98, 78.69],
                           5: [3.9, 12.86, 21, 25.34, 28.57, 29.73, 34.08, 39.04, 42.35, 44.39, 52.61, 69.48, 77.72, 77.82, 78.91],
                           30: [5.37, 14.82, 22.55, 27.09, 30.45, 32.36, 35.92, 40.98, 44.37, 46.74, 54.58, 71.1, 78.01, 77.9, 78.88],
                           100: [6.29, 14.63, 21.47, 25.31, 28.94, 30.29, 33.88, 39.02, 42.09, 44.27, 52.55, 69.79, 77.43, 77.57, 78.89]},
                          78.85),
}


def figure2(model: str, dataset: str):
    """The authors' Figure 2 panel as a long table (layer, k, knn_acc in %), and its DNN accuracy (%);
    (None, None) where they plotted none."""
    if (model, dataset) not in FIGURE2:
        return None, None
    by_k, dnn = FIGURE2[(model, dataset)]
    rows = [{"layer": layer, "k": k, "knn_acc": v} for k, vals in by_k.items()
            for layer, v in zip(FIGURE2_LAYERS[model], vals)]
    return pd.DataFrame(rows), dnn


def _quick_dataset(dataset: str) -> str | None:
    return "mnist5k" if dataset == "mnist" else None  # no CIFAR offline


@dataclass(frozen=True)
class Agreement:
    """The one rule by which a value of ours agrees with a number the paper prints (claims.RULE)."""
    held: bool | None  # None: no defined value of ours
    mean: float
    std: float
    n: int
    tol: float
    paper: float

    @property
    def diff(self) -> float:
        return abs(self.mean - self.paper)

    def text(self, digits: int, short: bool = False) -> str:
        """'yes (|difference| 0.0002 ≤ 0.0004)', 'no (...)' or '—'; short: 'yes (0.0002 ≤ 0.0004)'."""
        if self.held is None:
            return "—"
        why = diff_text(self.diff, self.tol, digits)
        return f"{'yes' if self.held else 'no'} ({why.removeprefix('|difference| ') if short else why})"


def diff_text(diff: float, tol: float, digits: int) -> str:
    """'|difference| 0.0006 > 0.0004', with digits added until the two differ ('0.2600 > 0.2596')."""
    e = digits
    while f"{diff:.{e}f}" == f"{tol:.{e}f}" and e < digits + 4:
        e += 1
    return f"|difference| {diff:.{e}f} {'≤' if diff <= tol + 1e-12 else '>'} {tol:.{e}f}"


def agrees(st: Stated, values) -> Agreement:
    """|mean − paper| ≤ 2·std + u over our defined values (u: the paper's printing precision; with
    one run, u alone)."""
    mean, std, n = spread(values)
    if n == 0:
        return Agreement(None, mean, std, n, float("nan"), st.value)
    tol = (2 * std if n > 1 else 0.0) + st.precision
    return Agreement(abs(mean - st.value) <= tol + 1e-12, mean, std, n, tol, st.value)


def _row(run, split="test", step=None):
    return run.at(step, split=split, k=PAPER_K, metric=PAPER_METRIC)


# Per-run quantities (the paper's k and metric) at `step` (None: the last evaluation): name -> function
QUANTITIES = {
    "DNN test acc (%)": lambda r, step=None: 100 * _row(r, step=step).dnn_acc,
    "k-NN test acc (%)": lambda r, step=None: 100 * _row(r, step=step).knn_acc,
    "k-NN − DNN (%)": lambda r, step=None: 100 * (_row(r, step=step).knn_acc - _row(r, step=step).dnn_acc),
    "|k-NN − DNN| (%)": lambda r, step=None: 100 * abs(_row(r, step=step).knn_acc - _row(r, step=step).dnn_acc),
    "MC": lambda r, step=None: _row(r, step=step).MC,
    "ME": lambda r, step=None: _row(r, step=step).ME,
    "P_SAME": lambda r, step=None: _row(r, step=step).P_SAME,
    "DNN generalisation gap (%)": lambda r, step=None: report.generalization_gaps(r, step=step)[0],
    "k-NN generalisation gap (%)": lambda r, step=None: report.generalization_gaps(r, step=step)[1],
    "DNN random-label training accuracy (%)": lambda r, step=None: 100 * _row(r, "train", step).dnn_acc,
    "k-NN random-label training accuracy (%)": lambda r, step=None: 100 * _row(r, "train", step).knn_acc,
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
    return "quick" + ("" if prec == "fp32" else f" ({prec})")


@dataclass
class Judged:
    """One number the paper prints, and ours at the step the paper read it (`step`; None: the last)."""
    model: str
    dataset: str  # the one the paper names (our runs may be its stand-in's: `runs[i].config.dataset`)
    quantity: str
    stated: Stated
    step: int | None
    runs: list
    values: list
    agreement: Agreement
    kind: str = "main"  # experiments.seed_runs's: "raw" for the raw-pixel runs

    @property
    def data(self) -> str:
        return experiments.dataset_name(self.dataset, self.runs)


def judge(runs_of, model: str, dataset: str, quantity: str, st: Stated, kind: str | None = None) -> Judged:
    """Our runs' values of `quantity` at the paper's step, by the rule (`agrees`). runs_of(model,
    dataset, kind): the runs (`experiments.seed_runs` of a profile). Table 2's MNIST cells read the
    authors' 500-step runs (`experiments.table2_config`), the rest the main runs."""
    step = paper_step(dataset, st.where)
    kind = kind or ("random" if "random-label" in quantity else
                    "table2" if "generalisation" in quantity and step == experiments.AUTHORS_MNIST_STEP else "main")
    runs = runs_of(model, dataset, kind)
    values = [QUANTITIES[quantity](r, step if kind != "random" else None) for r in runs]
    return Judged(model, dataset, quantity, st, step, runs, values, agrees(st, values), kind)


def table2_stated():
    """(model, dataset, quantity, Stated) for Table 2's cells."""
    for (model, d), printed in TABLE2.items():
        for who, v in zip(("DNN", "k-NN"), printed):
            yield model, d, f"{who} generalisation gap (%)", Stated(f"{v:.1f}", "Table 2")


def stated_judged(full: Params) -> list[Judged]:
    """Every number in the paper's text and Table 2, judged: the rows page 09 and the claims page share.
    A value the paper states for a model across datasets is judged on each dataset run here; LeNet's
    CIFAR-10 values also on the raw-pixel run, as the authors trained it, where it is here."""
    def runs_of(m, d, kind):
        return seed_runs(full, m, d, kind)
    out = []
    for model, dataset, quantity, st in [*stated_rows(), *table2_stated()]:
        for d in [dataset] if dataset else ["mnist", "cifar10", "cifar100"]:
            j = judge(runs_of, model, d, quantity, st)
            if dataset or j.runs:
                out.append(j)
            raw = judge(runs_of, model, d, quantity, st, "raw") if (model, d) == ("lenet", "cifar10") else None
            if raw is not None and raw.runs:
                out.append(raw)
    return out


def _step_text(step: int | None) -> str:
    return "last" if step is None else f"{step:,}"


def side_by_side(quick: Params, full: Params, where: str = "text") -> pd.DataFrame:
    """The numbers the paper prints in its text (sections 4.1, 4.3, 4.4; where="Table 2": Table 2's),
    ours beside them at the step the paper read them at: the paper profile as mean ± std over its
    seeds, whether it agrees by the claims page's rule, and where the paper's step is not our last
    one, ours at the last step too."""
    quick1 = dataclasses.replace(quick, n_runs=1)
    rows = []
    for j in stated_judged(full):
        if (j.stated.where == "Table 2") != (where == "Table 2"):
            continue
        d, q = digits(j.quantity), j.quantity
        last = [QUANTITIES[q](r) for r in seed_runs(full, j.model, j.dataset, "main")] if j.step else []
        kind = "random" if "random-label" in q else "main"
        qruns = seed_runs(quick1, j.model, _quick_dataset(j.dataset), kind)
        pixels = ", raw pixels" if j.kind == "raw" else ""
        rows.append({"quantity": f"{name(j.model)}, {j.data}{pixels}: {q}", "paper": j.stated.text, "where": j.stated.where,
                     "step read": _step_text(j.step),
                     "ours there (mean ± std)": report.fmt_spread(j.values, d),
                     "agrees (the rule)": j.agreement.text(d, short=True),
                     "ours at our last step": report.fmt_spread(last, d) if j.step else "(the same)",
                     f"{_quick_column(quick)}, 1 run": report.fmt_spread([QUANTITIES[q](r) for r in qruns], d)
                     if _quick_dataset(j.dataset) else "no such data offline"})
    return pd.DataFrame(rows).set_index("quantity")


def seed_summary(full: Params, dataset: str = "mnist", models=("mlp640", "lenet"), legacy: bool = True) -> pd.DataFrame:
    """Every measure at the end of training (k = 30, L1), mean ± std over the paper profile's
    seeds, with the data the runs trained on where a stand-in's runs are among them; with `legacy`,
    the same for the runs dnnknn 0.2 made (`profiles.LEGACY_VARIANT`) beside them. Set beside the
    paper's values, and judged, in `side_by_side` at the paper's steps."""
    rows = []
    for m in models:
        runs = seed_runs(full, m, dataset)
        old = seed_runs(full, m, dataset, "legacy") if legacy else []
        for q, fn in QUANTITIES.items():
            if "random-label" in q:
                continue
            row = {"model": name(m), "quantity": q, "data": experiments.dataset_name(dataset, runs),
                   "ours (mean ± std)": report.fmt_spread([fn(r) for r in runs], digits(q))}
            if legacy:
                row[f"{LEGACY_VARIANT}: ours"] = report.fmt_spread([fn(r) for r in old], digits(q))
            rows.append(row)
    table = pd.DataFrame(rows).set_index(["model", "quantity"])
    return table if (table.data != name(dataset)).any() else table.drop(columns="data")  # named where it differs


def gap_sign_note(full: Params, model: str = "mlp640") -> str:
    """One sentence: the sign of our k-NN − DNN on each dataset, which the paper does not give."""
    parts = []
    for d in ("mnist", "cifar10"):
        runs = seed_runs(full, model, d)
        if runs:
            mean = spread([QUANTITIES["k-NN − DNN (%)"](r) for r in runs])[0]
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
            for r in seed_runs(full, m, d) + (seed_runs(full, m, d, "table2") if d == "mnist" else []):
                wall, ev = r.meta["wall_time_s"], r.meta.get("eval_time_s")
                train_s = wall - ev if ev is not None else None
                devices.add(r.meta["device_name"])
                rows.append({"run": r.key, "model": name(m), "dataset": name(r.config.dataset), "seed": r.config.seed,
                             "wall (min)": f"{wall / 60:.1f}", "evaluating (min)": "—" if ev is None else f"{ev / 60:.1f}",
                             "training (img/s)": "—" if not train_s else
                             f"{r.config.steps * r.config.batch_size / train_s:,.0f}"})
    table = pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame({"run": [NOT_RUN]}).set_index("run")
    return table, ", ".join(sorted(devices)) or NOT_RUN


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
