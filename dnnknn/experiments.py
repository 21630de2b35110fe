"""The book's experiments: profiles, notebook parameters, and the runs each section needs.

A notebook's `parameters` cell sets plain values; `Params.from_notebook(...)` checks them (a wrong
name, type or value stops with a message naming the parameter and the allowed values) and fills
what is left as None from the profile:

- `quick` (default): offline `mnist5k`, CPU-sized models (Wide-ResNet 10-1), few steps.
- `paper`: appendix A: MNIST / CIFAR-10 / CIFAR-100, Wide-ResNet 28-10, 1,000 / 50,000 steps,
  10 runs for Table 1. Without a GPU only runs already in the store (or `results/`) and the
  MNIST runs of MLP-640 and LeNet are trained; the others show as "not run here".

Sections share runs: `main_config(P, dataset, model, seed)` is the one run per (dataset, model,
seed) from which Figures 1-4, Table 1 and Table 2 are all drawn, so it is trained once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig
from .errors import ConfigError
from .runs import Run, RunStore

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "results"  # committed, read-only records of runs made elsewhere
PROFILES = ("quick", "paper")
PAPER_DATASETS = ("mnist", "cifar10", "cifar100")
TABLE1_KS = (1, 5, 30, 150, 1000)
FIG2_KS = (1, 5, 30, 100)
ALL_KS = tuple(sorted(set(TABLE1_KS) | set(FIG2_KS)))

QUICK = dict(ks=[], datasets=["mnist5k"], models=["mlp640", "lenet", "wrn"], wrn_depth=10, wrn_width=1,
             steps=300, eval_every=30, n_runs=3, random_limit=[500, 500], random_steps=800,
             gd_steps=400, gd_eval_every=20, gd_dataset="mnist5k")
PAPER = dict(ks=[], datasets=list(PAPER_DATASETS), models=["mlp640", "lenet", "wrn"], wrn_depth=28,
             wrn_width=10, steps=None, eval_every=None, n_runs=10, random_limit=None,
             random_steps=None, gd_steps=400, gd_eval_every=20, gd_dataset="mnist")


def paper_steps(dataset: str) -> int:
    """Appendix A: 50,000 steps (200 epochs at batch 200) for CIFAR, 1,000 for MNIST."""
    return 50_000 if dataset.startswith("cifar") else 1_000


@dataclass(frozen=True)
class Params:
    profile: str = "quick"
    datasets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    steps: int | None = None          # None: the profile's (paper: per dataset)
    eval_every: int | None = None     # None: the profile's (paper: steps / 10 or / 20)
    ks: tuple[int, ...] = ()
    metric: str = "l1"
    n_runs: int = 1
    device: str = "auto"
    data_dir: str | None = None
    runs_dir: str | None = None
    train_missing: bool | None = None  # None: quick trains all; paper trains what fits the device
    wrn_depth: int = 28
    wrn_width: int = 10
    random_limit: tuple[int, int] | None = None
    random_steps: int | None = None
    gd_steps: int | None = 400
    gd_eval_every: int | None = 20
    gd_dataset: str = "mnist"

    @classmethod
    def from_notebook(cls, **given) -> "Params":
        """Check the notebook's parameters and fill the profile's defaults."""
        names = [f.name for f in dataclasses.fields(cls)]
        for name in given:
            if name not in names:
                raise ConfigError(f"unknown parameter {name!r}; the parameters are {names}")
        profile = given.get("profile", "quick")
        if profile not in PROFILES:
            raise ConfigError(f"parameter 'profile' must be one of {PROFILES}, got {profile!r}")
        defaults = QUICK if profile == "quick" else PAPER
        vals = {k: (defaults[k] if v is None and k in defaults else v) for k, v in given.items()}
        for k, v in defaults.items():
            vals.setdefault(k, v)
        _check_types(vals)
        for k in ("datasets", "models", "ks", "random_limit"):
            if vals.get(k) is not None:
                vals[k] = tuple(vals[k])
        p = cls(**vals)
        p._check_values()
        return p

    def _check_values(self):
        from .data import DATASETS
        from .knn import METRICS
        from .models import MODELS

        for d in self.datasets:
            if d not in DATASETS[:-1] and not d.startswith("imagefolder:"):  # the named ones
                raise ConfigError(f"parameter 'datasets': unknown dataset {d!r}; allowed: {', '.join(DATASETS)}")
        for m in self.models:
            if m not in MODELS:
                raise ConfigError(f"parameter 'models': unknown model {m!r}; allowed: {', '.join(MODELS)}")
        if self.metric not in METRICS:
            raise ConfigError(f"parameter 'metric' must be one of {METRICS}, got {self.metric!r}")
        for name in ("steps", "eval_every", "n_runs", "gd_steps", "gd_eval_every", "random_steps"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"parameter {name!r} must be a positive integer, got {v!r}")
        if any(k <= 0 for k in self.ks):
            raise ConfigError(f"parameter 'ks' must hold positive integers, got {list(self.ks)}")
        if (self.wrn_depth - 4) % 6 or self.wrn_depth < 10:
            raise ConfigError(f"parameter 'wrn_depth' must be 6n+4 (10, 16, 22, 28...), got {self.wrn_depth}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"parameter 'device' must be 'auto', 'cpu' or 'cuda', got {self.device!r}")

    # -- the runs --------------------------------------------------------------------------
    @property
    def device_type(self) -> str:
        """'cuda' or 'cpu'. An explicit 'cuda' is taken as asked (a cluster's login node that
        submits the jobs may have no GPU); 'auto' looks at this machine."""
        if self.device.startswith("cuda"):
            return "cuda"
        from .train import resolve_device
        return resolve_device(self.device).type

    def steps_for(self, dataset: str) -> int:
        return self.steps or paper_steps(dataset)

    def eval_steps_for(self, dataset: str, steps: int | None = None) -> tuple[int, ...]:
        steps = steps or self.steps_for(dataset)
        every = self.eval_every or (steps // 20 if steps >= 10_000 else steps // 10)
        return tuple(sorted(set(range(0, steps, max(1, every))) | {steps}))

    def model_options(self, model: str) -> dict:
        return {"depth": self.wrn_depth, "width": self.wrn_width} if model == "wrn" else {}

    def main_config(self, dataset: str, model: str, seed: int = 0) -> RunConfig:
        """The shared run: test-set k-NN at every evaluation for all of Table 1's and Figure 2's
        k, L1 and L2, with and without PCA-64; the training set at the last step (Table 2);
        every layer probed at the last step (Figure 2)."""
        steps = self.steps_for(dataset)
        from .models import layer_names
        layers = layer_names(model, **self.model_options(model))
        return RunConfig(dataset=dataset, model=model, steps=steps, **self.model_options(model),
                         eval_steps=self.eval_steps_for(dataset), ks=tuple(sorted(set(ALL_KS) | set(self.ks))),
                         metrics=("l1", "l2"), pca_dims=(64,), eval_train=True, train_eval_steps=(steps,),
                         probe_layers=layers, seed=seed, device=self.device_type)

    def random_config(self, dataset: str, model: str = "wrn", seed: int = 0) -> RunConfig:
        """Section 4.4 / appendix E: random labels, train and test evaluated at every step."""
        steps = self.random_steps or self.steps_for(dataset)
        return RunConfig(dataset=dataset, model=model, steps=steps, labels="random", label_seed=seed,
                         **self.model_options(model), eval_steps=self.eval_steps_for(dataset, steps),
                         ks=tuple(sorted({30} | set(self.ks))), metrics=(self.metric,), eval_train=True,
                         limit=tuple(self.random_limit) if self.random_limit else None, seed=seed,
                         device=self.device_type)

    def gd_config(self) -> RunConfig:
        """Appendix D: MLP-640, full-batch gradient descent, lr 10 divided by 5 at 200 and 300."""
        ev = tuple(sorted(set(range(0, self.gd_steps, self.gd_eval_every)) | {self.gd_steps}))
        return RunConfig(dataset=self.gd_dataset, model="mlp640", steps=self.gd_steps, optimizer="gd",
                         eval_steps=ev, ks=tuple(sorted({30} | set(self.ks))), metrics=(self.metric,),
                         device=self.device_type)

    def feasible_here(self, cfg: RunConfig) -> bool:
        """Whether this profile trains `cfg` when it is missing from the store."""
        if self.train_missing is not None:
            return self.train_missing
        if self.profile == "quick" or self.device_type == "cuda":
            return True
        return cfg.dataset == "mnist" and cfg.model in ("mlp640", "lenet")

    def store(self) -> RunStore:
        return RunStore(self.runs_dir, extra=[RESULTS_DIR])

    def get(self, cfg: RunConfig) -> Run | None:
        """The run from the store (or results/), trained now if this profile does so, else None."""
        store = self.store()
        run = store.find(cfg)
        if run is None and self.feasible_here(cfg):
            print(f"training {cfg.label()} ...", flush=True)
            run = store.train(cfg, data_dir=self.data_dir, progress="log")
        return run

    def how_to_fill(self, cfg: RunConfig) -> str:
        """One line: 'not run here' and which command or device would fill the cell (commands in
    backticks, for Markdown)."""
        kind = {"true": "main", "random": "random"}[cfg.labels] if cfg.optimizer == "sgd" else "gd"
        if cfg.dataset in ("mnist", "mnist5k") and cfg.model in ("mlp640", "lenet"):
            how = "a CPU trains it: `python -m dnnknn book --only paper/ -p train_missing true`"
        else:
            how = (f"needs a GPU: `python -m dnnknn grid --profile {self.profile} --datasets {cfg.dataset} "
                   f"--models {cfg.model} --sections {kind}`, or the device check; then `python -m dnnknn import`")
        return f"not run here ({how})"

    def describe(self, run: Run | None, cfg: RunConfig) -> str:
        """A caption fragment saying what a panel was computed from."""
        if run is None:
            return f"{cfg.label()}: {self.how_to_fill(cfg)}"
        m = run.meta
        lim = f", first {cfg.limit[0]:,} training images" if cfg.limit else ""
        return (f"{cfg.label()}{lim}; {m['device_name']}; profile {self.profile}; "
                f"code {m['code_version']}; run {run.key}")


def _check_types(vals: dict):
    types = {f.name: f.type for f in dataclasses.fields(Params)}
    for name, v in vals.items():
        t = types[name]
        ok = True
        if v is None:
            ok = "None" in t
        elif t.startswith("tuple[str") :
            ok = isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)
        elif t.startswith("tuple[int"):
            ok = isinstance(v, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        elif t.startswith("int"):
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif t.startswith("bool"):
            ok = isinstance(v, bool)
        elif t.startswith("str"):
            ok = isinstance(v, str)
        if not ok:
            raise ConfigError(f"parameter {name!r} must be of type {t}, got {v!r} ({type(v).__name__})")


# -- what the notebooks call --------------------------------------------------------------------

def glue_md(name: str, text: str):
    """Glue markdown text for `{glue:md}` in the book (numbers computed, never typed)."""
    from IPython.display import Markdown
    from myst_nb import glue

    glue(name, Markdown(text), display=False)


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
    glue_md(name, flat.map(cell).to_markdown(index=False))


def main_runs(P: Params, models=None, datasets=None, seed: int = 0):
    """{(model, dataset): Run or None} and the configs, for the shared main runs."""
    runs, cfgs = {}, {}
    for d in datasets or P.datasets:
        for m in models or P.models:
            cfgs[(m, d)] = cfg = P.main_config(d, m, seed)
            runs[(m, d)] = P.get(cfg)
    return runs, cfgs


def missing_text(P: Params, cfgs: dict):
    """For plots.grid: what to write in a panel without a run (row, col) -> text."""
    return lambda r, c: P.how_to_fill(cfgs[(r, c)])


def sources(P: Params, runs: dict, cfgs: dict) -> str:
    """Markdown, one sentence per run: what each panel or cell was computed from; the runs not
    here in one sentence that says how to fill them."""
    done = [P.describe(runs[key], cfgs[key]) for key in cfgs if runs[key] is not None]
    missing = [cfgs[key] for key in cfgs if runs[key] is None]
    text = ". ".join(done) + ("." if done else "")
    if missing:
        kinds = {"sgd": {"true": "main", "random": "random"}, "gd": {"true": "gd", "random": "gd"}}
        gpu = [c for c in missing if P.how_to_fill(c).startswith("not run here (needs a GPU")]
        cpu = [c for c in missing if c not in gpu]
        text += f" Not run here: {'; '.join(c.label() for c in missing)}."
        if gpu:
            uniq = lambda xs: " ".join(dict.fromkeys(xs))  # noqa: E731
            text += (f" They need a GPU: `python -m dnnknn grid --profile {P.profile} --datasets "
                     f"{uniq(c.dataset for c in gpu)} --models {uniq(c.model for c in gpu)} --sections "
                     f"{uniq(kinds[c.optimizer][c.labels] for c in gpu)}`, or the device check; then "
                     f"`python -m dnnknn import`.")
        if cpu:
            text += " A CPU trains the others: `python -m dnnknn book --only paper/ -p train_missing true`."
    return text.strip()


def final_accuracy_table(runs: dict, split="test", k=30, metric="l1") -> "pd.DataFrame":
    import pandas as pd
    from .plots import name

    rows = []
    for (m, d), run in runs.items():
        if run is None:
            rows.append({"model": name(m), "dataset": name(d), "DNN (%)": "not run here",
                         "k-NN (%)": "not run here", "k-NN - DNN (%)": "not run here"})
            continue
        r = run.final(split=split, k=k, metric=metric)
        rows.append({"model": name(m), "dataset": name(d), "DNN (%)": round(100 * r.dnn_acc, 2),
                     "k-NN (%)": round(100 * r.knn_acc, 2),
                     "k-NN - DNN (%)": round(100 * (r.knn_acc - r.dnn_acc), 2)})
    return pd.DataFrame(rows).set_index(["model", "dataset"])


def generalization_table(runs: dict, k=30, metric="l1") -> "pd.DataFrame":
    """Appendix C: train accuracy - test accuracy (%) at the end, for the DNN and the k-NN."""
    import pandas as pd
    from .metrics import generalization_error
    from .plots import name

    rows = []
    for (m, d), run in runs.items():
        row = {"model": name(m), "dataset": name(d)}
        if run is None:
            row.update({"DNN": "not run here", "k-NN": "not run here"})
        else:
            te, tr = run.final(split="test", k=k, metric=metric), run.final(split="train", k=k, metric=metric)
            row.update({"DNN": round(100 * generalization_error(tr.dnn_acc, te.dnn_acc), 2),
                        "k-NN": round(100 * generalization_error(tr.knn_acc, te.knn_acc), 2)})
        rows.append(row)
    return pd.DataFrame(rows).set_index(["model", "dataset"])


def robustness_table(runs_by_seed: dict, ks=TABLE1_KS) -> "pd.DataFrame":
    """Appendix B, Table 1: final test k-NN accuracy (%) mean ± std over seeds, per k, metric,
    with and without PCA-64, and the DNN's. runs_by_seed: {(dataset, seed): Run or None}."""
    import pandas as pd
    from .plots import name

    datasets = sorted({d for d, _ in runs_by_seed}, key=list(dict.fromkeys(d for d, _ in runs_by_seed)).index)
    table = {}
    for d in datasets:
        runs = [r for (dd, _), r in runs_by_seed.items() if dd == d and r is not None]
        for metric in ("l1", "l2"):
            col = []
            for k in ks:
                for pca in (0, 64):
                    accs = []
                    for run in runs:
                        m = run.measures
                        sel = m[(m.step == m.step.max()) & (m.split == "test") & (m.layer == "embedding")
                                & (m.metric == metric) & (m.k == k) & (m.pca == pca)]
                        accs += list(100 * sel.knn_acc)
                    col.append(fmt_spread(accs))
            dnn = [100 * r.final(split="test").dnn_acc for r in runs]
            col.append(fmt_spread(dnn))
            table[(name(d), metric.upper())] = col
    index = [f"{k}{' + PCA' if p else ''}" for k in ks for p in (0, 64)] + ["DNN accuracy"]
    return pd.DataFrame(table, index=pd.Index(index, name="k"))


def spread(values) -> tuple[float, float, int]:
    """(mean, sample std, n) of the defined (non-NaN) values; std is NaN for fewer than two."""
    import numpy as np

    v = np.asarray([x for x in values if not np.isnan(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def fmt_spread(values, digits: int = 2) -> str:
    """'mean ± std (n=N)' over runs; 'not run here' without runs; 'undefined' when every run's
    value is NaN (ME of a network that makes no mistake)."""
    values = list(values)
    if not values:
        return "not run here"
    mean, std, n = spread(values)
    if n == 0:
        return f"undefined in all {len(values)} runs"
    text = f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})" if n > 1 else f"{mean:.{digits}f} (n=1)"
    return text + (f", undefined in {len(values) - n}" if n < len(values) else "")
