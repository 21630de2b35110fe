"""What the notebooks show: glued text and tables, captions saying what each panel came from,
and the tables drawn from runs (accuracies, generalisation gaps, Table 1), with spreads over seeds."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .experiments import dataset_name, figure_seeds, network_name, section, subset_text
from .profiles import NOT_RUN, TABLE1_KS, Params, cpu_command
from .names import PAPER_K, PAPER_METRIC, short_name
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
    from tabulate import tabulate

    def cell(v):  # a '|' inside a cell would end it
        return v.replace("|", "\\|") if isinstance(v, str) else v

    flat = df.reset_index() if any(n is not None for n in df.index.names) else df.copy()  # a named index is a column
    flat.columns = [cell(" ".join(str(c) for c in col) if isinstance(col, tuple) else str(col)) for col in flat.columns]
    # cell by cell as Python objects: to_markdown would pass an all-number frame as one float
    # array (step 40 -> "40.0"); disable_numparse: "90.00" stays as written
    rows = [[cell(v) for v in row] for row in flat.astype(object).values.tolist()]
    glue_md(name, tabulate(rows, headers=[str(c) for c in flat.columns], tablefmt="pipe", disable_numparse=True))


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
    how = f"a CPU trains it: {cpu_command(cfg)}" if cpu_command(cfg) else f"needs a GPU: {gpu_command(P, [cfg])}"
    return f"{NOT_RUN} ({how})"


def describe(P: Params, run, cfg: RunConfig) -> str:
    """A caption fragment saying what a panel was computed from: one run, or the seeds of one
    setting (a list of runs)."""
    from .plots import as_runs
    runs = as_runs(run)
    if not runs:
        return f"{cfg.label()}: {how_to_fill(P, cfg)}"
    cfg = runs[0].config  # a stand-in's own dataset (experiments.get)
    lim = f", first {cfg.limit[0]:,} training images" if cfg.limit else ""
    label = cfg.label()
    if isinstance(run, (list, tuple)):  # the seeds of a figure's panel (experiments.seed_grid)
        asked = figure_seeds(P, cfg)
        label = (f"{cfg.setting()}, seed{'s' * (len(runs) > 1)} {', '.join(str(r.config.seed) for r in runs)}"
                 + (f" (of the {asked} the profile asks for: the others not run here)" if len(runs) < asked else ""))
    devices = ", ".join(dict.fromkeys(r.meta["device_name"] for r in runs))
    codes = ", ".join(dict.fromkeys(r.meta["code_version"] for r in runs))
    keys = ", ".join(r.key for r in runs)
    return (f"{label}{lim}; {devices}; profile {P.profile}; code {codes}; "
            f"run{'s' * (len(runs) > 1)} {keys}")


def missing_text(P: Params, cfgs: dict):
    """For plots.grid: what to write in a panel without a run (row, col) -> text."""
    return lambda r, c: how_to_fill(P, cfgs[(r, c)])


def sources(P: Params, runs: dict, cfgs: dict) -> str:
    """Markdown, one sentence per setting: what each panel or cell was computed from (a run, or the
    seeds of one setting); a stand-in dataset's (experiments.get) named as such; the runs not
    here in one sentence that says how to fill them."""
    from .plots import as_runs, name
    got = {key: as_runs(runs[key]) for key in cfgs}
    done = [describe(P, got[key], cfgs[key]) for key in cfgs if got[key]]
    missing = [cfgs[key] for key in cfgs if not got[key]]
    from .names import run_model_name
    text = ". ".join(done) + ("." if done else "")
    stood_in = {(cfgs[key].dataset, got[key][0].config.dataset) for key in cfgs
                if got[key] and got[key][0].config.dataset != cfgs[key].dataset}
    for asked, copy in sorted(stood_in):
        text += (f" {name(asked)} itself was not run here; where a run on {name(copy)} exists, its panel or "
                 f"cell shows that run, named as the copy: read it beside the paper's {name(asked)} values as a "
                 f"run on different images.")
    narrower = {}  # experiments.stand_in_config: the network shown -> the datasets it stands in on
    for key in cfgs:
        if got[key] and (got[key][0].config.width or 0) != (cfgs[key].resolve().width or 0):
            narrower.setdefault(run_model_name(got[key][0]), []).append(name(cfgs[key].dataset))
    for net, where in narrower.items():
        text += (f" The paper's Wide-ResNet-28-10 was not run here on {', '.join(dict.fromkeys(where))}; there its "
                 f"panels and cells show the {net} in its place, named as such: indicative of the deep network's "
                 f"behaviour, not the paper's network. The depth-and-width chapter sets it beside the other networks.")
    if missing:
        gpu = [c for c in missing if not cpu_command(c)]
        text += f" Not run here: {'; '.join(c.label() for c in missing)}."
        if gpu:
            text += f" They need a GPU: {gpu_command(P, gpu)} ({{doc}}`how <{MISSING_PAGE}>`)."
        if len(gpu) < len(missing):
            text += f" A CPU trains the others: {' and '.join(dict.fromkeys(cpu_command(c) for c in missing if cpu_command(c)))}."
    return text.strip()


def final_accuracy_table(runs: dict, split="test", k=PAPER_K, metric=PAPER_METRIC) -> "pd.DataFrame":
    """The last evaluation's DNN and k-NN accuracy (%), mean ± std over seeds. runs: {(model,
    dataset): a Run, a list of runs (its seeds), or None}."""
    import pandas as pd
    from .plots import as_runs, name

    rows = []
    for (m, d), rs in runs.items():
        finals = [r.final(split=split, k=k, metric=metric) for r in as_runs(rs)]
        rows.append({"model": network_name(m, rs), "dataset": dataset_name(d, as_runs(rs)),
                     "DNN (%)": fmt_spread([100 * f.dnn_acc for f in finals]),
                     "k-NN (%)": fmt_spread([100 * f.knn_acc for f in finals]),
                     "k-NN − DNN (%)": fmt_spread([100 * (f.knn_acc - f.dnn_acc) for f in finals])})
    return pd.DataFrame(rows).set_index(["model", "dataset"])


def _settings(runs: dict):
    """(the network's name, the data's name, the runs) for each setting of `runs` that has a run."""
    from .plots import as_runs
    return [(network_name(m, rs), dataset_name(d, as_runs(rs)), as_runs(rs)) for (m, d), rs in runs.items() if as_runs(rs)]


def start_text(runs: dict, k=PAPER_K, metric=PAPER_METRIC) -> str:
    """Figure 1 at step 0: each setting's k-NN and DNN test accuracy (%) before training."""
    parts = []
    for net, data, rs in _settings(runs):
        first = [r.table(k=k, metric=metric).iloc[0] for r in rs]
        parts.append(f"{net} on {data}: k-NN {fmt_spread([100 * f.knn_acc for f in first], 1, '%')} "
                     f"vs DNN {fmt_spread([100 * f.dnn_acc for f in first], 1, '%')}")
    return "; ".join(parts) or "no run here"


def mc_me_text(runs: dict, k=PAPER_K, metric=PAPER_METRIC) -> str:
    """Figures 3 and 4 at the last step: MC, ME and P_SAME per setting (Markdown list), with how
    many mistakes seed 0's ME rests on."""
    rows = []
    for net, data, rs in _settings(runs):
        f = [r.final(k=k, metric=metric) for r in rs]
        rows.append(f"- {net} on {data}: MC = {fmt_spread([x.MC for x in f], 3)}, "
                    f"ME = {fmt_spread([x.ME for x in f], 3)}, P_SAME = {fmt_spread([x.P_SAME for x in f], 4)}; "
                    f"seed {rs[0].config.seed}: {me_support(rs[0], k=k, metric=metric)}")
    return "\n".join(rows) or "- no run here"


def random_label_text(runs: dict, k=PAPER_K, metric=PAPER_METRIC) -> str:
    """Figure 5 at the last step (Markdown list): the training and test accuracy of the network
    and its k-NN, chance, and P_SAME on both sets."""
    rows = []
    for net, data, rs in _settings(runs):
        r = rs[0]
        tr, te = r.final(split="train", k=k, metric=metric), r.final(split="test", k=k, metric=metric)
        chance = 100 / (int(r.predictions()["labels/test"].max()) + 1)
        rows.append(f"- {net} on {data}{subset_text(r)}: training accuracy DNN {100 * tr.dnn_acc:.2f}%, k-NN {100 * tr.knn_acc:.2f}%; "
                    f"test accuracy DNN {100 * te.dnn_acc:.1f}% (chance {chance:.0f}%); "
                    f"P_SAME train {tr.P_SAME:.3f}, test {te.P_SAME:.3f}")
    return "\n".join(rows) or "- no run here"


def final_text(run, k=PAPER_K, metric=PAPER_METRIC) -> str:
    """One run's last evaluation in a line: accuracies, MC, ME, P_SAME."""
    if run is None:
        return NOT_RUN
    f = run.final(k=k, metric=metric)
    return (f"DNN {100 * f.dnn_acc:.2f}%, k-NN {100 * f.knn_acc:.2f}%, MC = {f.MC:.3f}, ME = {f.ME:.3f}, "
            f"P_SAME = {f.P_SAME:.3f}")


def embedding_note(P: Params, model: str = "wrn") -> str:
    """Table 1's note: each dataset's network and embedding size, and what PCA-64 does to it."""
    from .experiments import main_config
    from .names import embed_dim
    from .plots import name
    parts = []
    for d in P.datasets:
        e = embed_dim(model, main_config(P, d, model).resolve().width)
        parts.append(f"{name(d)}: Wide-ResNet-{P.wrn_depth}-{P.wrn_width}, a {e}-d embedding"
                     + (" (so PCA to 64 dimensions only centres and rotates it: L2 distances, and with them the "
                        "L2 k-NN, stay as they were; L1 distances change under a rotation, so the L1 k-NN's "
                        "accuracy may move a little)" if e <= 64 else ""))
    return "; ".join(parts)


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
    a list of runs (its seeds), or None}, as mean ± std over seeds. wide: laid out as the paper's Table 2, a DNN
    and a k-NN line per model, a column per dataset."""
    import pandas as pd
    from .plots import as_runs, name

    rows, asked = [], []
    for (m, d), rs in runs.items():
        row = {"model": network_name(m, rs), "dataset": dataset_name(d, rs)}
        gaps = [generalization_gaps(r, k, metric) for r in as_runs(rs)]
        for i, who in enumerate(("DNN", "k-NN")):
            row[who] = fmt_spread([g[i] for g in gaps])
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


def fmt_spread(values, digits: int = 2, unit: str = "") -> str:
    """'mean ± std<unit> (n=N)' over runs; 'not run here' without runs; 'undefined' when every run's
    value is NaN (ME of a network that makes no mistake)."""
    values = list(values)
    if not values:
        return NOT_RUN
    mean, std, n = spread(values)
    if n == 0:
        return f"undefined in all {len(values)} runs"
    text = f"{mean:.{digits}f} ± {std:.{digits}f}{unit} (n={n})" if n > 1 else f"{mean:.{digits}f}{unit} (n=1)"
    return text + (f", undefined in {len(values) - n}" if n < len(values) else "")


def glue_all(items: dict):
    """Glue each item by its name: a figure as a figure, a DataFrame as a table, text as Markdown."""
    import pandas as pd
    from matplotlib.figure import Figure

    for name, item in items.items():
        if isinstance(item, Figure):
            glue_figure(name, item)
        elif isinstance(item, pd.DataFrame):
            glue_table(name, item)
        else:
            glue_md(name, str(item))


def missing_total_text(count: int, flops: float) -> str:
    """The missing runs in one sentence: how many, their training FLOPs and GPU-hours (a projection)."""
    from .claims import GPU_TFLOPS
    rate = GPU_TFLOPS * 1e12
    return (f"{count} runs, {flops / 1e15:,.0f} PFLOP of training: about {flops / rate / 3600:,.0f} GPU-hours "
            f"at {GPU_TFLOPS:.0f} TFLOP/s sustained (a third of an A100's bf16 peak; a projection)")


def probe_source(data, steps: int, device: str, precision: str = "fp32") -> str:
    """What the probed ResNet-18 of the 'probe any network' page was: data, training, machine, code."""
    import torchvision

    from .experiments import PROBE_TRAINING
    from .plots import name
    from .runs import code_version, device_name
    from .train import resolve_device
    return (f"ResNet-18 (torchvision {torchvision.__version__}, {data.shape[0]} input channel"
            f"{'s' * (data.shape[0] > 1)}) on {name(data.name)} ({len(data.y_train):,} training / "
            f"{len(data.y_test):,} test images), Nesterov SGD lr {PROBE_TRAINING['lr']:g}, batch "
            f"{PROBE_TRAINING['batch']}, {steps} steps"
            f"{'' if precision == 'fp32' else f' ({precision})'}, seed 0; "
            f"{device_name(str(resolve_device(device)))}; code {code_version()}")


def seeds_count_text(counts: dict) -> str:
    """'MLP-640 3, LeNet 3': runs per network."""
    from .plots import name
    return ", ".join(f"{name(m)} {n}" for m, n in counts.items())


def depth_lines(rows: list, leaders: dict) -> list[str]:
    """The depth chapter's findings, one line each: per quantity the networks' means, highest first (`rows`:
    `depth.measures` records), and which network leads P_SAME early and at the end (`depth.leaders`)."""
    by_q = {}
    for r in rows:
        by_q.setdefault(r["quantity"], []).append(r)
    lines = [f"{q}, highest first: " + ", ".join(
        f"{short_name(r['network'])} {r['mean']:.{2 if 'points' in q else 4}f} (n={r['n']})"
        for r in sorted(rs, key=lambda r: -r["mean"])) for q, rs in by_q.items()]
    for when, v in leaders.items():
        means = ", ".join(f"{short_name(n)} {m:.4f}" for n, m in v["means"].items())
        lines.append(f"P_SAME {'at the first evaluation after step 0' if when == 'early' else 'at the last step'} "
                     f"(step {v['step']:,}): {short_name(v['leader'])} leads ({means})")
    return lines


def depth_text(measures: "pd.DataFrame", leaders: dict) -> str:
    """Markdown for the depth chapter (`depth.measures`, `depth.leaders`): `depth_lines` as a list."""
    lines = depth_lines(measures.to_dict("records"), leaders)
    return "\n".join(f"- {line}." for line in lines) or "No run of these networks is here."
