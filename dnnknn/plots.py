"""Matplotlib figures in the paper's colours: DNN black, k-NN red; MC blue, ME red.

Each `*_grid` function draws one panel per (row, column) from a dict of runs (None = not run) and
returns the figure; the caller captions it with what the runs were (`report.describe`).
"""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import cycler

from .names import PAPER_K, PAPER_METRIC, STAND_INS, name  # noqa: F401 - plots.name: the pages' name for a model or dataset
from .profiles import NOT_RUN

DNN, KNN, MC, ME = "black", "tab:red", "tab:blue", "tab:red"
LAYER_K_COLOURS = {1: "tab:blue", 5: "tab:orange", 30: "tab:red", 100: "tab:green"}


# seaborn 0.13's set_theme(style="whitegrid", context="notebook", font_scale=0.9), written out (the book's
# list of choices says why)
DEEP = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]
THEME = {"axes.axisbelow": True, "axes.edgecolor": ".8", "axes.grid": True, "axes.labelcolor": ".15",
         "axes.labelsize": 10.8, "axes.linewidth": 1.25, "axes.prop_cycle": cycler(color=DEEP),
         "axes.titlesize": 10.8, "font.size": 10.8, "grid.color": ".8", "grid.linewidth": 1.0,
         "font.sans-serif": ["Arial", "DejaVu Sans", "Liberation Sans", "Bitstream Vera Sans", "sans-serif"],
         "legend.fontsize": 9.9, "legend.title_fontsize": 10.8, "lines.solid_capstyle": "round",
         "patch.edgecolor": "w", "patch.force_edgecolor": True, "text.color": ".15",
         "xtick.bottom": False, "xtick.color": ".15", "xtick.labelsize": 9.9, "xtick.major.size": 6.0,
         "xtick.major.width": 1.25, "xtick.minor.size": 4.0, "xtick.minor.width": 1.0,
         "ytick.left": False, "ytick.color": ".15", "ytick.labelsize": 9.9, "ytick.major.size": 6.0,
         "ytick.major.width": 1.25, "ytick.minor.size": 4.0, "ytick.minor.width": 1.0}


def theme():
    plt.rcParams.update(THEME)


def grid(rows, cols, panel, runs: dict, height=2.6, width=None, sharey=True, legend=True, missing=None,
         title=None):
    """Call panel(ax, run, row, col) for each cell (rows: models, columns: datasets, as in the paper);
    a cell without a run says so, and with `missing(row, col)` (e.g. `report.missing_text`) what
    would fill it. width: of a panel, by default such that the figure fills the book's width (7 in),
    with at least 2.3 in per panel; title(row, col): a panel's title (default "column — row")."""
    theme()
    width = width or max(2.3, 7.0 / len(cols))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(width * len(cols), height * len(rows)),
                             squeeze=False, sharey=sharey)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            run = runs.get((r, c))
            if run is None:
                text = (missing(r, c) if missing else NOT_RUN).replace("`", "")
                ax.text(0.5, 0.5, textwrap.fill(text, 34), ha="center", va="center", transform=ax.transAxes,
                        color="dimgrey", fontsize=8, wrap=True)
                # the text stays clear of ticks; hidden, not removed: set_yticks([]) on an axis
                # shared with drawn panels (sharey) would take their ticks and grid lines too
                ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)
                ax.grid(False)
            else:
                panel(ax, run, r, c)
            stood_in = run is not None and isinstance(c, str) and STAND_INS.get(c) == run.config.dataset
            col = name(run.config.dataset if stood_in else c)  # a stand-in's panel names the copy
            text = title(r, c) if title else f"{col} — {name(r)}" if isinstance(r, str) else col
            ax.set_title(textwrap.fill(text, int(11 * width)), fontsize=10)  # ~11 characters an inch
    if legend:
        handles, labels = [], []
        for ax in axes.flat:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        if handles:
            ncol = min(len(labels), 4)
            fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 * -(-len(labels) // ncol) / fig.get_figheight()))
            fig.legend(handles, labels, loc="upper center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 1.0))
            return fig
    fig.tight_layout()
    return fig


def accuracy_panel(split="test", k=PAPER_K, metric=PAPER_METRIC, colours=(DNN, KNN), percent=True):
    def panel(ax, run, *_):
        t = run.table(split, k=k, metric=metric)
        s = 100 if percent else 1
        ax.plot(t.step, s * t.dnn_acc, color=colours[0], marker=".", label="DNN")
        ax.plot(t.step, s * t.knn_acc, color=colours[1], marker=".", label=f"k-NN (k={k}, {metric.upper()})")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{split} accuracy (%)")
    return panel


def mc_me_panel(split="test", k=PAPER_K, metric=PAPER_METRIC, me_if_undefined=None):
    def panel(ax, run, *_):
        t = run.table(split, k=k, metric=metric, me_if_undefined=me_if_undefined)
        ax.plot(t.step, t.MC, color=MC, marker=".", label="MC")
        ax.plot(t.step, t.ME, color=ME, marker=".", label="ME")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"MC, ME ({split} set)")
        ax.set_ylim(-0.02, 1.02)
    return panel


def p_same_panel(splits=("test",), k=PAPER_K, metric=PAPER_METRIC):
    colours = {"test": "tab:purple", "train": "tab:green"}

    def panel(ax, run, *_):
        for split in splits:
            t = run.table(split, k=k, metric=metric)
            ax.plot(t.step, t.P_SAME, color=colours[split], marker=".", label=f"P_SAME ({split})")
        ax.set_xlabel("training step")
        ax.set_ylabel("P_SAME")
        ax.set_ylim(-0.02, 1.02)
    return panel


def layers_panel(ks=(1, 5, 30, 100), metric=PAPER_METRIC, authors: bool = True, inputs: bool = True):
    """Figure 2: k-NN test accuracy by layer at the last step (dots) and the DNN's (dashed). From the
    input images (globally average pooled, computed from the data when it is on disk) to the
    embedding; with `authors`, the authors' plotted values for the same network and dataset (open
    rings, dotted DNN; `paper.FIGURE2`)."""
    from . import paper, probing

    def panel(ax, run, model, dataset):
        last = run.last_step(split="test", metric=metric, pca=0)
        order = [layer for layer in run.config.probe_layers if layer in set(last.layer)]
        theirs, their_dnn = paper.figure2(model, dataset) if authors else (None, None)
        c = run.config
        first = probing.input_knn(c.dataset, tuple(ks), metric, c.pixels, c.limit) if inputs else None
        axis = (["input"] if first or theirs is not None else []) + order
        x = {layer: i for i, layer in enumerate(axis)}
        for k in ks:
            acc = last[last.k == k].set_index("layer").knn_acc.reindex(order)
            pts = ([100 * first[k]] if first else []) + list(100 * acc.values)
            ax.plot([x[a] for a in (["input"] if first else []) + order], pts, "o-", lw=0.8,
                    color=LAYER_K_COLOURS.get(k), label=f"k-NN k={k}", ms=4)
            if theirs is not None:
                t = theirs[(theirs.k == k) & theirs.layer.isin(list(x))]
                ax.plot([x[a] for a in t.layer], t.knn_acc, "o", mfc="none", color=LAYER_K_COLOURS.get(k), ms=6,
                        label="the authors' values (rings)" if k == ks[0] else None)
        ax.axhline(100 * last.dnn_acc.iloc[0], color=DNN, ls="--", label="DNN")
        if their_dnn is not None:
            ax.axhline(their_dnn, color="grey", ls=":", label="the authors' DNN")
        ax.set_xticks(range(len(axis)), axis, rotation=70, fontsize=7)
        ax.set_ylabel("test accuracy (%)")
    return panel
