"""The runs each section of the book needs, built from a page's `Params`: the run factories, and
the policy that finds a run in the store (or results/) or trains it where the profile does so.

Sections share runs: `main_config(P, dataset, model, seed)` is the one run per (dataset, model,
seed) from which Figures 1-4, Table 1 and Table 2 are all drawn, so it is trained once.
"""
from __future__ import annotations

import dataclasses

from . import __version__
from .names import CPU_WRN_WIDTHS, PAPER_WRN, STAND_INS, name, run_model_name
from .config import CIFAR_SCHEDULE, RunConfig, eval_schedule
from .profiles import ALL_KS, NEIGHBOUR_IMAGES, Params, cpu_command, fits_cpu, is_depth_run
from .runs import Run


# Where the authors read MNIST's Figure 1, section 4.1's 4.44% and Table 2: at step 500 of runs with
# LAST_STEP = 501 and drops at 150/300/400 (`train_simple.ini` at b84f959 and 501a6cb; `test_simple.ini`
# at b5e7428 reads ckpt-500); Figures 3 and 4 at step 1,000 (`plots/ma_md_scores.py` at 48646ef)
AUTHORS_MNIST_STEP = 500


def section(cfg: RunConfig) -> str:
    """The kind of run, as `python -m dnnknn grid --sections` names it."""
    if is_depth_run(cfg):
        return "depth"
    return "gd" if cfg.optimizer == "gd" else "random" if cfg.labels == "random" else "main"


def main_config(P: Params, dataset: str, model: str, seed: int = 0) -> RunConfig:
    """The shared run: the test set's k-NN at every evaluation with what the curves draw (k = 30,
    the page's metric; Figures 1, 3, 4); at the last step every k of Table 1 and Figure 2, L1
    and L2, with and without PCA-64 (Table 1), every layer (Figure 2), and the training set
    with the curves' k and metric (Table 2); the nearest training images of a few test images
    at every evaluation."""
    steps = P.steps_for(dataset)
    from .names import layer_names
    layers = layer_names(model, **P.model_options(model))
    return RunConfig(dataset=dataset, model=model, steps=steps, **P.model_options(model),
                     eval_steps=P.eval_steps_for(dataset), ks=tuple(sorted(set(ALL_KS) | set(P.ks))),
                     metrics=tuple(dict.fromkeys((P.metric, "l1", "l2"))), pca_dims=(64,),
                     full_eval_steps=(steps,), eval_train=True, train_eval_steps=_train_eval_steps(model, dataset, steps),
                     train_full=False,
                     neighbour_images=NEIGHBOUR_IMAGES,
                     probe_layers=layers, seed=seed, device=P.device, precision=P.train_precision)


def _train_eval_steps(model: str, dataset: str, steps: int) -> tuple[int, ...]:
    """Where the main run evaluates the training set: the last step; the Wide-ResNet on MNIST also at the
    authors' step 500, its Table 2 row (its first 500 steps are `table2_config`'s: the same drops and
    batches), since a second 500-step run of the Wide-ResNet costs an hour on a CPU."""
    wrn_table2 = model == "wrn" and dataset == "mnist" and steps > AUTHORS_MNIST_STEP
    return (AUTHORS_MNIST_STEP, steps) if wrn_table2 else (steps,)


def cpu_wrn_config(P: Params, width: int, seed: int = 0, dataset: str = "mnist") -> RunConfig:
    """The Wide-ResNet at the paper's depth (28) and a width a CPU trains, the main run's settings:
    the stand-in for the Wide-ResNet-28-10 where no run of it exists (`CPU_WRN_WIDTHS`)."""
    return main_config(dataclasses.replace(P, wrn_depth=PAPER_WRN[0], wrn_width=width), dataset, "wrn", seed)


def raw_pixels_config(P: Params, dataset: str, model: str = "lenet", seed: int = 0) -> RunConfig:
    """The main run on the raw 0..255 pixels, as the authors trained the paper's CIFAR-10 LeNet
    (`train_simple.ini` and `dataset_wrapper.py` at 220d888: no standardisation)."""
    return dataclasses.replace(main_config(P, dataset, model, seed), pixels="raw")


def table2_config(P: Params, dataset: str, model: str, seed: int = 0) -> RunConfig:
    """The authors' 500-step MNIST run, for Table 2: the main run's first 500 steps (the same drops,
    at 150/300/400), the test and the training set evaluated at step 500 with the curves' k and metric.
    The Wide-ResNet's is its main run, which evaluates the training set at step 500 too."""
    main = main_config(P, dataset, model, seed).resolve()
    step = AUTHORS_MNIST_STEP
    if step in main.train_eval_steps:
        return main_config(P, dataset, model, seed)
    return RunConfig(dataset=dataset, model=model, steps=step, **P.model_options(model),
                     lr_milestones=tuple(m for m in main.lr_milestones if m < step), eval_steps=(step,),
                     ks=(main.curve_k,), metrics=main.metrics[:1], eval_train=True, seed=seed,
                     device=P.device, precision=P.train_precision)


def legacy_config(P: Params, dataset: str, model: str, seed: int = 0) -> RunConfig:
    """The main run as dnnknn 0.2 made it (`LEGACY_VARIANT`): the learning rate divided by 5 at
    30/60/80% of the steps (the CIFAR schedule's proportions), the crop's border the
    standardised image's mean grey, every space searched at every evaluation."""
    steps = P.steps_for(dataset)
    return dataclasses.replace(main_config(P, dataset, model, seed), pad_fill="zero", full_eval_steps=None,
                               neighbour_images=0, train_full=True, train_eval_steps=(steps,),
                               lr_milestones=tuple(int(steps * f) for f in CIFAR_SCHEDULE))


def random_config(P: Params, dataset: str, model: str = "wrn", seed: int = 0) -> RunConfig:
    """Section 4.4 / appendix E: random labels, train and test evaluated at every step."""
    steps = P.random_steps or P.steps_for(dataset)
    return RunConfig(dataset=dataset, model=model, steps=steps, labels="random", label_seed=seed,
                     **P.model_options(model), eval_steps=P.eval_steps_for(dataset, steps),
                     ks=tuple(sorted({30} | set(P.ks))), metrics=(P.metric,), eval_train=True,
                     limit=tuple(P.random_limit) if P.random_limit else None, seed=seed,
                     device=P.device, precision=P.train_precision)


# The CPU's random-label Wide-ResNet-28-2 (section 4.4 at a CPU's scale): the first 5,000 MNIST training and
# test images, labels redrawn at random, no augmentation, 2,000 steps (80 epochs), the rate divided by 5 at
# 30/60/80% of them (24 epochs at the first rate to memorise in; MNIST's 15% would leave 12), both sets
# evaluated every 200 steps: 34 min on 2 cores, every label held from step 800 (the book's list of choices),
# where 60,000 random labels take tens of epochs of 60,000
CPU_RANDOM_LIMIT, CPU_RANDOM_STEPS, CPU_RANDOM_EVERY = (5_000, 5_000), 2_000, 200


def cpu_random_config(P: Params, seed: int = 0) -> RunConfig:
    """The random-label Wide-ResNet-28-2 on a subset of MNIST that a CPU memorises (`CPU_RANDOM_LIMIT`)."""
    cfg = random_config(dataclasses.replace(P, wrn_depth=PAPER_WRN[0], wrn_width=CPU_WRN_WIDTHS[0],
                                            random_limit=CPU_RANDOM_LIMIT, random_steps=CPU_RANDOM_STEPS,
                                            eval_every=CPU_RANDOM_EVERY), "mnist", "wrn", seed)
    return dataclasses.replace(cfg, lr_milestones=tuple(int(CPU_RANDOM_STEPS * f) for f in CIFAR_SCHEDULE))


def gd_config(P: Params) -> RunConfig:
    """Appendix D: MLP-640, full-batch gradient descent, lr 10 divided by 5 at 200 and 300."""
    return RunConfig(dataset=P.gd_dataset, model="mlp640", steps=P.gd_steps, optimizer="gd",
                     eval_steps=eval_schedule(P.gd_steps, P.gd_eval_every),
                     ks=tuple(sorted({30} | set(P.ks))), metrics=(P.metric,), device=P.device,
                     precision=P.train_precision)


def feasible_here(P: Params, cfg: RunConfig) -> bool:
    """Whether this profile trains `cfg` when it is missing from the store."""
    if P.train_missing is not None:
        return P.train_missing
    return P.profile == "quick" or P.device_type == "cuda" or fits_cpu(cfg)


def find(P: Params, cfg: RunConfig) -> Run | None:
    """The run from the store (or results/), else the same run on the dataset's stand-in
    (`STAND_INS`) if the store holds one; else None. The run's own `config.dataset` says which."""
    store = P.store()
    run = store.find(cfg)
    if run is None and cfg.dataset in STAND_INS:
        run = store.find(dataclasses.replace(cfg, dataset=STAND_INS[cfg.dataset]))
    return run


def get(P: Params, cfg: RunConfig) -> Run | None:
    """`find`, after training the run now where it is missing and this profile trains it."""
    store = P.store()
    run = store.find(cfg)
    if run is None and feasible_here(P, cfg):
        print(f"training {cfg.label()} ...", flush=True)
        return store.train(cfg, data_dir=P.data_dir, progress="log")
    return run if run is not None else find(P, cfg)


def get_all(P: Params, cfgs: list[RunConfig]) -> list[Run | None]:
    """`get` of each config, returned in order. The runs that another process is training now are
    asked for last, so that this one trains the others meanwhile instead of waiting for them; and
    the highest seeds first: seed 0 is the run other pages share (a page of all the seeds, Table
    1's, starts where the others do not)."""
    store = P.store()
    out = [None] * len(cfgs)
    for i in sorted(range(len(cfgs)), key=lambda i: (feasible_here(P, cfgs[i]) and store.busy(cfgs[i]), -cfgs[i].seed)):
        out[i] = get(P, cfgs[i])
    return out


def _own_data(runs: list, dataset: str) -> list:
    """The runs on `dataset` itself when there are any, else those on its stand-in: never both."""
    runs = [r for r in runs if r is not None]
    return [r for r in runs if r.config.dataset == dataset] if any(r.config.dataset == dataset for r in runs) else runs


def dataset_name(dataset: str, runs) -> str:
    """The dataset's name as a figure or table shows it: that of the data the runs trained on (a
    stand-in's, e.g. 'CIFAR-10 (JPEG q75 copy)'), the asked one's without runs."""
    from .plots import as_runs, name
    trained = [r.config.dataset for r in as_runs(runs)]
    return name(trained[0] if trained else dataset)


def network_name(model: str, runs) -> str:
    """The network's name as a figure or table shows it: that of the network the runs trained (a
    stand-in's, e.g. 'Wide-ResNet-28-2 (the paper's depth, a fifth of its width)'), the asked one's without runs."""
    from .plots import as_runs
    trained = as_runs(runs)
    return run_model_name(trained[0]) if trained else name(model)


def subset_text(run) -> str:
    """', first 5,000 training and 5,000 test images, 2,000 steps' for a run on a subset; '' otherwise."""
    c = run.config
    return f", first {c.limit[0]:,} training and {c.limit[1]:,} test images, {c.steps:,} steps" if c.limit else ""


def main_runs(P: Params, models=None, datasets=None, seed: int = 0):
    """{(model, dataset): Run or None} and the configs, for the shared main runs."""
    cfgs = {(m, d): main_config(P, d, m, seed) for d in datasets or P.datasets for m in models or P.models}
    return dict(zip(cfgs, get_all(P, list(cfgs.values())))), cfgs


def figure_seeds(P: Params, cfg: RunConfig) -> int:
    """Seeds a figure draws for cfg's setting: the profile's `figure_runs` (at most `n_runs`) of a
    main run; seed 0 alone of a random-label or full-batch run."""
    return min(P.figure_runs, P.n_runs) if cfg.labels != "random" and cfg.optimizer != "gd" else 1


def seed_grid(P: Params, models=None, datasets=None, kind: str = "main"):
    """{(model, dataset): the runs of its first `P.figure_runs` seeds (those there are: found, or
    trained where the profile does), or None} and the configs (seed 0's): what the figures draw
    as mean ± sd over seeds. Like `seed_runs`, a cell never mixes a dataset with its stand-in; a
    cell with no run shows its `stand_in_config`'s runs where they exist."""
    config = {"main": main_config, "random": random_config}[kind]
    cells = [(m, d) for d in datasets or P.datasets for m in models or P.models]
    every = []  # (cell, config) for each seed a figure draws
    for m, d in cells:
        first = config(P, d, m, 0)
        every += [((m, d), config(P, d, m, s)) for s in range(figure_seeds(P, first))]
    got = get_all(P, [c for _, c in every])
    runs = {cell: _own_data([r for (c, _), r in zip(every, got) if c == cell], cell[1]) or
            with_stand_in(P, [cfg for c, cfg in every if c == cell]) for cell in cells}
    return runs, {cell: c for cell, c in every if c.seed == 0}  # seeds start at 0


def stand_in_config(P: Params, cfg: RunConfig) -> RunConfig | None:
    """The CPU's run that a figure shows for a Wide-ResNet-28-10 run on MNIST where none exists: the
    same run at width `CPU_WRN_WIDTHS[0]` (random labels: `cpu_random_config`), named by
    `names.model_name`; else None. Never a claim's evidence (`claims` shows it as indicative)."""
    if cfg.model != "wrn" or cfg.dataset != "mnist" or (cfg.depth, cfg.width) != PAPER_WRN:
        return None
    if cfg.labels == "random":
        return cpu_random_config(P, cfg.seed)
    return dataclasses.replace(cfg, width=CPU_WRN_WIDTHS[0])


def with_stand_in(P: Params, cfgs: list[RunConfig]) -> list[Run] | None:
    """The runs of the cell's configs' stand-ins that the store holds (read only), or None."""
    stand_ins = [c for c in map(lambda c: stand_in_config(P, c), cfgs) if c is not None]
    return [r for r in (find(P, c) for c in stand_ins) if r is not None] or None


def random_runs(P: Params, datasets=None, model: str = "wrn", seed: int = 0):
    """{(model, dataset): Run or None} and the configs, for the random-label runs (section 4.4); a
    Wide-ResNet-28-10 missing on MNIST shown by its `stand_in_config` where that run exists."""
    runs, cfgs = {}, {}
    for d in datasets or P.datasets:
        cfgs[(model, d)] = cfg = random_config(P, d, model, seed)
        runs[(model, d)] = get(P, cfg) or (with_stand_in(P, [cfg]) or [None])[0]
    return runs, cfgs


def seed_configs(P: Params, model: str, dataset: str, kind: str = "main") -> list[RunConfig]:
    """The configs `seed_runs` looks for: seeds 0 .. P.n_runs - 1 (random labels: seed 0)."""
    seeds = range(P.n_runs) if kind in ("main", "legacy", "table2") else range(1)
    config = {"main": main_config, "legacy": legacy_config, "random": random_config, "table2": table2_config,
              "raw": raw_pixels_config}[kind]
    return [config(P, dataset, model, s) for s in seeds]


def seed_runs(P: Params, model: str, dataset: str | None, kind: str = "main") -> list:
    """The runs of (model, dataset) over seeds 0 .. P.n_runs - 1 that the store holds (or that the
    profile trains now); random-label runs use seed 0 only. kind "legacy": the main runs as
    dnnknn 0.2 made them (`legacy_config`), read only."""
    if dataset is None:
        return []
    cfgs = seed_configs(P, model, dataset, kind)
    if kind in ("legacy", "raw"):  # read only: never trained by a page
        return _own_data([find(P, c) for c in cfgs], dataset)
    return _own_data(get_all(P, cfgs), dataset)  # never the dataset mixed with its stand-in


def depth_configs(P: Params) -> list[RunConfig]:
    """The depth-and-width chapter's CPU runs, cheapest first: Wide-ResNet-28-2 on MNIST, 3 seeds; its
    random-label run (`cpu_random_config`); Wide-ResNet-28-4, 1 seed."""
    return ([cpu_wrn_config(P, CPU_WRN_WIDTHS[0], s) for s in range(3)] + [cpu_random_config(P)]
            + [cpu_wrn_config(P, CPU_WRN_WIDTHS[1], 0)])


def grid_configs(P: Params, main: bool = True, random: bool = True, gd: bool = True,
                 depth: bool = False) -> list[RunConfig]:
    """The book's runs for a profile: main runs (datasets x models x n_runs seeds: the spread beside
    every paper value, and Table 1's ten runs), random-label Wide-ResNet runs, and the full-batch
    GD run; the depth chapter's (`depth_configs`) when asked; without duplicates."""
    cfgs = []
    if main:
        for d in P.datasets:
            for m in P.models:
                for seed in range(P.n_runs):
                    cfgs.append(main_config(P, d, m, seed))
                    if d == "mnist" and P.profile == "paper":  # Table 2 at the authors' step 500
                        cfgs.append(table2_config(P, d, m, seed))
    if random:
        cfgs += [random_config(P, d, "wrn") for d in P.datasets]
    if gd:
        cfgs.append(gd_config(P))
    if depth:
        cfgs += depth_configs(P)
    seen, out = set(), []
    for c in cfgs:
        key = c.key(__version__)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def table1_runs(P: Params, model: str = "wrn"):
    """Table 1's runs: {(dataset, seed): Run or None} over seeds 0 .. P.n_runs - 1, and the configs;
    a dataset's own runs or its stand-in's, never both mixed."""
    runs, cfgs = {}, {}
    for d in P.datasets:
        found = {r.config.seed: r for r in seed_runs(P, model, d)}
        for seed in range(P.n_runs):
            cfgs[(d, seed)] = main_config(P, d, model, seed)
            runs[(d, seed)] = found.get(seed)
    return runs, cfgs


def conv_models(P: Params) -> list[str]:
    """The profile's networks that Figure 2 probes layer by layer (not the MLP)."""
    return [m for m in P.models if m != "mlp640"]


PROBE_LAYERS = ("maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")  # torchvision's ResNet-18
PROBE_STEPS = 120  # the 'probe any network' page's brief training: enough to see the layers separate
PROBE_TRAINING = {"batch": 100, "lr": 0.05}  # ...with train_module's Nesterov SGD (momentum 0.9), seed 0


def resnet18_for(data, seed: int = 0):
    """torchvision's ResNet-18 for `data`'s classes and channels (its first convolution takes the
    data's channels), initialised from `seed`."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.resnet18(num_classes=data.num_classes)
    net.conv1 = torch.nn.Conv2d(data.shape[0], 64, 7, 2, 3, bias=False)
    return net


def missing_runs(P: Params):
    """The paper grid's runs that the store (and results/) lack, grouped by setting: a table with
    the seeds, the training FLOPs per run, the time at `claims.GPU_TFLOPS`, where each can run and
    the grid section; and the number of runs and their FLOPs in all."""
    import pandas as pd

    from .claims import GPU_TFLOPS, duration, train_flops
    store, groups = P.store(), {}
    for cfg in grid_configs(P):
        if store.find(cfg) is None:
            g = groups.setdefault(cfg.setting(), {"cfg": cfg, "seeds": [], "flops": train_flops(cfg)})
            g["seeds"].append(cfg.seed)
    rate = GPU_TFLOPS * 1e12
    rows = [{"runs": what, "seeds": ", ".join(map(str, g["seeds"])),
             "training per run (PFLOP)": f"{g['flops'] / 1e15:,.2f}",
             f"time per run at {GPU_TFLOPS:.0f} TFLOP/s": duration(g["flops"] / rate),
             "where": "a CPU: " + cpu_command(g["cfg"]).strip("`") if cpu_command(g["cfg"]) else "a GPU",
             "grid section": section(g["cfg"])} for what, g in groups.items()]
    table = pd.DataFrame(rows).set_index("runs") if rows else pd.DataFrame({"runs": ["none: every run is here"]})
    return table, sum(len(g["seeds"]) for g in groups.values()), sum(g["flops"] * len(g["seeds"]) for g in groups.values())


def seed_counts(P: Params, dataset: str, models=("mlp640", "lenet")) -> dict[str, int]:
    """{model: how many of its seeds' main runs on `dataset` there are}."""
    return {m: len(seed_runs(P, m, dataset)) for m in models}
