"""What the notebooks show: glued text and tables, captions saying what each panel came from,
and the tables drawn from runs (accuracies, generalisation gaps, Table 1), with spreads over seeds."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .experiments import dataset_name, section
from .profiles import CPU_FILL, NOT_RUN, TABLE1_KS, Params, fits_cpu
from .names import PAPER_K, PAPER_METRIC
from .metrics import spread  # noqa: F401 - report.spread: the pages' mean ± std over runs

if TYPE_CHECKING:
    import pandas as pd

    from .config import RunConfig
    from .runs import Run

MISSING_PAGE = "/fill_the_missing_runs"  # the book's page on computing what was not run here


def glue_md(name: str, text: str):
    """Glue markdown text for `{glue:md}` in the book (numbers computed, never typed)."""
    from IPython.display import Markdown
    from myst_nb import glue

    glue(name, Markdown(text), display=False)


def glue_figure(name: str, fig):
    """Glue a figure for `{glue:figure}` and close it, so the page shows it once (no second copy
    in the cell's output)."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, fig, display=False)
    plt.close(fig)


def glue_table(name: str, df):
    """Glue a DataFrame as a Markdown table, for a numbered, captioned `{table}` in the book:

        ````{table} Caption
        :name: "tab-x"

        ```{glue:md} name
        :format: myst
        ```
        ````
    """
    import pandas as pd

    def cell(v):  # a '|' inside a cell would end it
        return v.replace("|", "\\|") if isinstance(v, str) else v

    flat = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df.copy()
    flat.columns = [cell(" ".join(str(c) for c in col) if isinstance(col, tuple) else str(col)) for col in flat.columns]
    glue_md(name, flat.map(cell).to_markdown(index=False, disable_numparse=True))  # "90.00" stays as written


# -- captions: what a panel was computed from, and how to fill one that was not -----------------

def gpu_command(P: Params, cfgs) -> str:
    """The commands (Markdown) that compute `cfgs` on a GPU or a cluster."""
    def uniq(xs):
        return " ".join(dict.fromkeys(xs))
    return (f"`python -m dnnknn grid --profile {P.profile} --datasets {uniq(c.dataset for c in cfgs)} "
            f"--models {uniq(c.model for c in cfgs)} --sections {uniq(section(c) for c in cfgs)}` on a Slurm "
            f"cluster, or `python -m dnnknn train` on a GPU box and `python -m dnnknn export`")


def how_to_fill(P: Params, cfg: RunConfig) -> str:
    """One line: 'not run here' and which command or device would fill the cell."""
    how = f"a CPU trains it: {CPU_FILL}" if fits_cpu(cfg) else f"needs a GPU: {gpu_command(P, [cfg])}"
    return f"{NOT_RUN} ({how})"


def describe(P: Params, run: Run | None, cfg: RunConfig) -> str:
    """A caption fragment saying what a panel was computed from."""
    if run is None:
        return f"{cfg.label()}: {how_to_fill(P, cfg)}"
    m, cfg = run.meta, run.config  # a stand-in's own dataset (experiments.get)
    lim = f", first {cfg.limit[0]:,} training images" if cfg.limit else ""
    return (f"{cfg.label()}{lim}; {m['device_name']}; profile {P.profile}; "
            f"code {m['code_version']}; run {run.key}")


def missing_text(P: Params, cfgs: dict):
    """For plots.grid: what to write in a panel without a run (row, col) -> text."""
    return lambda r, c: how_to_fill(P, cfgs[(r, c)])


def sources(P: Params, runs: dict, cfgs: dict) -> str:
    """Markdown, one sentence per run: what each panel or cell was computed from; a stand-in
    dataset's (experiments.get) named as such; the runs not here in one sentence that says how to
    fill them."""
    from .plots import name
    done = [describe(P, runs[key], cfgs[key]) for key in cfgs if runs[key] is not None]
    missing = [cfgs[key] for key in cfgs if runs[key] is None]
    text = ". ".join(done) + ("." if done else "")
    stood_in = {(cfgs[key].dataset, runs[key].config.dataset) for key in cfgs
                if runs[key] is not None and runs[key].config.dataset != cfgs[key].dataset}
    for asked, copy in sorted(stood_in):
        text += (f" {name(asked)} itself was not run here; where a run on {name(copy)} exists, its panel or "
                 f"cell shows that run, named as the copy: read it beside the paper's {name(asked)} values as a "
                 f"run on different images.")
    if missing:
        gpu = [c for c in missing if not fits_cpu(c)]
        text += f" Not run here: {'; '.join(c.label() for c in missing)}."
        if gpu:
            text += f" They need a GPU: {gpu_command(P, gpu)} ({{doc}}`how <{MISSING_PAGE}>`)."
        if len(gpu) < len(missing):
            text += f" A CPU trains the others: {CPU_FILL}."
    return text.strip()


def final_accuracy_table(runs: dict, split="test", k=PAPER_K, metric=PAPER_METRIC) -> "pd.DataFrame":
    """The last evaluation's DNN and k-NN accuracy (%). runs: {(model, dataset): Run or None}."""
    import pandas as pd
    from .plots import name

    rows = []
    for (m, d), run in runs.items():
        row = {"model": name(m), "dataset": dataset_name(d, run)}
        if run is None:
            row.update({"DNN (%)": NOT_RUN, "k-NN (%)": NOT_RUN, "k-NN − DNN (%)": NOT_RUN})
        else:
            r = run.final(split=split, k=k, metric=metric)
            row.update({"DNN (%)": f"{100 * r.dnn_acc:.2f}", "k-NN (%)": f"{100 * r.knn_acc:.2f}",
                        "k-NN − DNN (%)": f"{100 * (r.knn_acc - r.dnn_acc):.2f}"})
        rows.append(row)
    return pd.DataFrame(rows).set_index(["model", "dataset"])


def me_support(run, k=PAPER_K, metric=PAPER_METRIC, split="test") -> str:
    """'ME from N mistakes, standard error S': how many of the DNN's mistakes ME is computed on at
    the last evaluation, and its binomial standard error sqrt(ME (1 - ME) / N)."""
    import math

    f = run.final(split=split, k=k, metric=metric)
    n = len(run.predictions()[f"labels/{split}"])
    wrong = round((1 - f.dnn_acc) * n)
    if wrong == 0 or math.isnan(f.ME):
        return "ME undefined (no mistake)"
    return f"ME from {wrong} mistakes of {n:,}, standard error {math.sqrt(f.ME * (1 - f.ME) / wrong):.3f}"


def generalization_gaps(run, k=PAPER_K, metric=PAPER_METRIC, step: int | None = None) -> tuple[float, float]:
    """Appendix C: (DNN, k-NN) train accuracy - test accuracy (%) at `step` (None: the last evaluation)."""
    from .metrics import generalization_error

    te, tr = run.at(step, split="test", k=k, metric=metric), run.at(step, split="train", k=k, metric=metric)
    return (100 * generalization_error(tr.dnn_acc, te.dnn_acc), 100 * generalization_error(tr.knn_acc, te.knn_acc))


def generalization_table(runs: dict, k=PAPER_K, metric=PAPER_METRIC, wide: bool = False) -> "pd.DataFrame":
    """Appendix C's gaps (%) for the DNN and the k-NN. runs: {(model, dataset): a Run (its value),
    a list of runs (mean ± std over seeds), or None}. wide: laid out as the paper's Table 2, a DNN
    and a k-NN line per model, a column per dataset."""
    import pandas as pd
    from .plots import name

    rows, asked = [], []
    for (m, d), rs in runs.items():
        row = {"model": name(m), "dataset": dataset_name(d, rs)}
        single = not isinstance(rs, (list, tuple))
        gaps = [generalization_gaps(r, k, metric) for r in ([rs] if single else rs) if r is not None]
        for i, who in enumerate(("DNN", "k-NN")):
            vals = [g[i] for g in gaps]
            row[who] = NOT_RUN if not vals else f"{vals[0]:.2f}" if single else fmt_spread(vals)
        rows.append(row)
        asked.append(name(d))
    long = pd.DataFrame(rows).set_index(["model", "dataset"])
    if not wide:
        return long
    # the paper's layout, a column per dataset asked for; a stand-in's cell names its data
    models = list(dict.fromkeys(r["model"] for r in rows))
    out = pd.DataFrame(index=pd.MultiIndex.from_product([models, ["DNN", "k-NN"]], names=["model", ""]),
                       columns=pd.Index(list(dict.fromkeys(asked)), name="dataset"), dtype=object)
    for r, d in zip(rows, asked):
        note = "" if r["dataset"] == d else f" ({r['dataset'].split('(', 1)[-1].rstrip(')')})"  # "(JPEG q75 copy)"
        out.loc[(r["model"], "DNN"), d], out.loc[(r["model"], "k-NN"), d] = r["DNN"] + note, r["k-NN"] + note
    return out.fillna("—")


def robustness_table(runs_by_seed: dict, ks=TABLE1_KS) -> "pd.DataFrame":
    """Appendix B, Table 1: final test k-NN accuracy (%) mean ± std over seeds, per k, metric,
    with and without PCA-64, and the DNN's. runs_by_seed: {(dataset, seed): Run or None}."""
    import pandas as pd

    datasets = list(dict.fromkeys(d for d, _ in runs_by_seed))
    table = {}
    for d in datasets:
        runs = [r for (dd, _), r in runs_by_seed.items() if dd == d and r is not None]
        shown = dataset_name(d, runs)
        for metric in ("l1", "l2"):
            col = []
            for k in ks:
                for pca in (0, 64):
                    col.append(fmt_spread([100 * run.final(metric=metric, k=k, pca=pca).knn_acc for run in runs]))
            col.append(fmt_spread([100 * r.final(split="test").dnn_acc for r in runs]))
            table[(shown, metric.upper())] = col
    index = [f"{k}{' + PCA' if p else ''}" for k in ks for p in (0, 64)] + ["DNN accuracy"]
    return pd.DataFrame(table, index=pd.Index(index, name="k"))


def fmt_spread(values, digits: int = 2) -> str:
    """'mean ± std (n=N)' over runs; 'not run here' without runs; 'undefined' when every run's
    value is NaN (ME of a network that makes no mistake)."""
    values = list(values)
    if not values:
        return NOT_RUN
    mean, std, n = spread(values)
    if n == 0:
        return f"undefined in all {len(values)} runs"
    text = f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})" if n > 1 else f"{mean:.{digits}f} (n=1)"
    return text + (f", undefined in {len(values) - n}" if n < len(values) else "")
