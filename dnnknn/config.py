"""A run's frozen configuration, with the paper's defaults (appendix A) filled in by `resolve`."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass

from .errors import ConfigError
from .names import (DATASETS, LABELS, METRICS, MODELS, OPTIMIZERS, PAD_FILLS, PIXELS, PRECISIONS,
                    WEIGHT_DECAY_RULES, WRN_DEPTH_RULE, embed_dim, is_dataset, wrn_depth_ok)

# Decay applies to the weights of convolutions and fully connected layers only (not to biases or
# batch-norm), as in the authors' code (the `DW` variables). The coefficient on 1/2 |w|^2:
#   "authors":    what giladcohen/tensorflow_TB applied: LeNet and MLP-640 put the rate into
#                 slim.l2_regularizer *and* multiply the summed losses by it again (rate^2); the
#                 Wide-ResNet applies the rate once.
#   "paper-text": the rate as the paper states it, for every model.
# (WEIGHT_DECAY_RULES; PRECISIONS are described in names.py.)
# What the crop's 2-pixel border holds (PAD_FILLS): "black": the authors' order (pad the raw image with black,
# crop, then standardise the crop; `lib/datasets/dataset_wrapper.py` at 48646ef); "zero": dnnknn
# 0.2's (standardise, then pad with zeros: the image's mean grey, no second standardisation).
# New fields at these values describe what dnnknn 0.2 did: left out of a run's identity, so that
# the runs made before the field existed keep their keys (and are found in results/).
LEGACY_IDENTITY = {"pad_fill": ("zero", None), "full_eval_steps": (None,), "neighbour_images": (0,),
                   "train_full": (True,), "pixels": ("standardised",)}
# A record written by dnnknn 0.2 has no pad_fill: its border was the grey one
RECORD_DEFAULTS = {"pad_fill": "zero"}
# The authors' learning-rate drops, as fractions of the steps: CIFAR epochs 60/120/160 of 200
# (`train_simple_cifar10.ini`); MNIST global steps 150/300/400 of 1,000 (`train_simple.ini` at 501a6cb)
MAX_WEIGHT_DECAY = 10.0  # beyond it the decay alone wipes the weights out (and rate² overflows float32 near 1e19)
CIFAR_SCHEDULE = (0.3, 0.6, 0.8)
MNIST_SCHEDULE = (0.15, 0.3, 0.4)
# Only the real MNIST: the authors' drops are fixed steps for 1,000 steps over 60,000 images (the book's
# list of choices says why MNIST-5k keeps the CIFAR proportions)
MNIST_SCHEDULE_DATASETS = ("mnist",)


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "mnist5k"
    model: str = "mlp640"
    steps: int = 1000
    labels: str = "true"          # "true" | "random" (section 4.4; train and test labels redrawn once)
    label_seed: int = 0
    depth: int | None = None      # Wide-ResNet only (default 28)
    width: int | None = None      # Wide-ResNet only (default 10)
    optimizer: str = "sgd"        # "sgd": Nesterov SGD, batch 200; "gd": full-batch GD (appendix D)
    batch_size: int | None = None  # default 200 (sgd); the whole training set (gd)
    lr: float | None = None       # default 0.1 (sgd), 10 (gd)
    lr_milestones: tuple[int, ...] | None = None  # steps where lr *= lr_factor
    lr_factor: float = 0.2
    momentum: float | None = None  # default 0.9 Nesterov (sgd), 0 (gd)
    weight_decay: float | None = None  # the paper's rate; default per model and dataset, appendix A
    weight_decay_rule: str = "authors"  # how the rate becomes the L2 coefficient: see WEIGHT_DECAY_RULES
    augment: bool | None = None   # default True (sgd, true labels), False (gd, random labels)
    pad_fill: str | None = None   # the augmentation's border, one of PAD_FILLS (default "black")
    pixels: str = "standardised"  # one of PIXELS: "raw" feeds the 0..255 pixels as floats
    eval_steps: tuple[int, ...] | None = None  # default: eval_schedule(steps)
    # steps where every k, metric and PCA space is searched (default: every eval step); at the
    # other eval steps only what the curves draw: the k nearest 30 with the first metric, no PCA
    full_eval_steps: tuple[int, ...] | None = None
    train_full: bool = True       # the training set's k-NN in every space too (False: the curves' only)
    ks: tuple[int, ...] = (30,)
    metrics: tuple[str, ...] = ("l1",)
    pca_dims: tuple[int, ...] = ()   # extra k-NN on PCA-reduced embeddings (appendix B: 64)
    eval_train: bool = False      # also evaluate on the training set
    train_eval_steps: tuple[int, ...] | None = None  # ...at these eval steps only (default: all)
    exclude_self: bool = False    # leave-one-out on the training set (the paper: False)
    # test images (the same ones for every run of a dataset: `neighbour_queries`) whose nearest
    # training images (index and distance, the first metric, on the embedding) are recorded at
    # every evaluation
    neighbour_images: int = 0
    probe_layers: tuple[str, ...] = ()  # k-NN on these layers at the last evaluation (section 4.2)
    probe_ks: tuple[int, ...] = (1, 5, 30, 100)  # ...with these k, the first metric, no PCA
    limit: tuple[int, int] | None = None  # keep only the first (n_train, n_test) images
    seed: int = 0
    device: str = "auto"          # where it runs; not part of the run's identity (recorded in meta.json)
    precision: str = "fp32"       # one of PRECISIONS

    def __post_init__(self):
        for f in dataclasses.fields(self):  # numpy integers (np.int64(100)) are ints: stored as Python ints
            v = getattr(self, f.name)
            if isinstance(v, numbers.Integral) and not isinstance(v, (bool, int)):
                object.__setattr__(self, f.name, int(v))
            elif isinstance(v, tuple) and any(isinstance(x, numbers.Integral) and not isinstance(x, (bool, int)) for x in v):
                object.__setattr__(self, f.name, tuple(int(x) if isinstance(x, numbers.Integral) else x for x in v))
        _validate(self)

    def resolve(self) -> "RunConfig":
        """Fill every default explicitly (so the hash names the real settings)."""
        gd = self.optimizer == "gd"
        ms = self.lr_milestones
        if ms is None:  # GD: steps 200, 300 (appendix D); SGD: the authors' schedule (see above)
            fractions = MNIST_SCHEDULE if self.dataset in MNIST_SCHEDULE_DATASETS else CIFAR_SCHEDULE
            ms = (tuple(m for m in (200, 300) if m <= self.steps) if gd
                  else tuple(int(self.steps * f) for f in fractions))
        ev = tuple(sorted(set(self.eval_steps if self.eval_steps is not None else eval_schedule(self.steps))))
        full = self.full_eval_steps
        if full is not None:  # normalised: the eval steps among them; all of them = the default
            full = tuple(sorted(set(full) & set(ev)))
            full = None if full == ev else full
        # random labels: no augmentation, so that the network can memorise the images themselves (the
        # paper's 100% training accuracy; the book's list of choices)
        augment = self.augment if self.augment is not None else not gd and self.labels == "true"
        is_wrn = self.model == "wrn"
        return dataclasses.replace(
            self,
            depth=(self.depth or 28) if is_wrn else None,
            width=(self.width or 10) if is_wrn else None,
            batch_size=self.batch_size if self.batch_size is not None else (0 if gd else 200),
            lr=self.lr if self.lr is not None else (10.0 if gd else 0.1),
            lr_milestones=tuple(ms),
            momentum=self.momentum if self.momentum is not None else (0.0 if gd else 0.9),
            weight_decay=(self.weight_decay if self.weight_decay is not None
                          else (0.0 if gd else paper_weight_decay(self.model, self.dataset))),
            augment=augment,
            pad_fill=(self.pad_fill or "black") if augment else None,
            eval_steps=ev,
            full_eval_steps=full,
            train_eval_steps=_train_steps(self.train_eval_steps, ev),
            ks=tuple(sorted(set(self.ks))),
            metrics=tuple(dict.fromkeys(self.metrics)),  # the order matters: the first is the curves'
            pca_dims=tuple(sorted(set(self.pca_dims))),
            probe_layers=tuple(dict.fromkeys(self.probe_layers)),
            probe_ks=tuple(sorted(set(self.probe_ks))),
        )

    def is_full_eval(self, step: int, split: str = "test") -> bool:
        """Whether every k, metric and PCA space is searched at `step` on `split` (see
        full_eval_steps and train_full); else only the curves' k and first metric."""
        return (self.full_eval_steps is None or step in self.full_eval_steps) and (split == "test" or self.train_full)

    @property
    def curve_k(self) -> int:
        """The k searched at every eval step: the one nearest 30 (the paper's)."""
        return min(self.ks, key=lambda k: (abs(k - 30), k))

    @property
    def effective_weight_decay(self) -> float:
        """The L2 coefficient the optimiser applies to weights (see WEIGHT_DECAY_RULES)."""
        rate = self.resolve().weight_decay
        squared = self.weight_decay_rule == "authors" and self.model in ("lenet", "mlp640")
        return rate * rate if squared else rate

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"RunConfig({fields}) [effective weight decay {self.effective_weight_decay:g} on weights]"

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(known)
        if unknown:
            raise ConfigError(f"unknown run option(s) {sorted(unknown)}; known: {sorted(known)}")
        tuples = {"lr_milestones", "eval_steps", "full_eval_steps", "train_eval_steps", "probe_ks", "ks", "metrics", "pca_dims", "probe_layers", "limit"}
        return cls(**{k: (tuple(v) if k in tuples and v is not None else v) for k, v in d.items()})

    @classmethod
    def from_record(cls, d: dict) -> "RunConfig":
        """A stored run's config.json: a field it lacks (written before the field existed) takes
        the value that describes what that version did (`RECORD_DEFAULTS`)."""
        return cls.from_dict({**{k: v for k, v in RECORD_DEFAULTS.items() if k not in d}, **d})

    def identity(self) -> dict:
        """What determines the run's numbers: the resolved settings without the device, so a run
        made on a GPU or a cluster is found by a CPU build of the book."""
        d = self.resolve().to_dict()
        del d["device"]
        for name, legacy in LEGACY_IDENTITY.items():
            if d[name] in legacy:
                del d[name]
        if self.dataset.startswith("imagefolder:"):  # its contents can change: key them
            from .data import imagefolder_fingerprint
            d["data_fingerprint"] = imagefolder_fingerprint(self.dataset.split(":", 1)[1])
        return d

    def key(self, version: str) -> str:
        blob = json.dumps({"config": self.identity(), "version": version}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def label(self) -> str:
        return f"{self.setting()}, seed {self.resolve().seed}"

    def setting(self) -> str:
        """The label without the seed: what the seeds of one setting share."""
        r = self.resolve()
        arch = f"wrn-{r.depth}-{r.width}" if r.model == "wrn" else r.model
        extra = "" if r.labels == "true" else " random labels"
        prec = "" if r.precision == "fp32" else f", {r.precision}"
        extra += "" if r.pixels == "standardised" else f" ({r.pixels} pixels)"
        return f"{arch} on {r.dataset}{extra}, {r.optimizer.upper()} {r.steps} steps{prec}"


def _train_steps(asked, ev: tuple[int, ...]) -> tuple[int, ...] | None:
    """train_eval_steps, checked: each must be an evaluation step (else no training-set row would
    be computed there)."""
    if asked is None:
        return None
    if bad := sorted(set(asked) - set(ev)):
        raise ConfigError(f"train_eval_steps {bad} are not evaluation steps; the evaluation steps are "
                          f"{list(ev)} (set them with --eval-steps / --eval-every)")
    return tuple(sorted(set(asked)))


def eval_schedule(steps: int, every: int | None = None) -> tuple[int, ...]:
    """The steps to evaluate at: 0, every `every` steps, and the last. By default 10 intervals, or
    20 from 10,000 steps on (the CIFAR runs' curves)."""
    every = every or (steps // 20 if steps >= 10_000 else steps // 10)
    return tuple(sorted(set(range(0, steps, max(1, every))) | {steps}))


def paper_weight_decay(model: str, dataset: str) -> float:
    """Appendix A: Wide-ResNet 0.0008 (Zagoruyko's 0.0005 x 200/128); LeNet 0 / 0.008 / 0.01 for
    MNIST / CIFAR-10 / CIFAR-100; MLP-640 none. MNIST-like data (mnist5k) follows MNIST; the JPEG
    copy of CIFAR-10 and other image folders follow CIFAR-10."""
    if model == "wrn":
        return 0.0008
    if model == "lenet":
        if dataset in ("mnist", "mnist5k"):
            return 0.0
        return 0.01 if dataset == "cifar100" else 0.008
    return 0.0


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _validate(c: RunConfig):
    def need(cond, msg):
        if not cond:
            raise ConfigError(msg)

    need(is_dataset(c.dataset), f"unknown dataset {c.dataset!r}; choose one of {', '.join(DATASETS)}")
    need(c.model in MODELS, f"unknown model {c.model!r}; choose one of {', '.join(MODELS)}")
    need(c.optimizer in OPTIMIZERS, f"unknown optimizer {c.optimizer!r}; choose one of {OPTIMIZERS}")
    need(c.labels in LABELS, f"labels must be one of {LABELS}, got {c.labels!r}")
    need(_is_int(c.steps) and c.steps > 0, f"steps must be a positive integer (a Python or numpy int), got {c.steps!r}")
    for name in ("seed", "label_seed"):  # the generators take (seed * 1,000,003 + ...) as a 64-bit int
        v = getattr(c, name)
        need(_is_int(v) and 0 <= v < 2**31, f"{name} must be an integer from 0 to 2**31 - 1, got {v!r}")
    need(c.batch_size is None or (_is_int(c.batch_size) and c.batch_size > 0)
         or (c.batch_size == 0 and c.optimizer == "gd" and not isinstance(c.batch_size, bool)),
         f"batch_size must be a positive integer, got {c.batch_size!r} "
         f"(for full-batch training use optimizer 'gd': --optimizer gd)")

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    need(c.lr is None or (number(c.lr) and 0 < c.lr < 3e38),
         f"lr (learning rate) must be a positive number a float32 holds (below 3e38), got {c.lr!r}")
    for name in ("weight_decay", "momentum"):
        v = getattr(c, name)
        need(v is None or (number(v) and v >= 0), f"{name} must be a finite non-negative number, got {v!r}")
    need(c.weight_decay is None or c.weight_decay <= MAX_WEIGHT_DECAY,
         f"weight_decay must be at most {MAX_WEIGHT_DECAY:g} (the paper's are 0 to 0.01), got {c.weight_decay!r}")
    need(c.momentum is None or c.momentum < 1, f"momentum must be below 1, got {c.momentum!r}")
    need(c.depth is None or wrn_depth_ok(c.depth), f"Wide-ResNet depth must be {WRN_DEPTH_RULE}, got {c.depth!r}")
    need(c.width is None or (_is_int(c.width) and c.width >= 1),
         f"Wide-ResNet width must be a positive integer (10 in the paper), got {c.width!r}")
    need(c.weight_decay_rule in WEIGHT_DECAY_RULES,
         f"weight_decay_rule must be one of {WEIGHT_DECAY_RULES}, got {c.weight_decay_rule!r}")
    need(number(c.lr_factor) and 0 < c.lr_factor <= 1,
         f"lr_factor must be in (0, 1], got {c.lr_factor!r}")
    need(isinstance(c.ks, tuple) and c.ks and all(_is_int(k) and k > 0 for k in c.ks),
         f"ks must be a non-empty tuple of positive integers, got {c.ks!r}")
    need(isinstance(c.probe_ks, tuple) and all(_is_int(k) and k > 0 for k in c.probe_ks),
         f"probe_ks must be a tuple of positive integers, got {c.probe_ks!r}")
    need(bool(c.probe_ks) or not c.probe_layers,
         f"probe_layers {list(c.probe_layers)} need at least one k to probe them with (probe_ks), got ()")
    need(isinstance(c.metrics, tuple) and c.metrics and all(m in METRICS for m in c.metrics),
         f"metrics must be a non-empty tuple from {METRICS}, got {c.metrics!r}")
    need(isinstance(c.pca_dims, tuple) and all(_is_int(p) and p > 0 for p in c.pca_dims),
         f"pca_dims must be a tuple of positive integers, got {c.pca_dims!r}")
    dims = embed_dim(c.model, c.width)
    need(all(p <= dims for p in c.pca_dims),
         f"pca_dims must be at most the embedding's {dims} dimensions, got {c.pca_dims!r}")
    need(_is_int(c.neighbour_images) and c.neighbour_images >= 0,
         f"neighbour_images must be a non-negative integer, got {c.neighbour_images!r}")
    need(c.pad_fill is None or c.pad_fill in PAD_FILLS,
         f"pad_fill must be one of {PAD_FILLS} or None, got {c.pad_fill!r}")
    for name in ("eval_steps", "lr_milestones", "train_eval_steps", "full_eval_steps"):
        v = getattr(c, name)
        need(v is None or (isinstance(v, tuple) and all(_is_int(s) and 0 <= s <= c.steps for s in v)),
             f"{name} must be a tuple of integers between 0 and steps={c.steps}, got {v!r}")
    need(isinstance(c.probe_layers, tuple) and all(isinstance(s, str) for s in c.probe_layers),
         f"probe_layers must be a tuple of layer names, got {c.probe_layers!r}")
    need(c.limit is None or (isinstance(c.limit, tuple) and len(c.limit) == 2
                             and all(_is_int(n) and n > 0 for n in c.limit)),
         f"limit must be None or (n_train, n_test), got {c.limit!r}")
    need(c.model == "wrn" or (c.depth is None and c.width is None),
         f"depth and width apply to the 'wrn' model only, not {c.model!r}")
    for name in ("eval_train", "exclude_self", "train_full"):
        need(isinstance(getattr(c, name), bool), f"{name} must be True or False")
    for name in ("augment",):
        need(getattr(c, name) is None or isinstance(getattr(c, name), bool), f"{name} must be True, False or None")
    need(c.pixels in PIXELS, f"pixels must be one of {PIXELS}, got {c.pixels!r}")
    need(c.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {c.precision!r}")
    need(isinstance(c.device, str), f"device must be a string such as 'cpu' or 'cuda', got {c.device!r}")

