"""Figures in the paper's colours (DNN black, k-NN red; MC blue, ME red), drawn with seaborn.

Each `*_panel` draws one panel from one run or a list of runs (the seeds of one setting): a line
per quantity, the mean over the seeds with a band of ± one standard deviation when there are
several. `grid` lays panels out (rows: models, columns: datasets) from a dict of runs (None = not
run) and returns the figure; the caller captions it with what the runs were (`report.describe`).
"""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import pandas as pd

from .names import PAPER_K, PAPER_METRIC, STAND_INS, name, run_model_name, short_name  # noqa: F401 - plots.name: the pages' name for a model or dataset
from .profiles import NOT_RUN

DNN, KNN, MC, ME = "black", "tab:red", "tab:blue", "tab:red"
LAYER_K_COLOURS = {1: "tab:blue", 5: "tab:orange", 30: "tab:red", 100: "tab:green"}
MODEL_COLOURS = {"wrn": "tab:blue", "lenet": "tab:orange", "mlp640": "tab:green"}


def theme():
    import seaborn as sns  # here, not at import: a page without a figure does not load it (and scipy.stats)
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)


def as_runs(runs) -> list:
    """A panel's runs as a list: one run, or the seeds of one setting."""
    return [r for r in (runs if isinstance(runs, (list, tuple)) else [runs]) if r is not None]


def seeds_table(runs, split="test", **kw) -> pd.DataFrame:
    """`Run.table(split, **kw)` of each run, one below the other, with a `seed` column: the long
    table seaborn draws means and bands from."""
    return pd.concat([r.table(split, **kw).assign(seed=r.config.seed) for r in as_runs(runs)], ignore_index=True)


def line(ax, t: pd.DataFrame, y: str, colour, label: str, scale: float = 1.0, x: str = "step", **style):
    """The mean of `y` over the seeds in `t` by `x`, with a ± sd band when there are several."""
    import seaborn as sns
    n = t.seed.nunique()
    sns.lineplot(data=t.assign(value=scale * t[y]), x=x, y="value", ax=ax, color=colour, label=label,
                 errorbar="sd" if n > 1 else None, marker=style.pop("marker", "."), markeredgecolor=colour,
                 legend=False, **style)


def seeds_text(runs) -> str:
    """What a panel's lines are: 'seed 0', or 'n=3, mean ± sd' (over its seeds), and ', first 5,000
    images' for runs on a subset."""
    rs = as_runs(runs)
    lim = rs[0].config.limit  # a run on a subset says so beside its seed
    sub = f", first {lim[0]:,} images" if lim else ""
    return (f"seed {rs[0].config.seed}" if len(rs) == 1 else f"n={len(rs)}, mean ± sd") + sub


def grid(rows, cols, panel, runs: dict, height=2.6, width=None, sharey=True, legend=True, missing=None,
         title=None):
    """Call panel(ax, runs, row, col) for each cell (rows: models, columns: datasets, as in the paper),
    with the cell's run or list of runs (its seeds); a cell without a run says so, and with
    `missing(row, col)` (e.g. `report.missing_text`) what would fill it. A panel's title names its
    data, network and seeds. width: of a panel, by default such that the figure fills the book's
    width (7 in), with at least 2.3 in per panel; title(row, col): the title's first part
    (default "column — row", also where it returns None)."""
    theme()
    width = width or max(2.3, 7.0 / len(cols))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(width * len(cols), height * len(rows)),
                             squeeze=False, sharey=sharey)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            cell = as_runs(runs.get((r, c)))
            if not cell:
                text = (missing(r, c) if missing else NOT_RUN).replace("`", "")
                ax.text(0.5, 0.5, textwrap.fill(text, 34), ha="center", va="center", transform=ax.transAxes,
                        color="dimgrey", fontsize=8, wrap=True)
                # the text stays clear of ticks; hidden, not removed: set_yticks([]) on an axis
                # shared with drawn panels (sharey) would take their ticks and grid lines too
                ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)
                ax.grid(False)
            else:
                panel(ax, runs[(r, c)], r, c)
            stood_in = cell and isinstance(c, str) and STAND_INS.get(c) == cell[0].config.dataset
            col = name(cell[0].config.dataset if stood_in else c)  # a stand-in's panel names the copy
            row = run_model_name(cell[0]) if cell and r == "wrn" else name(r) if isinstance(r, str) else r
            text = (title and title(r, c)) or (f"{col} — {row}" if isinstance(r, str) else col)
            text += f" ({seeds_text(cell)})" if cell else ""
            ax.set_title(textwrap.fill(text, int(11 * width)), fontsize=10)  # ~11 characters an inch
    if legend:
        handles, labels = [], []
        for ax in axes.flat:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels and not lab.startswith("_"):
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
    """Figure 1 (and 5 (a)): DNN and k-NN accuracy by training step."""
    def panel(ax, runs, *_):
        t = seeds_table(runs, split, k=k, metric=metric)
        s = 100 if percent else 1
        line(ax, t, "dnn_acc", colours[0], "DNN", s)
        line(ax, t, "knn_acc", colours[1], f"k-NN (k={k}, {metric.upper()})", s)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{split} accuracy (%)")
    return panel


def mc_me_panel(split="test", k=PAPER_K, metric=PAPER_METRIC, me_if_undefined=None):
    """Figure 3: MC and ME by training step."""
    def panel(ax, runs, *_):
        t = seeds_table(runs, split, k=k, metric=metric, me_if_undefined=me_if_undefined)
        line(ax, t, "MC", MC, "MC")
        line(ax, t, "ME", ME, "ME")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"MC, ME ({split} set)")
        ax.set_ylim(-0.02, 1.02)
    return panel


def p_same_panel(splits=("test",), k=PAPER_K, metric=PAPER_METRIC):
    """Figure 4 (and 5 (b)): P_SAME by training step."""
    colours = {"test": "tab:purple", "train": "tab:green"}

    def panel(ax, runs, *_):
        for split in splits:
            line(ax, seeds_table(runs, split, k=k, metric=metric), "P_SAME", colours[split], f"P_SAME ({split})")
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

    def panel(ax, runs, model, dataset):
        rs = as_runs(runs)
        c = rs[0].config  # the seeds share everything else
        lasts = [r.last_step(split="test", metric=metric, pca=0).assign(seed=r.config.seed) for r in rs]
        order = [layer for layer in c.probe_layers if layer in set(lasts[0].layer)]
        theirs, their_dnn = paper.figure2(model, dataset) if authors else (None, None)
        other = run_model_name(rs[0]) != name(model)  # a stand-in network: the rings are the paper's network's
        rings = "the authors' values (rings" + (f", their {name(model)}-28-10)" if other else ")")
        first = probing.input_knn(c.dataset, tuple(ks), metric, c.pixels, c.limit) if inputs else None
        axis = (["input"] if first or theirs is not None else []) + order
        x = {layer: i for i, layer in enumerate(axis)}
        t = pd.concat(lasts, ignore_index=True)
        t = t[t.layer.isin(order)]
        if first:  # the input images' k-NN: the same for every seed
            t = pd.concat([t, pd.DataFrame([{"layer": "input", "k": k, "knn_acc": first[k], "seed": r.config.seed}
                                            for k in ks for r in rs])], ignore_index=True)
        t = t.assign(position=t.layer.map(x))
        for k in ks:
            line(ax, t[t.k == k], "knn_acc", LAYER_K_COLOURS.get(k), f"k-NN k={k}", 100, x="position",
                 marker="o", lw=0.8, ms=4)
            if theirs is not None:
                th = theirs[(theirs.k == k) & theirs.layer.isin(list(x))]
                ax.plot([x[a] for a in th.layer], th.knn_acc, "o", mfc="none", color=LAYER_K_COLOURS.get(k), ms=6,
                        label=rings if k == ks[0] else None)
        ax.axhline(100 * sum(last.dnn_acc.iloc[0] for last in lasts) / len(lasts), color=DNN, ls="--", label="DNN")
        if their_dnn is not None:
            ax.axhline(their_dnn, color="grey", ls=":", label="the authors' DNN")
        ax.set_xticks(range(len(axis)), axis, rotation=70, fontsize=7)
        ax.set_xlabel("")
        ax.set_ylabel("test accuracy (%)")
    return panel


def panels_row(runs, panels: dict, row: str, missing=None):
    """One row of different panels of the same run(s) (Figure 7: accuracy, MC and ME, P_SAME):
    panels: {title: panel}; row: the data's name in each title."""
    return grid([row], list(panels), lambda ax, rs, _, what: panels[what](ax, rs),
                {(row, what): runs for what in panels}, sharey=False, missing=missing and (lambda *_: missing),
                title=lambda _, what: f"{what} — {name(row)}")


def split_rows(runs: dict, model: str, datasets, panel_for, splits=("train", "test"), missing=None):
    """Figure 8's layout: a row per split (training, test set), a column per dataset, the panel
    `panel_for(split)` of `runs[(model, dataset)]` in each."""
    panels = {split: panel_for(split) for split in splits}

    def title(split, d):  # a network other than the paper's named (experiments.stand_in_config)
        cell = as_runs(runs.get((model, d)))
        net = run_model_name(cell[0]) if cell else name(model)
        return f"{name(d)} — {split} — {net}" if net != name(model) else None
    return grid(list(splits), list(datasets), lambda ax, rs, split, d: panels[split](ax, rs),
                {(split, d): runs[(model, d)] for split in splits for d in datasets},
                missing=missing and (lambda split, d: missing(model, d)), title=title)


def placeholder(text: str, height: float = 1.0):
    """A figure that only says why there is no figure."""
    theme()
    fig, ax = plt.subplots(figsize=(6, height))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", color="dimgrey")
    return fig


def probe_layers_figure(table: pd.DataFrame, layers, ks, dnn_acc: float):
    """Figure 2 for any network (`probe`'s table at one step): k-NN test accuracy by layer, the
    DNN's dashed."""
    theme()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for k in ks:
        acc = table[table.k == k].set_index("layer").knn_acc.reindex(list(layers))
        ax.plot(range(len(layers)), 100 * acc.values, "o-", color=LAYER_K_COLOURS.get(k), label=f"k-NN k={k}", ms=4)
    ax.axhline(100 * dnn_acc, color=DNN, ls="--", label="DNN")
    ax.set_xticks(range(len(layers)), list(layers))
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    return fig


def distance_figure(distances: dict, title: str, metric: str = PAPER_METRIC):
    """The mean distance to the nearest training image by step, per network and case.
    distances: {model: `neighbours.first_distance(run)`}."""
    from .neighbours import CASES

    theme()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for model, dist in distances.items():
        for case, style in zip(CASES, ("-", "--", ":")):
            t = dist[dist.case == case]
            ax.plot(t.step, t.distance, style, color=MODEL_COLOURS.get(model), marker=".",
                    label=f"{name(model)}: {case}")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"nearest-neighbour distance ({metric.upper()})")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    return fig


def split_panel(factory, **kw):
    """split -> factory(split, **kw): a panel per split for `split_rows` (e.g. `mc_me_panel`)."""
    return lambda split: factory(split, **kw)


def depth_figure(measures: pd.DataFrame):
    """The depth chapter's first figure (`depth.measures`): each quantity's mean ± sd over seeds at the
    last step against the network's parameters, one marker per network; a placeholder without runs."""
    if measures.empty:
        return placeholder("No run of these networks is here.")
    theme()
    qs = list(dict.fromkeys(measures.quantity))
    fig, axes = plt.subplots(1, max(1, len(qs)), figsize=(7.0, 2.6), squeeze=False)
    nets = list(dict.fromkeys(measures.network))
    colours = dict(zip(nets, plt.get_cmap("viridis")([i / max(1, len(nets) - 1) for i in range(len(nets))])))
    for ax, q in zip(axes[0], qs):
        for _, row in measures[measures.quantity == q].iterrows():
            ax.errorbar(row["parameters"], row["mean"], yerr=0 if pd.isna(row["std"]) else row["std"], fmt="o",
                        color=colours[row.network], capsize=3, label=f"{short_name(row.network)} (n={row.n})")
        ax.set_xscale("log")
        ax.set_xlim(2e5, 1e8)  # the lineup's 0.5 M to 36 M parameters, the same axis as runs arrive
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel("parameters")
        ax.set_title(q, fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 0.85))
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 3), frameon=False, fontsize=8)
    return fig


def p_same_by_network(curves: pd.DataFrame):
    """The depth chapter's second figure (`depth.p_same_curves`): test P_SAME along training, a line per
    network (mean ± sd over its seeds), and 1 − P_SAME on a log scale after step 0, where the networks
    part; a placeholder without runs."""
    if curves.empty:
        return placeholder("No run of these networks is here.")
    theme()
    fig, (full, late) = plt.subplots(1, 2, figsize=(7.0, 2.8))
    nets = list(dict.fromkeys(curves.network))
    colours = dict(zip(nets, plt.get_cmap("plasma")([i / max(1, len(nets)) for i in range(len(nets))])))
    for ax in (full, late):
        for net in nets:
            t = curves[curves.network == net]
            t = t if ax is full else t[t.step > 0].assign(P_SAME=1 - t.P_SAME)  # disagreement
            line(ax, t, "P_SAME", colours[net], f"{short_name(net)} (n={t.seed.nunique()})")
        ax.set_xlabel("training step")
    full.set_ylabel("P_SAME (test set)")
    late.set_ylabel("1 − P_SAME (test set)")
    late.set_yscale("log")
    full.set_title("P_SAME from step 0", fontsize=10)
    late.set_title("1 − P_SAME after step 0 (log scale)", fontsize=10)
    handles, labels = full.get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 0.85))
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 3), frameon=False, fontsize=8)
    return fig
