"""The book's two profiles as plain data (QUICK, PAPER) and a page's parameters (`Params`); the runs
each section builds from them are in experiments.py, the captions that describe them in report.py.

A notebook's `parameters` cell sets only what its reader may change; `Params.from_globals(globals())`
reads those (and any parameter the book's driver injects), checks them (a wrong name, type or value
stops with a message naming the parameter and the allowed values) and fills the rest from the
profile:

- `quick` (default): offline `mnist5k`, CPU-sized models (Wide-ResNet 10-1), few steps; on a CPU
  that computes bf16 natively (AVX512-BF16, AMX) the training steps run under bf16 autocast, every
  evaluation in fp32 (`precision` "auto"; `-p precision fp32` trains in fp32).
- `paper`: appendix A: MNIST / CIFAR-10 / CIFAR-100, Wide-ResNet 28-10, 1,000 / 50,000 steps,
  10 runs for Table 1. Without a GPU only runs already in the store (or `results/`) and the
  MNIST runs of MLP-640 and LeNet are trained; the others show as "not run here".

Parameters are checked by `_check_types` (against the fields' annotations) and `Params._check_values`.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig, eval_schedule
from .errors import ConfigError
from .names import (CPU_WRN_WIDTHS, DATASETS, METRICS, MODELS, PAPER_WRN, PRECISIONS, PROFILES, WRN_DEPTH_RULE, is_dataset,
                    wrn_depth_ok)
from .runs import RunStore

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "results"  # committed, read-only records of runs made elsewhere
PAPER_DATASETS = ("mnist", "cifar10", "cifar100")
TABLE1_KS = (1, 5, 30, 150, 1000)
FIG2_KS = (1, 5, 30, 100)
ALL_KS = tuple(sorted(set(TABLE1_KS) | set(FIG2_KS)))
NEIGHBOUR_IMAGES = 64  # test images whose nearest training images the main runs record

# Each profile's value for every parameter left at None (the one place these defaults live); the
# models in the paper's row order (Figures 1, 3, 4: Wide-ResNet, LeNet, MLP-640). The paper profile
# trains in fp32: LeNet on the CIFAR-10 JPEG copy, 1,000 steps, 3 seeds each, had bf16-train's MC
# 0.0029 above fp32's, against 2 std = 0.0015 of the fp32 seeds (`benchmarks/precision_pair.py
# --seeds 3`); accuracy, ME and P_SAME agreed.
QUICK = dict(datasets=("mnist5k",), models=("wrn", "lenet", "mlp640"), wrn_depth=10, wrn_width=1,
             steps=300, eval_every=30, n_runs=3, figure_runs=1, random_limit=(500, 500), random_steps=400,
             gd_steps=400, gd_eval_every=20, gd_dataset="mnist5k", precision="auto")
PAPER = dict(datasets=PAPER_DATASETS, models=("wrn", "lenet", "mlp640"), wrn_depth=28,
             wrn_width=10, steps=None, eval_every=None, n_runs=10, figure_runs=10, random_limit=None,
             random_steps=None, gd_steps=400, gd_eval_every=20, gd_dataset="mnist", precision="fp32")


# The paper-profile MNIST runs made by dnnknn 0.2, kept in results/ beside today's (page 09)
LEGACY_VARIANT = "schedule at 30/60/80% of the steps, grey crop border (dnnknn 0.2)"

NOT_RUN = "not run here"
CPU_FILL = ("`python -m dnnknn grid --profile paper --executor local --datasets mnist --models mlp640 lenet "
            "--sections main gd --device cpu`")  # trains what fits a CPU


# trains the depth chapter's Wide-ResNets one after another (about 75 min a seed of the -28-2 on 2 cores)
DEPTH_FILL = "`python -m dnnknn grid --profile paper --executor serial --sections depth --device cpu`"


def is_depth_run(cfg: RunConfig) -> bool:
    """A run of the depth chapter: the Wide-ResNet at the paper's depth and a CPU's width."""
    r = cfg.resolve()
    return r.model == "wrn" and r.depth == PAPER_WRN[0] and r.width in CPU_WRN_WIDTHS


def cpu_command(cfg: RunConfig) -> str | None:
    """The command (Markdown) that trains `cfg` on a CPU, None where it needs a GPU."""
    return CPU_FILL if fits_cpu(cfg) else DEPTH_FILL if is_depth_run(cfg) else None


def fits_cpu(cfg: RunConfig) -> bool:
    """Whether a paper-profile run trains on a CPU in minutes: MLP-640 and LeNet on MNIST."""
    return cfg.dataset in ("mnist", "mnist5k") and cfg.model in ("mlp640", "lenet")


def paper_steps(dataset: str) -> int:
    """Appendix A: 50,000 steps (200 epochs at batch 200) for CIFAR, 1,000 for MNIST."""
    return 50_000 if dataset.startswith("cifar") else 1_000


@dataclass(frozen=True)
class Params:
    """A page's parameters. Build it with `from_globals` / `from_notebook`: every field left at None
    that the profile sets (QUICK / PAPER above: the one place those defaults live) is filled from it."""
    profile: str = "quick"
    datasets: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    steps: int | None = None          # paper: per dataset (appendix A)
    eval_every: int | None = None     # paper: eval_schedule's default
    ks: tuple[int, ...] = ()          # extra k values, besides those each section uses
    metric: str = "l1"                # k-NN distance of the figures
    n_runs: int | None = None         # seeds of every main run
    figure_runs: int | None = None    # seeds a figure draws (mean ± sd), those of them that exist (paper: all)
    device: str = "auto"              # "auto": CUDA when present
    data_dir: str | None = None       # None: $DNNKNN_DATA or ~/.cache/dnnknn/data
    runs_dir: str | None = None       # None: $DNNKNN_RUNS or ./runs
    train_missing: bool | None = None  # None: quick trains all; paper trains what fits the device
    wrn_depth: int | None = None
    wrn_width: int | None = None
    random_limit: tuple[int, int] | None = None  # (train, test) images of the random-label runs
    random_steps: int | None = None
    gd_steps: int | None = None
    gd_eval_every: int | None = None
    gd_dataset: str | None = None
    precision: str | None = None      # a RunConfig precision, or "auto" (see the module docstring)

    @classmethod
    def from_globals(cls, namespace: dict) -> "Params":
        """The page's parameters: the names in a notebook's namespace that are parameters."""
        return cls.from_notebook(**{f.name: namespace[f.name] for f in dataclasses.fields(cls)
                                    if f.name in namespace})

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
        # a value left at None: the profile's, else the field's default
        vals = {**defaults, **{k: v for k, v in given.items() if v is not None}}
        _check_types(vals)
        for k in ("datasets", "models", "ks", "random_limit"):
            if vals.get(k) is not None:
                vals[k] = tuple(vals[k])
        p = cls(**vals)
        p._check_values()
        return p

    def as_profile(self, profile: str, **given) -> "Params":
        """The same machine settings (device, data and run folders) under another profile."""
        return Params.from_notebook(profile=profile, device=self.device, data_dir=self.data_dir,
                                    runs_dir=self.runs_dir, **given)

    def _check_values(self):
        for name in ("datasets", "models"):
            if not getattr(self, name):
                raise ConfigError(f"parameter {name!r} must name at least one, got []")
        for name, names in (("datasets", self.datasets), ("gd_dataset", (self.gd_dataset,))):
            for d in names:
                if not is_dataset(d):
                    raise ConfigError(f"parameter {name!r}: unknown dataset {d!r}; allowed: {', '.join(DATASETS)}")
        if self.random_limit is not None and (len(self.random_limit) != 2 or min(self.random_limit) <= 0):
            raise ConfigError(f"parameter 'random_limit' must be two positive numbers of images (train, test), "
                              f"got {list(self.random_limit)}")
        if self.wrn_width < 1:
            raise ConfigError(f"parameter 'wrn_width' must be a positive integer (10 in the paper), got {self.wrn_width}")
        for m in self.models:
            if m not in MODELS:
                raise ConfigError(f"parameter 'models': unknown model {m!r}; allowed: {', '.join(MODELS)}")
        if self.metric not in METRICS:
            raise ConfigError(f"parameter 'metric' must be one of {METRICS}, got {self.metric!r}")
        for name in ("steps", "eval_every", "n_runs", "figure_runs", "gd_steps", "gd_eval_every", "random_steps"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"parameter {name!r} must be a positive integer, got {v!r}")
        if any(k <= 0 for k in self.ks):
            raise ConfigError(f"parameter 'ks' must hold positive integers, got {list(self.ks)}")
        if not wrn_depth_ok(self.wrn_depth):
            raise ConfigError(f"parameter 'wrn_depth' must be {WRN_DEPTH_RULE}, got {self.wrn_depth}")
        if self.precision not in ("auto", *PRECISIONS):
            raise ConfigError(f"parameter 'precision' must be one of auto, {', '.join(PRECISIONS)}; "
                              f"got {self.precision!r}")
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

    @property
    def train_precision(self) -> str:
        """The runs' precision. "auto": bf16 autocast for the training steps (evaluation in fp32) on
        a CPU that computes bf16 natively - there the quick profile's Wide-ResNet, LeNet and MLP-640
        steps ran 1.5x, 2x and 1.3x faster (`benchmarks/train.py --quick-bf16`, 1 thread) - else
        fp32 (elsewhere bf16 is emulated, and slower)."""
        if self.precision != "auto":
            return self.precision
        from .train import cpu_has_bf16
        return "bf16-train" if self.device_type == "cpu" and cpu_has_bf16() else "fp32"

    def steps_for(self, dataset: str) -> int:
        return self.steps or paper_steps(dataset)

    def eval_steps_for(self, dataset: str, steps: int | None = None) -> tuple[int, ...]:
        return eval_schedule(steps or self.steps_for(dataset), self.eval_every)

    def model_options(self, model: str) -> dict:
        return {"depth": self.wrn_depth, "width": self.wrn_width} if model == "wrn" else {}

    def store(self) -> RunStore:
        return RunStore(self.runs_dir, extra=[RESULTS_DIR])



def _check_types(vals: dict):
    """Each value against its field's annotation (int, str, bool, tuple[...] and None unions)."""
    hints = typing.get_type_hints(Params)

    def ok(v, t) -> bool:
        origin, args = typing.get_origin(t), typing.get_args(t)
        if args and origin is not tuple:  # a union: any of its members
            return any(ok(v, a) for a in args)
        if t is type(None):
            return v is None
        if origin is tuple:
            return isinstance(v, (list, tuple)) and all(ok(x, args[0]) for x in v)
        return isinstance(v, t) and not (t is int and isinstance(v, bool))

    for name, v in vals.items():
        if not ok(v, hints[name]):
            t = str(hints[name]).replace("typing.", "").replace("<class '", "").replace("'>", "")
            hint = (f"; papermill's -p passes text: give a list as YAML, papermill ... -y '{name}: [a, b]', or "
                    f"python -m dnnknn book -p {name} '[\"a\", \"b\"]'" if "tuple" in t and isinstance(v, str) else "")
            raise ConfigError(f"parameter {name!r} must be of type {t}, got {v!r} ({type(v).__name__}){hint}")


