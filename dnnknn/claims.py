"""The reproduction's verdict: each claim of the paper as data, judged by one rule.

Each claim is a function registered in `CLAIMS`. Given the `Evidence` (the paper profile's runs,
read only; the quick profile's for indicative numbers) it returns a `Claim`: the settings the paper
makes it for, one `Check` per setting run here, and `Fact`s (computed numbers for the text).
`verdict.py` writes the sentences; the verdict word follows from the checks (`Claim.verdict`).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import numpy as np

from . import experiments, paper, report
from .metrics import spread
from .names import CPU_WRN_WIDTHS, PAPER_K, PAPER_METRIC, PAPER_WRN, model_name, name
from .paper import STATED, TABLE2, Stated

RULE = """\
- A number the paper prints is **reproduced** when our mean over seeds lies within two of our sample
  standard deviations plus the paper's printing precision of it: |ours − paper| ≤ 2·std + u, where u is
  half a unit of the last digit the paper prints (0.005 for "4.44"), a whole unit where it writes "≈"
  (0.001 for "≈ 0.997", 0.1 for "roughly around 0.8"). With one run there is no spread: u alone. Ours
  is read at the training step the paper's number was read at (MNIST: step 500 for Figure 1, section
  4.1 and Table 2; step 1,000 for Figures 3 and 4; the authors' files say so), and page 09 applies the
  same rule to the same values.
- A qualitative claim holds in a setting when its stated test holds in every run of that setting.
- A claim is **reproduced** when every setting (network × dataset) the paper makes it for was run here,
  on the dataset itself, and holds; it **holds where run** when every setting run here holds but some
  were not run, or ran on a stand-in (CIFAR-10's JPEG copy), and the row says how many; **partly** when
  it holds in some settings run here and not in others; **not reproduced** when it fails in every one;
  **not run here** when none of its settings was run (the row says what would run it).
"""

REPRODUCED, HOLDS, PARTLY, NOT, NOT_RUN = "reproduced", "holds where run", "partly", "not reproduced", "not run here"
VERDICTS = (REPRODUCED, HOLDS, PARTLY, NOT, NOT_RUN)
DATASETS = ("mnist", "cifar10", "cifar100")
NETWORKS = ("wrn", "lenet", "mlp640")  # deepest first
ALL = tuple((m, d) for m in NETWORKS for d in DATASETS)
ATTENUATED = 0.1  # section 4.3: how far below MNIST's MC an MLP-640 score "greatly attenuated" lies
GD_MARGIN = 0.01  # appendix D: how far below SGD's MC and P_SAME the GD run may end and still "not change" them
GAP_CLOSED = 1.0  # section 4.1: |k-NN − DNN| (points) at the end that counts as the gap closed
MEETS_DNN = 1.5  # section 4.2: |k-NN − DNN| (points) at the embedding that counts as "resembling"; the authors' own is up to 1.26
RISES = 0.8  # section 4.2: Spearman's rank correlation of layer depth and k-NN accuracy; the authors' own is 0.8 or more
STEP0_SPREAD = 5.0  # section 4.1: points between the architectures' step-0 k-NN accuracies that count as "roughly the same"
# Table 2's "similar": the largest |DNN − k-NN| difference in the paper's own Table 2 (MLP-640 on CIFAR-100)
SIMILAR = max(abs(a - b) for a, b in TABLE2.values())
GPU_TFLOPS = 100.0  # sustained training throughput assumed for a projection: a third of an A100's bf16 peak


@dataclass
class Check:
    """One comparison in one or more settings: ours against the paper's value or the stated test."""
    settings: tuple  # ((model, dataset), ...) it covers
    quantity: str
    paper: str  # the paper's value as printed, or the test
    values: list = field(default_factory=list)  # ours, one per run; empty: not run
    held: bool | None = None  # None: not run
    step: int | None = None  # the step read (None: the last)
    data: dict = field(default_factory=dict)  # setting -> the dataset its runs trained on, where a stand-in's
    runs: tuple = ()  # their keys
    digits: int = 2
    tol: float | None = None  # the rule's tolerance, for a number the paper prints...
    diff: float | None = None  # ...and |our mean − the paper's|
    shape: str = "per run"  # what `values` are: "per run", "statistic" (computed over the runs), "series" (ordered)
    layers: list = field(default_factory=list)  # per run, where the check is a layer's name (no values)


@dataclass
class Fact:
    """A computed statement for the renderer: `kind` names its sentence in `verdict.FACTS`."""
    kind: str
    values: dict


@dataclass
class Claim:
    text: str
    where: str
    paper: str  # the paper's value(s) as printed, or what it says
    settings: tuple  # the settings (model, dataset) the paper makes it for
    test: str
    checks: list
    facts: list = field(default_factory=list)
    why: str = ""
    # the claim's checks with the CPU's Wide-ResNet in the paper's place, where the paper's was not run:
    # indicative, never counted in the verdict (`evaluate`); `indicative_name` names that network
    indicative: list = field(default_factory=list)
    indicative_name: str = ""

    def indicative_verdict(self) -> str | None:
        """'holds', 'partly' or 'does not hold' over the indicative checks' Wide-ResNet settings; None without any."""
        held = {s: h for s, h in dataclasses.replace(self, checks=self.indicative).setting_held().items() if s[0] == "wrn"}
        if not held:
            return None
        return "holds" if all(held.values()) else "does not hold" if not any(held.values()) else "partly"

    def covered(self) -> tuple[set, set]:
        """(settings run on their own data, settings run on a stand-in's only) among the claimed ones."""
        own, stand_in = set(), set()
        for c in self.checks:
            if c.held is not None:
                for s in c.settings:
                    if s in self.settings:
                        (stand_in if s in c.data else own).add(s)
        return own, stand_in - own

    def setting_held(self) -> dict:
        """{setting run here: whether it holds}: a setting holds when every check that covers it holds."""
        out = {}
        for c in self.checks:
            if c.held is not None:
                for s in c.settings:
                    if s in self.settings:
                        out[s] = out.get(s, True) and c.held
        return out

    @property
    def verdict(self) -> str:
        held = self.setting_held()
        if not held:
            return NOT_RUN
        if not any(held.values()):
            return NOT
        if not all(held.values()):
            return PARTLY
        own, _ = self.covered()
        return REPRODUCED if own >= set(self.settings) else HOLDS


class Evidence:
    """The runs the claims read: `runs(model, dataset, kind)` (kind as `experiments.seed_runs`), the
    full-batch run, and the quick profile's runs; read once each. `Evidence.of(runs)` builds one from
    a dict {(model, dataset, kind): [runs]} (tests)."""

    def __init__(self, quick=None, full=None):
        self.quick, self.full, self._cache = quick, full, {}

    @classmethod
    def of(cls, runs: dict, gd=None, quick: dict | None = None) -> "Evidence":
        ev = cls()
        ev._cache = {("full",) + k: v for k, v in runs.items()}
        ev._cache[("gd",)] = gd
        ev._cache.update({("quick",) + k: v for k, v in (quick or {}).items()})
        return ev

    def _get(self, key, load):
        if key not in self._cache:
            profile = self.quick if key[0] == "quick" else self.full
            self._cache[key] = load() if profile is not None else ([] if key[0] == "full" else None)
        return self._cache[key]

    def runs(self, model: str, dataset: str, kind: str = "main") -> list:
        return self._get(("full", model, dataset, kind), lambda: experiments.seed_runs(self.full, model, dataset, kind))

    def gd(self):
        return self._get(("gd",), lambda: self.full.store().find(experiments.gd_config(self.full)))

    def quick_run(self, model: str, dataset: str, kind: str = "main"):
        """The quick profile's seed-0 run, never trained here (indicative numbers only)."""
        def load():
            cfg = {"main": experiments.main_config, "random": experiments.random_config}[kind](self.quick, dataset, model)
            return self.quick.store().find(cfg)
        return self._get(("quick", model, dataset, kind), load)


class StandInEvidence(Evidence):
    """`ev` with the CPU's Wide-ResNet in the place of the paper's where that was not run
    (`experiments.stand_in_config`: MNIST only); the same runs of the other networks, read once for both."""
    KEY = f"wrn-{PAPER_WRN[0]}-{CPU_WRN_WIDTHS[0]}"  # its runs' key in the cache (`Evidence.of` in tests)

    def __init__(self, ev: Evidence):
        self.quick, self.full, self._cache, self._base = ev.quick, ev.full, ev._cache, ev

    def runs(self, model: str, dataset: str, kind: str = "main") -> list:
        if model != "wrn":
            return self._base.runs(model, dataset, kind)
        return self._get(("full", self.KEY, dataset, kind), lambda: experiments.with_stand_in(
            self.full, experiments.seed_configs(self.full, "wrn", dataset, kind)) or [])


CLAIMS = []


def claim(fn):
    """Register a claim function (in the page's order)."""
    CLAIMS.append(fn)
    return fn


# -- building blocks -------------------------------------------------------------------------------
def _data(runs, settings) -> dict:
    """{setting: the stand-in dataset its runs trained on}, for the settings whose runs are all a stand-in's."""
    out = {}
    for m, d in settings:
        trained = {r.config.dataset for r in runs if r.config.model == m}
        if trained and d not in trained:
            out[(m, d)] = sorted(trained)[0]
    return out


def numeric(ev: Evidence, model, dataset, quantity, st: Stated, kind=None) -> Check:
    """The rule for a printed number, as page 09 applies it (`paper.judge`)."""
    j = paper.judge(ev.runs, model, dataset, quantity, st, kind)
    return Check(((model, dataset),), quantity, st.text, j.values, j.agreement.held, j.step,
                 _data(j.runs, [(model, dataset)]),
                 tuple(r.key for r in j.runs), paper.digits(quantity), *((j.agreement.tol, j.agreement.diff)
                                                                         if j.agreement.held is not None else ()))


def qualitative(settings, quantity, test_text, runs, values, held_each, dataset=None, step=None, digits=2,
                shape="per run") -> Check:
    """A stated test over runs: it holds when it holds in every run (or for the statistic over them)."""
    held = bool(all(held_each)) if runs else None
    return Check(tuple(settings), quantity, test_text, list(values), held, step, _data(runs, settings),
                 tuple(r.key for r in runs), digits, shape=shape)


def row(run, step=None, split="test"):
    return run.at(step, split=split, k=PAPER_K, metric=PAPER_METRIC)


def first_step_after_0(run) -> int:
    return int(run.table("test", k=PAPER_K, metric=PAPER_METRIC).step.iloc[1])


def not_run_fact(ev: Evidence, settings, kind: str = "main") -> list:
    """What would run the settings that have no run here: their training cost and the command."""
    miss = [(m, d) for m, d in settings if m != "all" and not ev.runs(m, d, kind)]
    if not miss:
        return []
    values = {"settings": miss}
    if ev.full is not None:
        factory = {"main": experiments.main_config, "random": experiments.random_config,
                   "table2": experiments.table2_config}[kind]
        cfgs = [factory(ev.full, d, m) for m, d in miss]
        values.update(zip(("pflop", "gpu_hours"), gpu_hours(cfgs)), command=report.gpu_command(ev.full, cfgs))
    return [Fact("not_run", values)]


def spearman(values) -> float:
    """Spearman's rank correlation of position and value (no ties expected)."""
    ranks = np.argsort(np.argsort(values))
    return float(np.corrcoef(np.arange(len(values)), ranks)[0, 1])


def layers_test(accs, dnn) -> tuple[bool, float, float]:
    """Section 4.2's test on one panel (k-NN accuracies by layer, in %, shallow to deep, the
    embedding last): (rises overall and meets the DNN, Spearman rho, embedding − DNN)."""
    rho, gap = round(spearman(accs), 9), accs[-1] - dnn
    return rho >= RISES and abs(gap) <= MEETS_DNN, rho, gap


def first_layer_of(run) -> str | None:
    """A run's first probed layer whose k-NN (k = 30) is within 1 point of its DNN at the last step."""
    last = run.last_step(split="test", metric=PAPER_METRIC, pca=0, k=PAPER_K).set_index("layer")
    order = [layer for layer in run.config.probe_layers if layer in last.index and layer != "embedding_raw"]
    return first_within(list(100 * last.knn_acc.reindex(order)), order, 100 * last.dnn_acc.iloc[0])


def first_within(accs, layers, dnn, tol=1.0) -> str | None:
    """The first layer whose k-NN accuracy is within `tol` points of the DNN's."""
    return next((layer for layer, a in zip(layers, accs) if abs(a - dnn) <= tol), None)


# -- section 4.1, Figure 1 ---------------------------------------------------------------------------
@claim
def gap_closes(ev: Evidence) -> Claim:
    settings = tuple((m, d) for m in ("wrn", "lenet") for d in DATASETS)
    checks, facts = [], []
    for (m, d), kind in ((s, kind) for s in settings for kind in ("main", "raw")):
        runs = ev.runs(m, d, kind)
        if runs:
            end = paper.paper_step(d, "Figure 1")
            gap = [100 * abs(row(r, end).knn_acc - row(r, end).dnn_acc) for r in runs]
            early = [100 * abs(row(r, first_step_after_0(r)).knn_acc - row(r, first_step_after_0(r)).dnn_acc)
                     for r in runs]
            quantity = "|k-NN − DNN| (points) at the figure's last step" + (", raw pixels" if kind == "raw" else "")
            checks.append(qualitative([(m, d)], quantity, f"≤ {GAP_CLOSED:g} and ≤ the gap at the first "
                                      "evaluation after 0", runs, gap,
                                      [g <= GAP_CLOSED and g <= e for g, e in zip(gap, early)], d, end))
            if not checks[-1].held and (late := late_gap(runs)):
                facts.append(Fact("late_gap", {**late, "data": checks[-1].data.get((m, d), d), "n": len(runs),
                                               "network": name(m)}))
    return Claim("k-NN test accuracy follows the DNN's through training, the gap closing at the end",
                 "section 4.1, Figure 1 (a)–(f)", "the gap closes", settings,
                 f"|k-NN − DNN| at the figure's last step (MNIST: 500) at most {GAP_CLOSED:g} point and no larger "
                 "than at the first evaluation after step 0, in every run", checks,
                 facts + raw_fact(ev) + not_run_fact(ev, settings), "LeNet is the only network of the claim a CPU "
                 "trains at the paper's length.")


def raw_fact(ev: Evidence, dataset: str = "cifar10") -> list:
    """LeNet on `dataset` as the authors trained it for the paper, on raw pixels, beside the standardised
    run: what each gives (or that the raw run is not here yet)."""
    std, raw = ev.runs("lenet", dataset), ev.runs("lenet", dataset, "raw")
    if not std:
        return []
    if not raw:
        return [Fact("raw_pending", {"data": _data(std, [("lenet", dataset)]).get(("lenet", dataset), dataset)})]
    q = paper.QUANTITIES

    def numbers(runs):
        return {k: [q[k](r) for r in runs] for k in ("DNN test acc (%)", "k-NN − DNN (%)", "DNN generalisation gap (%)",
                                                      "k-NN generalisation gap (%)")}
    return [Fact("raw_vs_standardised", {"data": _data(raw, [("lenet", dataset)]).get(("lenet", dataset), dataset),
                                         "raw": numbers(raw),
                                         "standardised": numbers(std), "keys": [r.key for r in raw],
                                         "authors_dnn": paper.FIGURE2[("lenet", dataset)][1], "table2": TABLE2[("lenet", dataset)]})]


def late_gap(runs) -> dict | None:
    """Where the k-NN sits against the DNN over the second half of training (test set): its side and
    range in points, from which step; None when the side changes."""
    diffs, first = [], None
    for r in runs:
        t = r.table("test", k=PAPER_K, metric=PAPER_METRIC)
        late = t[t.step >= t.step.max() / 2]
        first = int(late.step.iloc[0])
        diffs += list(100 * (late.knn_acc - late.dnn_acc))
    if not diffs or min(diffs) < 0 < max(diffs):
        return None
    lo, hi = sorted(abs(d) for d in (min(diffs), max(diffs)))
    return {"side": "below" if max(diffs) < 0 else "above", "lo": lo, "hi": hi, "from_step": first}


def _mlp_gap(ev: Evidence, d: str) -> Claim:
    st = STATED[("mlp640", d, "|k-NN − DNN| (%)")]
    check = numeric(ev, "mlp640", d, "|k-NN − DNN| (%)", st)
    signed = paper.judge(ev.runs, "mlp640", d, "k-NN − DNN (%)", st)
    facts = [Fact("signed", {"values": signed.values})] if signed.values else []
    if check.step is not None and check.values:
        runs = ev.runs("mlp640", d)
        facts.append(Fact("at_last_step", {"values": [paper.QUANTITIES["|k-NN − DNN| (%)"](r) for r in runs],
                                           "paper_step": check.step, "last_step": runs[0].config.steps}))
    return Claim(f"MLP-640's k-NN and DNN test accuracies differ by {st.text}% on {name(d)}", st.where, st.text,
                 (("mlp640", d),), "the rule for a printed number, on |k-NN − DNN| (the paper gives no sign)",
                 [check], facts + not_run_fact(ev, [("mlp640", d)]))


@claim
def mlp_gap_mnist(ev: Evidence) -> Claim:
    return _mlp_gap(ev, "mnist")


@claim
def mlp_gap_cifar10(ev: Evidence) -> Claim:
    return _mlp_gap(ev, "cifar10")


@claim
def step0_knn_beats_dnn(ev: Evidence) -> Claim:
    checks = []
    for m, d in ALL:
        if runs := ev.runs(m, d):
            knn0, dnn0 = [100 * row(r, 0).knn_acc for r in runs], [100 * row(r, 0).dnn_acc for r in runs]
            checks.append(qualitative([(m, d)], "k-NN − DNN (points) at step 0", "> 0", runs,
                                      [a - b for a, b in zip(knn0, dnn0)], [a > b for a, b in zip(knn0, dnn0)], d, 0))
    return Claim("Before training the k-NN beats the DNN", "section 4.1, Figure 1", "in all cases", ALL,
                 "k-NN accuracy above the DNN's at step 0 in every run", checks, not_run_fact(ev, ALL),
                 "A k-NN on a random network's embedding is a k-NN on a random projection of the pixels; the "
                 "untrained network's softmax is at chance.")


@claim
def step0_same_accuracy(ev: Evidence) -> Claim:
    checks = []
    for d in DATASETS:
        step0 = {m: runs for m in NETWORKS if (runs := ev.runs(m, d))}
        if len(step0) > 1:
            means = [float(np.mean([100 * row(r, 0).knn_acc for r in runs])) for runs in step0.values()]
            all_runs = [r for runs in step0.values() for r in runs]
            checks.append(qualitative([(m, d) for m in step0], "spread of the networks' mean step-0 k-NN accuracy "
                                      "(points)", f"≤ {STEP0_SPREAD:g}", all_runs, [max(means) - min(means)],
                                      [max(means) - min(means) <= STEP0_SPREAD], d, 0, shape="statistic"))
    return Claim("Before training the k-NN accuracy is roughly the same for every architecture",
                 "section 4.1, Figure 1", "roughly the same", ALL,
                 f"on each dataset with two or more networks run, their mean step-0 k-NN accuracies within "
                 f"{STEP0_SPREAD:g} points", checks, not_run_fact(ev, ALL))


# -- section 4.2, Figure 2 ---------------------------------------------------------------------------
@claim
def layers_rise(ev: Evidence) -> Claim:
    settings = tuple((m, d) for m in ("wrn", "lenet") for d in DATASETS)
    checks = []
    for m, d in settings:
        runs = [r for kind in ("main", "raw") for r in ev.runs(m, d, kind)]
        tests = []
        for r in runs:
            last = r.last_step(split="test", metric=PAPER_METRIC, pca=0, k=PAPER_K).set_index("layer")
            order = [layer for layer in r.config.probe_layers if layer in last.index and layer != "embedding_raw"]
            tests.append(layers_test(list(100 * last.knn_acc.reindex(order)), 100 * last.dnn_acc.iloc[0]))
        if runs:
            checks.append(qualitative([(m, d)], "Spearman ρ of depth and k-NN accuracy (k = 30)",
                                      f"≥ {RISES:g}, and the embedding within {MEETS_DNN:g} points of the DNN",
                                      runs, [t[1] for t in tests], [t[0] for t in tests], d))
            checks[-1].digits = 3
    authors = [{"model": m, "dataset": d, "held": t[0], "rho": t[1], "gap": t[2]}  # on the layers we probe: no input
               for (m, d), (by_k, dnn) in paper.FIGURE2.items() for t in [layers_test(by_k[PAPER_K][1:], dnn)]]
    return Claim("k-NN accuracy rises with the layer's depth and meets the DNN's at the embedding",
                 "section 4.2, Figure 2", "increases as the layer deepens, resembling the DNN at the embedding",
                 settings, f"k = 30 by layer, from the first layer after the input to the embedding: Spearman's "
                 f"rank correlation of depth and accuracy at least {RISES:g}, and the embedding within {MEETS_DNN:g} "
                 f"points of the DNN (the authors' own panels, on the same layers: ρ 0.8 or more, up to 1.26 "
                 f"points)", checks,
                 [Fact("authors_figure2", {"panels": authors})] + not_run_fact(ev, settings),
                 "Each 2-D layer is globally average pooled before the k-NN, as in the paper, so a pooling layer can "
                 "read worse than the convolution before it; the authors' own values fall from conv1 to pool1 too, "
                 "so the test is on the trend, not on every step.")


@claim
def wrn_layer_names(ev: Evidence) -> Claim:
    named = {"mnist": "unit_2_2", "cifar10": "unit_3_2", "cifar100": "unit_3_3"}
    settings = tuple(("wrn", d) for d in DATASETS)
    layers = paper.FIGURE2_LAYERS["wrn"]
    authors = [{"dataset": d, "named": named[d], "ours": paper.PAPER_UNIT[named[d]],
                "first": first_within(paper.FIGURE2[("wrn", d)][0][PAPER_K], layers, paper.FIGURE2[("wrn", d)][1])}
               for d in DATASETS]
    checks = []
    for d in DATASETS:
        if runs := ev.runs("wrn", d):
            firsts = [first_layer_of(r) for r in runs]
            checks.append(qualitative([("wrn", d)], "the first layer within 1 point of the DNN (k = 30)",
                                      f"{paper.PAPER_UNIT[named[d]]} (the paper's {named[d]})", runs, [],
                                      [f == paper.PAPER_UNIT[named[d]] for f in firsts], d))
            checks[-1].layers = firsts
    return Claim("The Wide-ResNet's k-NN meets the DNN by unit_2_2 on MNIST, unit_3_2 / unit_3_3 on CIFAR-10 / 100",
                 "section 4.2, Figure 2 (a)", "unit_2_2 / unit_3_2 / unit_3_3", settings,
                 "the first layer whose k-NN (k = 30) is within 1 point of the DNN is the one the paper names "
                 "(the paper counts units from 1, our layer names from 0)", checks,
                 [Fact("authors_first_layer", {"panels": authors})] + not_run_fact(ev, settings))


# -- section 4.3, Figures 3 and 4 --------------------------------------------------------------------
@claim
def wrn_mc_me(ev: Evidence) -> Claim:
    checks = [numeric(ev, "wrn", "cifar10", q, STATED[("wrn", "cifar10", q)]) for q in ("MC", "ME")]
    return Claim("MC and ME approach 1 for the Wide-ResNet", "section 4.3, Figure 3 (a)–(c)",
                 "CIFAR-10: MC 0.999, ME 0.965", (("wrn", "cifar10"),), "the rule for a printed number", checks,
                 not_run_fact(ev, [("wrn", "cifar10")]))


@claim
def lenet_mc_me(ev: Evidence) -> Claim:
    settings = tuple(("lenet", d) for d in DATASETS)
    checks = [numeric(ev, "lenet", d, q, STATED[("lenet", None, q)], kind) for d in DATASETS for kind in ("main", "raw")
              for q in ("MC", "ME") if ev.runs("lenet", d, kind)]
    for c, kind in zip(checks, [k for d in DATASETS for k in ("main", "raw") for _ in ("MC", "ME")
                                if ev.runs("lenet", d, k)]):
        c.quantity += ", raw pixels" if kind == "raw" else ""
    return Claim("For LeNet MC is close to 1 and ME roughly around 0.8", "section 4.3, Figure 3 (d)–(f)",
                 "MC ≈ 1.0, ME ≈ 0.8", settings, "the rule for a printed number, on each dataset (the paper gives "
                 "one value for the three)", checks, not_run_fact(ev, settings))


@claim
def mlp_mc_mnist(ev: Evidence) -> Claim:
    st = STATED[("mlp640", "mnist", "MC")]
    return Claim("For MLP-640 MC on MNIST is high", st.where, st.text, (("mlp640", "mnist"),),
                 "the rule for a printed number", [numeric(ev, "mlp640", "mnist", "MC", st)],
                 not_run_fact(ev, [("mlp640", "mnist")]))


@claim
def mlp_attenuated(ev: Evidence) -> Claim:
    settings = tuple(("mlp640", d) for d in DATASETS)
    step = paper.paper_step("mnist", "section 4.3")
    ref = [paper.QUANTITIES["MC"](r, step) for r in ev.runs("mlp640", "mnist")]
    checks = []
    if ref:
        line = float(np.mean(ref)) - ATTENUATED
        for d in DATASETS:
            for q in (("ME",) if d == "mnist" else ("MC", "ME")):
                if runs := ev.runs("mlp640", d):
                    s = paper.paper_step(d, "section 4.3")
                    vals = [paper.QUANTITIES[q](r, s) for r in runs]
                    checks.append(qualitative([("mlp640", d)], q, f"≤ {line:.4f} (MNIST's MC − {ATTENUATED:g})",
                                              runs, vals, [v <= line for v in vals], d, s, digits=4))
    return Claim("For MLP-640 the scores other than MNIST's MC are greatly attenuated", "section 4.3", "greatly attenuated",
                 settings, f"every run's score at least {ATTENUATED:g} below MNIST's mean MC", checks,
                 not_run_fact(ev, settings))


@claim
def p_same_grows(ev: Evidence) -> Claim:
    checks = []
    for m, d in ALL:
        if runs := ev.runs(m, d):
            s = paper.paper_step(d, "Figure 4")
            grow = [row(r, s).P_SAME - row(r, 0).P_SAME for r in runs]
            checks.append(qualitative([(m, d)], "P_SAME at the end − at step 0", "> 0", runs, grow,
                                      [g > 0 for g in grow], d, s, digits=4))
    return Claim("P_SAME grows during training", "section 4.3, Figure 4", "grows", ALL,
                 "P_SAME at the figure's last step above its value at step 0, in every run", checks, not_run_fact(ev, ALL))


@claim
def wrn_p_same(ev: Evidence) -> Claim:
    settings = tuple(("wrn", d) for d in DATASETS)
    checks = [numeric(ev, "wrn", d, "P_SAME", STATED[("wrn", d, "P_SAME")]) for d in DATASETS]
    return Claim("For the Wide-ResNet P_SAME ends at 0.9998 / 0.9971 / 0.981", "section 4.3, Figure 4",
                 "0.9998 / 0.9971 / 0.981", settings, "the rule for a printed number", checks, not_run_fact(ev, settings))


@claim
def deeper_mc_me(ev: Evidence) -> Claim:
    checks = []
    for d in DATASETS:
        s = paper.paper_step(d, "section 4.3")
        ran = [(m, ev.runs(m, d)) for m in reversed(NETWORKS) if ev.runs(m, d)]  # shallow first
        for q in ("MC", "ME"):
            stats = [spread([paper.QUANTITIES[q](r, s) for r in runs]) for _, runs in ran]
            pairs = list(zip(stats, stats[1:]))
            if pairs:
                ok = [b[0] >= a[0] - (np.nan_to_num(a[1]) + np.nan_to_num(b[1])) for a, b in pairs]
                checks.append(qualitative([(m, d) for m, _ in ran], f"{q}, shallow to deep", "each network's mean at "
                                          "least the shallower one's, within their summed std",
                                          [r for _, runs in ran for r in runs], [x[0] for x in stats], ok,
                                          d, s, digits=4, shape="series"))
    return Claim("The correspondence grows stronger in MC and ME as the network becomes deeper", "section 4.3",
                 "stronger as the network deepens", ALL, "on each dataset, MC and ME do not fall from MLP-640 to "
                 "LeNet to the Wide-ResNet (the networks run there)", checks, not_run_fact(ev, ALL) + depth_fact(ev),
                 "The depth-and-width chapter sets the networks side by side.")


# -- section 5 ------------------------------------------------------------------------------------
@claim
def lenet_early_wrn_late(ev: Evidence) -> Claim:
    settings = tuple((m, d) for m in ("lenet", "wrn") for d in DATASETS)
    checks = []
    for d in DATASETS:
        lenet, wrn = ev.runs("lenet", d), ev.runs("wrn", d)
        if lenet and wrn:
            checks.append(_early_late([("lenet", d), ("wrn", d)], lenet, wrn, d))
    facts = []
    q = {m: ev.quick_run(m, "mnist5k") for m in ("lenet", "wrn")}
    if all(q.values()):
        c = _early_late([], [q["lenet"]], [q["wrn"]], "mnist5k")
        facts.append(Fact("indicative", {"what": f"quick profile ({q['lenet'].config.label()} against "
                                                 f"{q['wrn'].config.label()})", "quantity": c.quantity,
                                         "values": c.values, "held": c.held, "digits": 4}))
    return Claim("LeNet's P_SAME is higher early in training, and the Wide-ResNet's at the end", "section 5",
                 "LeNet first, eventually surpassed by the Wide-ResNet", settings,
                 "LeNet's mean P_SAME above the Wide-ResNet's at the first evaluation after step 0, and below it "
                 "at the last", checks, facts + not_run_fact(ev, settings) + depth_fact(ev, leaders=True))


def depth_fact(ev: Evidence, leaders: bool = False) -> list:
    """The depth-and-width chapter's data (`depth`) for a depth claim, where more than two networks were run:
    MC and ME of each, or (leaders) which network leads P_SAME early and at the end."""
    from . import depth
    nets = ev._get(("full", "depth"), lambda: depth.networks(ev.full))
    if sum(bool(n.runs) for n in nets) < 3:
        return []
    if leaders:
        return [Fact("depth_leaders", depth.leaders(depth.p_same_curves(nets)))]
    m = depth.measures(nets)
    return [Fact("depth_measures", {"rows": m[m.quantity.isin(["MC", "ME"])].to_dict("records")})]


def _early_late(settings, lenet, wrn, d) -> Check:
    def mean_at(runs, which):
        return float(np.mean([row(r, first_step_after_0(r) if which == "early" else None).P_SAME for r in runs]))
    early = mean_at(lenet, "early") - mean_at(wrn, "early")
    late = mean_at(lenet, "late") - mean_at(wrn, "late")
    return qualitative(settings, "LeNet − Wide-ResNet P_SAME, early and at the end", "> 0 early, < 0 at the end",
                       [*lenet, *wrn], [early, late], [early > 0 and late < 0], d, digits=4, shape="statistic")


# -- section 4.4, appendix E: random labels ----------------------------------------------------------
@claim
def random_train_accuracy(ev: Evidence) -> Claim:
    settings = tuple(("wrn", d) for d in DATASETS)
    checks = [numeric(ev, "wrn", d, f"{who} random-label training accuracy (%)",
                      STATED[("wrn", d, "random-label training accuracy (%)")]) for d in DATASETS for who in ("DNN", "k-NN")]
    facts = []
    if (q := ev.quick_run("wrn", "mnist5k", "random")) is not None:
        f = row(q, split="train")
        facts.append(Fact("indicative", {"what": f"quick profile ({q.config.label()}, first "
                                                 f"{q.config.limit[0] if q.config.limit else 'all'} training images)",
                                         "quantity": "training accuracy DNN, k-NN (%)",
                                         "values": [100 * f.dnn_acc, 100 * f.knn_acc], "held": None, "digits": 1}))
    return Claim("With random labels the k-NN follows the DNN on the training set", "section 4.4, Figure 5",
                 "100 / 100 / 99.972%", settings, "the rule for a printed number, for the DNN and the k-NN",
                 checks, facts + not_run_fact(ev, settings, "random"))


@claim
def random_p_same_grows(ev: Evidence) -> Claim:
    settings = tuple(("wrn", d) for d in DATASETS)
    checks = []
    for d in DATASETS:
        if runs := ev.runs("wrn", d, "random"):
            grow = [row(r, split=s).P_SAME - row(r, 0, s).P_SAME for r in runs for s in ("train", "test")]
            checks.append(qualitative([("wrn", d)], "P_SAME at the end − at step 0, training and test set", "> 0",
                                      runs, grow, [g > 0 for g in grow], d, digits=4))
    return Claim("With random labels P_SAME grows on the training and the test set", "appendix E, Figure 8", "grows",
                 settings, "P_SAME at the last step above step 0's, on both sets, in every run", checks,
                 not_run_fact(ev, settings, "random"))


# -- appendix B, Table 1 -------------------------------------------------------------------------------
@claim
def robust(ev: Evidence) -> Claim:
    settings = (("wrn", "cifar10"), ("wrn", "cifar100"))
    checks, facts = [], []
    for m, d in [*settings, ("mlp640", "mnist"), ("lenet", "mnist")]:
        if runs := ev.runs(m, d):
            spans = [robust_span(r) for r in runs]
            c = qualitative([(m, d)], "largest |k-NN − k = 30, L1| over k ≤ 150, L1 / L2, PCA-64 (points)", "≤ 1",
                            runs, spans, [s <= 1.0 for s in spans], d)
            if (m, d) in settings:
                checks.append(c)
            else:  # a setting Table 1 does not show: evidence beside the claim, not for its verdict
                facts.append(Fact("other_setting", {"check": c}))
    return Claim("k-NN accuracy is robust to k, to L1 / L2 and to PCA-64, except k = 1000 on CIFAR-100",
                 "appendix B, Table 1", "within 0.1 point for k ≤ 150", settings,
                 "every k ≤ 150, L1 and L2, with and without PCA-64 within 1 point of k = 30, L1", checks,
                 facts + not_run_fact(ev, settings))


def robust_span(run) -> float:
    last = run.last_step(split="test", layer="embedding")
    last = last[last.k <= 150]
    ref = last[(last.k == PAPER_K) & (last.metric == PAPER_METRIC) & (last.pca == 0)].knn_acc.iloc[0]
    return float(100 * (last.knn_acc - ref).abs().max())


# -- appendix C, Table 2 -------------------------------------------------------------------------------
@claim
def table2_values(ev: Evidence) -> Claim:
    checks, facts = [], []
    for m, d, q, st in paper.table2_stated():
        for kind in ("main", "raw") if (m, d) == ("lenet", "cifar10") else (None,):
            if kind == "raw" and not ev.runs(m, d, "raw"):
                continue
            checks.append(numeric(ev, m, d, q, st, kind))
            checks[-1].quantity += ", raw pixels" if kind == "raw" else ""
    mnist = [c for c in checks if c.step is not None and c.values]
    if mnist:  # the sign of the authors' formula at b5e7428 (train − test error), fixed at 48646ef
        facts.append(Fact("table2_flipped", {"rows": [
            {"setting": c.settings[0], "quantity": c.quantity, "values": [-v for v in c.values],
             "paper": c.paper, "held": paper.agrees(Stated(c.paper, "Table 2"), [-v for v in c.values]).held}
            for c in mnist]}))
        rows = [{"setting": c.settings[0], "quantity": c.quantity, "paper_step": c.step,
                 "values": [paper.QUANTITIES[c.quantity](r) for r in ev.runs(*c.settings[0])]}
                for c in mnist if ev.runs(*c.settings[0])]
        if rows:  # the main runs' last step, where they are here
            facts.append(Fact("table2_last_step", {"rows": rows, "last_step": max(
                r.config.steps for c in mnist for r in ev.runs(*c.settings[0]))}))
    return Claim("Table 2's generalisation errors", "appendix C, Table 2", "9 × 2 values", ALL,
                 "the rule for a printed number, per cell (MNIST: the authors' 500-step runs)", checks,
                 facts + raw_fact(ev) + table2_missing(ev),
                 "The paper defines the error as 'differentiating the training and testing error rates', leaving "
                 "the sign open; the authors' code computed train − test in one commit (b5e7428, "
                 "`knn_classifier_tester.py`) and test − train 33 minutes later (48646ef); we use the latter.")


@claim
def table2_similar(ev: Evidence) -> Claim:
    checks = []
    for m, d in ALL:
        for kind in ("main", "raw") if (m, d) == ("lenet", "cifar10") else (table2_kind(d),):
            if runs := ev.runs(m, d, kind):
                gaps = [report_gap(r, i) for r in runs for i in (0, 1)]
                diff = abs(float(np.mean(gaps[0::2])) - float(np.mean(gaps[1::2])))
                checks.append(qualitative([(m, d)], "|DNN − k-NN| generalisation error (points)" +
                                          (", raw pixels" if kind == "raw" else ""), f"≤ {SIMILAR:.1f}", runs, [diff],
                                          [diff <= SIMILAR + 1e-9], d, shape="statistic"))
    return Claim("A DNN generalises similarly to a k-NN on its embedding", "appendix C, Table 2", "similar", ALL,
                 f"the mean DNN and k-NN generalisation errors within {SIMILAR:.1f} points: the largest difference "
                 "in the paper's own Table 2 (MLP-640 on CIFAR-100)", checks, table2_missing(ev))


@claim
def table2_deeper(ev: Evidence) -> Claim:
    checks = []
    for d in DATASETS:
        kind = table2_kind(d)
        wrn, others = ev.runs("wrn", d, kind), [m for m in ("lenet", "mlp640") if ev.runs(m, d, kind)]
        if wrn and others:
            def diff(m):
                return abs(float(np.mean([report_gap(r, 0) - report_gap(r, 1) for r in ev.runs(m, d, kind)])))
            checks.append(qualitative([("wrn", d), *((m, d) for m in others)], "|DNN − k-NN| difference, "
                                      "Wide-ResNet − the others' smallest", "≤ 0", wrn,
                                      [diff("wrn") - min(diff(m) for m in others)],
                                      [diff("wrn") <= min(diff(m) for m in others)], d, shape="statistic"))
    return Claim("The similarity is more prominent for deeper networks", "appendix C, Table 2", "more prominent",
                 ALL, "the Wide-ResNet's |DNN − k-NN| difference no larger than any other network's on the same "
                 "dataset (the paper's Table 2: 0.1 / 0.0 / 0.0, the smallest or tied)", checks, table2_missing(ev))


def table2_kind(dataset: str) -> str:
    """The runs Table 2 reads: the authors' 500-step runs on MNIST, the main runs elsewhere."""
    return "table2" if dataset == "mnist" else "main"


def table2_missing(ev: Evidence) -> list:
    """What would run Table 2's settings that have no run here, each of its own kind."""
    return (not_run_fact(ev, [s for s in ALL if s[1] == "mnist"], "table2")
            + not_run_fact(ev, [s for s in ALL if s[1] != "mnist"]))


def report_gap(run, i: int) -> float:
    """Table 2's DNN (i = 0) or k-NN (1) gap of a run at Table 2's step (a main run on MNIST: step 500)."""
    return paper.QUANTITIES[("DNN", "k-NN")[i] + " generalisation gap (%)"](run, paper.paper_step(run.config.dataset, "Table 2"))


# -- appendix D, Figure 7 ------------------------------------------------------------------------------
@claim
def gd_unchanged(ev: Evidence) -> Claim:
    gd, sgd = ev.gd(), ev.runs("mlp640", "mnist")
    checks = []
    if gd is not None and sgd:
        s = paper.paper_step("mnist", "Figure 3")
        for q in ("MC", "P_SAME"):
            mean = spread([paper.QUANTITIES[q](r, s) for r in sgd])[0]
            checks.append(qualitative([("mlp640", "mnist")], f"{q}: GD − SGD mean", f"≥ −{GD_MARGIN:g}", [gd],
                                      [float(row(gd)[q]) - mean], [float(row(gd)[q]) >= mean - GD_MARGIN],
                                      "mnist", digits=4, shape="statistic"))
    return Claim("Full-batch gradient descent does not change the correspondence", "appendix D, Figure 7",
                 "no change", (("mlp640", "mnist"),), f"the GD run's final MC and P_SAME at most {GD_MARGIN:g} below "
                 "the SGD runs' means, or above them", checks,
                 why="MLP-640 on MNIST, full-batch GD, 400 steps (appendix D).")


def evaluate(quick, full) -> list[Claim]:
    """Every registered claim, judged on the paper profile `full` (read only); `quick` for indicative numbers.
    A claim about the Wide-ResNet is judged again with the CPU's stand-in in its place (`StandInEvidence`):
    the checks of the Wide-ResNet settings not run here become its `indicative` list, outside the verdict."""
    return judge_all(Evidence(quick, full))


def _on_subset(c: Check, ev: StandInEvidence) -> Check:
    """The check with a stand-in run on a subset (random labels) named by it: 'MNIST, first 5,000 ...'."""
    runs = {r.key: r for k, rs in ev._cache.items() if k[:2] == ("full", ev.KEY) for r in rs or []}
    for s in c.settings:
        sub = [runs[key] for key in c.runs if key in runs and runs[key].config.limit and runs[key].config.dataset == s[1]]
        if s[0] == "wrn" and sub:
            c.data[s] = name(s[1]) + experiments.subset_text(sub[0])
    return c


def judge_all(ev: Evidence) -> list[Claim]:
    """`evaluate` on given evidence (tests: `Evidence.of`, the stand-in's runs under ("wrn-28-2", dataset, kind))."""
    cpu = StandInEvidence(ev)
    out = []
    for fn in CLAIMS:
        cl = fn(ev)
        run_here = cl.setting_held()
        wanted = {s for s in cl.settings if s[0] == "wrn" and s not in run_here}
        if wanted:
            cl.indicative = [_on_subset(c, cpu) for c in fn(cpu).checks if c.held is not None and wanted & set(c.settings)]
            cl.indicative_name = model_name("wrn", PAPER_WRN[0], CPU_WRN_WIDTHS[0])
        out.append(cl)
    return out


@functools.lru_cache(maxsize=None)
def train_flops(cfg) -> float:
    """Training FLOPs of a run (forward and backward, counted on the meta device): steps x batch x
    FLOPs per image; evaluation not included."""
    shape = (1, 28, 28) if cfg.dataset in ("mnist", "mnist5k") else (3, 32, 32)
    r = cfg.resolve()
    batch = r.batch_size or (60_000 if r.dataset == "mnist" else 50_000)
    return _flops_per_image(r.model, shape, 100 if r.dataset == "cifar100" else 10, r.depth, r.width) * batch * r.steps


@functools.lru_cache(maxsize=None)
def _flops_per_image(model_name: str, shape: tuple, classes: int, depth, width) -> float:
    """One image's forward and backward FLOPs, counted once per network."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model

    with torch.device("meta"):
        model = build_model(model_name, shape, classes, depth=depth, width=width)
        x = torch.empty(2, *shape)
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    return fc.get_total_flops() / 2


def duration(seconds: float) -> str:
    """'2.3 h', '14 min' or 'under a minute'."""
    return (f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 60
            else "under a minute")


def gpu_hours(cfgs) -> tuple[float, float]:
    """(PFLOP of training, projected hours on one GPU at GPU_TFLOPS sustained) for `cfgs`."""
    flops = sum(train_flops(c) for c in cfgs)
    return flops / 1e15, flops / (GPU_TFLOPS * 1e12) / 3600


