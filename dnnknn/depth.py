"""Depth and width, which the paper does not show side by side: its three networks and the Wide-ResNet at
its depth and a CPU's widths, on MNIST at appendix A's settings.

`networks(P)` finds each network's seeds (read only); `table` gives the final k-NN − DNN gap, MC, ME and
P_SAME (mean ± std over seeds) beside parameters and training FLOPs; `measures` the same as numbers,
for the figure against parameters; `p_same_curves` P_SAME along training (section 5: LeNet leads early,
the deeper network later). The figures are in `plots`.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import experiments
from .metrics import spread
from .names import CPU_WRN_WIDTHS, PAPER_K, PAPER_METRIC, PAPER_WRN, model_name
from .profiles import Params

DATASET = "mnist"
# shallow to deep, narrow to wide: (model, Wide-ResNet width)
LINEUP = (("mlp640", None), ("lenet", None), *(("wrn", w) for w in (*CPU_WRN_WIDTHS, PAPER_WRN[1])))
QUANTITIES = ("k-NN − DNN (points)", "MC", "ME", "P_SAME")


@dataclass
class Network:
    name: str
    model: str
    width: int | None
    config: object  # seed 0's RunConfig
    runs: list  # its seeds' runs here (read only)

    @property
    def parameters(self) -> int:
        return _parameters(self.model, self.width)

    @property
    def train_flops(self) -> float:
        from .claims import train_flops
        return train_flops(self.config)


@functools.lru_cache(maxsize=None)
def _parameters(model: str, width: int | None) -> int:
    """Parameters of the network, counted once on the meta device (a table asks for each several times)."""
    import torch

    from .models import build_model, count_parameters
    with torch.device("meta"):
        return count_parameters(build_model(model, (1, 28, 28), 10, **(
            {"depth": PAPER_WRN[0], "width": width} if model == "wrn" else {})))


def networks(P: Params) -> list[Network]:
    """The lineup on MNIST at the paper profile's settings, each with the seeds `P.n_runs` asks for that
    are here (never trained by this call)."""
    full = P.as_profile("paper", n_runs=P.n_runs, train_missing=False)
    out = []
    for model, width in LINEUP:
        Pw = dataclasses.replace(full, wrn_depth=PAPER_WRN[0], wrn_width=width) if width else full
        out.append(Network(model_name(model, PAPER_WRN[0], width) if width != PAPER_WRN[1] else "Wide-ResNet-28-10",
                           model, width, experiments.main_config(Pw, DATASET, model),
                           experiments.seed_runs(Pw, model, DATASET)))
    return out


def cells(nets: list[Network]) -> tuple[dict, dict]:
    """({(network, dataset): its runs}, {(network, dataset): seed 0's config}): `report.sources`' arguments."""
    return {(n.name, DATASET): n.runs for n in nets}, {(n.name, DATASET): n.config for n in nets}


def _final(run) -> dict:
    """A run's last test evaluation (k = 30, L1): the quantities of `QUANTITIES`."""
    r = run.at(None, split="test", k=PAPER_K, metric=PAPER_METRIC)
    return {"k-NN − DNN (points)": 100 * (r.knn_acc - r.dnn_acc), "MC": r.MC, "ME": r.ME, "P_SAME": r.P_SAME}


def measures(nets: list[Network]) -> pd.DataFrame:
    """One row per (network run here, quantity): parameters, training FLOPs, mean, std and n over seeds."""
    rows = []
    for n in nets:
        if not n.runs:
            continue
        finals = [_final(r) for r in n.runs]
        for q in QUANTITIES:
            mean, std, _ = spread([f[q] for f in finals])
            rows.append({"network": n.name, "parameters": n.parameters, "training FLOPs": n.train_flops,
                         "quantity": q, "mean": mean, "std": std, "n": len(finals)})
    return pd.DataFrame(rows, columns=["network", "parameters", "training FLOPs", "quantity", "mean", "std", "n"])


def table(nets: list[Network]) -> pd.DataFrame:
    """The chapter's first table: a row per network (those not run here say so), the last step's
    quantities as mean ± std over seeds."""
    from .report import fmt_spread
    rows = []
    for n in nets:
        row = {"network": n.name, "seeds": len(n.runs) or "not run here"}
        finals = [_final(r) for r in n.runs]
        for q in QUANTITIES:
            row[q] = fmt_spread([f[q] for f in finals], 2 if "points" in q else 4) if finals else "—"
        rows.append(row)
    return pd.DataFrame(rows).set_index("network")


def cost_table(nets: list[Network]) -> pd.DataFrame:
    """The chapter's second table: a row per network, its size, training FLOPs, and what its runs recorded."""
    rows = []
    for n in nets:
        walls = [r.meta.get("wall_time_s") for r in n.runs]
        rows.append({"network": n.name, "parameters (M)": f"{n.parameters / 1e6:.2f}",
                     "training (TFLOP a run)": f"{n.train_flops / 1e12:,.1f}",
                     "precision": ", ".join(sorted({r.config.precision for r in n.runs})) or "—",
                     "hours a run (mean)": f"{np.mean(walls) / 3600:.2f}" if walls and None not in walls else "—"})
    return pd.DataFrame(rows).set_index("network")


def p_same_curves(nets: list[Network], models=("lenet", "wrn")) -> pd.DataFrame:
    """P_SAME on the test set at every evaluation: network, seed, step, P_SAME (the networks run here)."""
    parts = [r.table("test", k=PAPER_K, metric=PAPER_METRIC)[["step", "P_SAME"]].assign(network=n.name, seed=r.config.seed)
             for n in nets if n.model in models for r in n.runs]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["step", "P_SAME", "network", "seed"])


def leaders(curves: pd.DataFrame) -> dict:
    """Section 5's statement as data: the network with the highest mean test P_SAME at the first
    evaluation after step 0 and at the last, with every network's mean there."""
    out = {}
    if curves.empty:
        return out
    for when, step in (("early", sorted(s for s in curves.step.unique() if s > 0)[:1]), ("last", [curves.step.max()])):
        if not step:
            continue
        means = curves[curves.step == step[0]].groupby("network", sort=False).P_SAME.mean()
        out[when] = {"step": int(step[0]), "leader": str(means.idxmax()), "means": means.to_dict()}
    return out


def costs(P: Params) -> pd.DataFrame:
    """The depth section's runs (`experiments.depth_configs`): whether each is here, and the wall time a run
    of its setting took where one is (training and evaluation, on the machine its record names)."""
    full = P.as_profile("paper", train_missing=False)
    cfgs = experiments.depth_configs(full)
    found = [experiments.find(full, c) for c in cfgs]
    rows = []
    for c, run in zip(cfgs, found):
        same = [r for r, o in zip(found, cfgs) if r is not None and o.setting() == c.setting()]
        rows.append({"run": c.label(), "here": "yes" if run is not None else "no",
                     "measured hours a run": (f"{np.mean([r.meta['wall_time_s'] for r in same]) / 3600:.2f} "
                                              f"(n={len(same)})" if same else "not measured yet"),
                     "on": ", ".join(dict.fromkeys(r.meta["device_name"] for r in same)) or "—"})
    return pd.DataFrame(rows).set_index("run")
