"""What the k-NN sees: the recorded nearest training images of a few test images (`RunConfig.neighbour_images`).

`cases(run, step)` sorts the recorded test images of one evaluation into the DNN and the k-NN agreeing
and right, agreeing and wrong, and disagreeing; `figure(...)` draws chosen cases, each test image
beside its five nearest training images with their labels and distances; `first_distance(run)` is
the distance to the nearest training image at every evaluation. Everything comes from the stored
records and the dataset's images: no model is needed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .train import neighbour_key, pred_key

CASES = ("agree, right", "agree, wrong", "disagree")
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CLASS_NAMES = {"cifar10": _CIFAR10, "cifar10-jpeg": _CIFAR10}  # label -> name, where digits would not say it


def _knn_key(run, step: int, k: int = 30) -> str:
    return pred_key(step, "test", "embedding", run.config.metrics[0], k, 0)


def cases(run, step: int, k: int = 30) -> pd.DataFrame:
    """One row per recorded test image at `step`: its index, label, the DNN's and the k-NN's
    predictions, which case it is, and its neighbours' indices and distances (nearest first)."""
    p = run.predictions()
    q = p["neighbours/queries"].astype(int)
    y, dnn, knn = p["labels/test"][q], p[pred_key(step, "test")][q], p[_knn_key(run, step, k)][q]
    case = np.where(dnn != knn, CASES[2], np.where(dnn == y, CASES[0], CASES[1]))
    return pd.DataFrame({"test_index": q, "label": y, "dnn": dnn, "knn": knn, "case": case,
                         "neighbours": list(p[neighbour_key(step, "index")].astype(int)),
                         "distances": list(p[neighbour_key(step, "distance")])})


def pick(table: pd.DataFrame, per_case: int = 2) -> pd.DataFrame:
    """`per_case` images of each case, of different labels where the case has them (a test set
    stored class by class, as an image folder is, would otherwise show one class), in their
    recorded order."""
    def some(t):
        return t.iloc[np.argsort(t.groupby("label").cumcount().to_numpy(), kind="stable")].head(per_case)
    return pd.concat([some(table[table.case == c]) for c in CASES])


def first_distance(run) -> pd.DataFrame:
    """Mean distance from the recorded test images to their nearest training image, by step and case."""
    rows = []
    for step in run.config.eval_steps:
        t = cases(run, step)
        for c in CASES:
            d = [float(x[0]) for x in t[t.case == c].distances]
            rows.append({"step": step, "case": c, "distance": np.mean(d) if d else np.nan, "images": len(d)})
    return pd.DataFrame(rows)


def _show(ax, img: np.ndarray):
    """A standardised (C, H, W) image, scaled to its own range."""
    x = img.transpose(1, 2, 0) if img.shape[0] == 3 else img[0]
    x = (x - x.min()) / max(float(x.max() - x.min()), 1e-6)
    ax.imshow(x, cmap="gray" if x.ndim == 2 else None, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def figure(chosen: pd.DataFrame, x_train, x_test, y_train, classes=None, title: str = ""):
    """Rows: test image, then its five nearest training images, with labels and distances."""
    import matplotlib.pyplot as plt

    n = max(len(chosen), 1)
    k = len(chosen.neighbours.iloc[0]) if len(chosen) else 5
    wide = 1.35 if classes else 1.15  # class names are longer than digits
    fig, axes = plt.subplots(n, k + 1, figsize=(wide * (k + 1), 1.5 * n), squeeze=False)
    names = (lambda c: classes[c]) if classes else str
    for i, (_, r) in enumerate(chosen.iterrows()):
        _show(axes[i, 0], np.asarray(x_test[r.test_index]))
        axes[i, 0].set_title(f"{r.case}: label {names(r.label)}\nDNN {names(r.dnn)}, k-NN {names(r.knn)}",
                             fontsize=6.5, fontweight="bold")
        for j, (idx, d) in enumerate(zip(r.neighbours, r.distances)):
            ax = axes[i, j + 1]
            _show(ax, np.asarray(x_train[idx]))
            ax.set_title(f"{names(int(y_train[idx]))}, d = {d:.2f}", fontsize=6.5,
                         color="black" if int(y_train[idx]) == r.label else "tab:red")
    for ax in axes[len(chosen):].flat:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def shown_settings(runs: dict, datasets, models, every_model, at_most: int = 2) -> list[tuple[str, str]]:
    """The (model, dataset) pairs the page shows: per dataset, the first of `models` with a run
    (else of `every_model`); the first `at_most` datasets that have one."""
    order = list(dict.fromkeys((*models, *every_model)))
    out = []
    for d in datasets:
        m = next((m for m in order if runs.get((m, d)) is not None), None)
        if m:
            out.append((m, d))
    return out[:at_most]


def page_items(P) -> dict:
    """What the 'what the k-NN sees' page glues, by name: for the first two datasets with a run, the
    recorded neighbours at the first and last step (figures, and the count of each case), the
    distance to the nearest training image by step for every network, and what the runs were.
    Every name is there, a placeholder where there is no run or no images."""
    import dataclasses

    from . import experiments, plots, profiles, report
    from .data import load_dataset
    from .errors import DataNotFoundError

    everyone = dataclasses.replace(P, models=tuple(profiles.PAPER["models"]))  # the same runs as the other pages
    runs, cfgs = experiments.main_runs(everyone)
    shown = shown_settings(runs, P.datasets, P.models, everyone.models)
    items, notes = {}, []
    for i, suffix in enumerate(("", "_2")):
        if i >= len(shown):
            none = profiles.NOT_RUN if i == 0 else "no second dataset with a run in this profile"
            for fig in ("fig_nn_start", "fig_nn_end", "fig_nn_distance"):
                items[fig + suffix] = plots.placeholder(none)
                items[f"{fig}{suffix}_counts"] = "no run here"
            items["nn_src" + suffix] = items["nn_shown" + suffix] = "no run here"
            continue
        m, d = shown[i]
        run = runs[(m, d)]
        trained_on = run.config.dataset  # a stand-in's own data (CIFAR-10's JPEG copy)
        items["nn_shown" + suffix] = f"{plots.name(m)} on {plots.name(trained_on)}"
        try:
            data = load_dataset(trained_on, P.data_dir, limit=run.config.limit)
        except DataNotFoundError as e:
            data = None
            notes.append(f"The images of {plots.name(trained_on)} are not on this machine ({e}), so its "
                         f"neighbours cannot be drawn.")
        for fig, step in (("fig_nn_start", 0), ("fig_nn_end", max(run.config.eval_steps))):
            table = cases(run, step)
            counts = table.case.value_counts()
            items[f"{fig}{suffix}_counts"] = ", ".join(f"{c}: {counts.get(c, 0)}" for c in CASES)
            items[fig + suffix] = plots.placeholder("the images are not on this machine") if data is None else figure(
                pick(table), data.x_train, data.x_test, data.y_train, classes=CLASS_NAMES.get(trained_on),
                title=f"{run.config.label()}, step {step}")
        # one dataset's runs, never its stand-in's too
        same = {mm: first_distance(r) for (mm, dd), r in runs.items()
                if r is not None and dd == d and r.config.dataset == trained_on}
        items["fig_nn_distance" + suffix] = plots.distance_figure(same, plots.name(trained_on), everyone.metric)
        items["nn_src" + suffix] = report.sources(everyone, {k: v for k, v in runs.items() if k[1] == d},
                                                  {k: v for k, v in cfgs.items() if k[1] == d})
    items["nn_notes"] = " ".join(notes) or "The images are read from the dataset the runs trained on."
    return items
