"""The reproduction's verdict: each claim of the paper, our evidence, and whether it held.

`claims_table(quick, full)` gives one row per claim (the book's claims page). Every number in it is
read from a run record: `full` is the paper profile (appendix A's settings; its runs from the store
or results/, never trained here), `quick` the offline profile, quoted as indicative only. The
verdict follows `RULE`, stated on the page.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import experiments, report
from .experiments import dataset_name, seed_runs
from .paper import STATED, QUANTITIES, Stated, digits
from .plots import name
from .profiles import Params

RULE = """\
- A number the paper prints is **reproduced** when our mean over seeds lies within two of our sample
  standard deviations plus the paper's printing precision of it: |ours − paper| ≤ 2·std + u, where u is
  half a unit of the last digit the paper prints (0.005 for "4.44"), a whole unit where it writes "≈"
  (0.001 for "≈ 0.997", 0.1 for "roughly around 0.8"). With one run there is no spread: u alone.
- A qualitative claim is reproduced when its stated test holds in every run here.
- A claim made for several settings is judged on the settings run here, which the row names; it is
  **partly** reproduced when it holds for some of its parts and not for others, **not reproduced** when
  it fails for all of them, and **not run here** when none of its settings was run (the row says what
  would run it).
"""

REPRODUCED, PARTLY, NOT, NOT_RUN = "reproduced", "partly", "not reproduced", "not run here"
ATTENUATED = 0.1  # section 4.3: how far below MNIST's MC an MLP-640 MC "greatly attenuated" lies
AUTHORS_MODEL_FILE = {"lenet": "lenet_model.py", "mlp640": "fc2_model.py"}  # in giladcohen/tensorflow_TB
GD_MARGIN = 0.01  # appendix D: how far below SGD's MC and P_SAME the GD run may end and still "not change" them
GPU_TFLOPS = 100.0  # sustained training throughput assumed for a projection: a third of an A100's bf16 peak


@dataclass
class Check:
    """One part of a claim: whether it held (None: not run), and the evidence as text."""
    held: bool | None
    evidence: str


def combine(checks: list[Check]) -> str:
    run = [c.held for c in checks if c.held is not None]
    if not run:
        return NOT_RUN
    return REPRODUCED if all(run) else NOT if not any(run) else PARTLY


def numeric(st: Stated, values, quantity: str, what: str) -> Check:
    """The numeric rule (RULE, first item) for our values of `quantity` against the paper's."""
    mean, std, n = report.spread(values)
    if n == 0:
        return Check(None, f"{what}: not run here")
    tol = (2 * std if n > 1 else 0.0) + st.precision
    held = abs(mean - st.value) <= tol + 1e-12
    d = digits(quantity)
    spread = f"{mean:.{d}f} ± {std:.{d}f}" if n > 1 else f"{mean:.{d}f}"
    diff, e = abs(mean - st.value), d
    while f"{diff:.{e}f}" == f"{tol:.{e}f}" and e < d + 4:  # "0.26 > 0.26": digits until they differ
        e += 1
    return Check(held, f"{what}: {spread} ({n} seed{'s' if n > 1 else ''}) against {st.text}; "
                       f"|difference| {diff:.{e}f} {'≤' if held else '>'} {tol:.{e}f}")


def train_flops(cfg) -> float:
    """Training FLOPs of a run (forward and backward, counted on the meta device): steps x batch x
    FLOPs per image; evaluation not included."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model

    shape = (1, 28, 28) if cfg.dataset in ("mnist", "mnist5k") else (3, 32, 32)
    r = cfg.resolve()
    with torch.device("meta"):
        model = build_model(r.model, shape, 100 if r.dataset == "cifar100" else 10, depth=r.depth, width=r.width)
        x = torch.empty(2, *shape)
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    batch = r.batch_size or (60_000 if r.dataset == "mnist" else 50_000)
    return fc.get_total_flops() / 2 * batch * r.steps


def duration(seconds: float) -> str:
    """'2.3 h', '14 min' or 'under a minute'."""
    return (f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 60
            else "under a minute")


def projection(P: Params, cfgs) -> str:
    """What would run `cfgs`: the command, and their training FLOPs and projected hours on a GPU."""
    flops = sum(train_flops(c) for c in cfgs)
    when = duration(flops / (GPU_TFLOPS * 1e12))
    return (f"{len(cfgs)} run{'s' if len(cfgs) > 1 else ''}, {flops / 1e15:,.1f} PFLOP of training: "
            f"{'' if when.startswith('under') else 'about '}{when} on one GPU at {GPU_TFLOPS:.0f} TFLOP/s sustained, projected, evaluation not included; "
            f"{report.gpu_command(P, cfgs)}")


def _runs(full: Params, model: str, dataset: str, kind: str = "main") -> list:
    return seed_runs(full, model, dataset, kind)


def _values(runs, quantity: str) -> list[float]:
    return [QUANTITIES[quantity](r) for r in runs]


def _fmt(values, quantity: str) -> str:
    return report.fmt_spread(values, digits(quantity))


def _seeds(runs) -> str:
    return f"{len(runs)} seed{'s' if len(runs) != 1 else ''}"


def _at(run, step_index: int, split="test"):
    return run.table(split, k=30, metric="l1").iloc[step_index]


def _late_gap(runs) -> str | None:
    """Where the k-NN sits against the DNN over the second half of training (k = 30, L1, test):
    'x to y points below (above) its DNN at every evaluation from step S'; None when the sign changes."""
    diffs, first = [], None
    for r in runs:
        t = r.table("test", k=30, metric="l1")
        late = t[t.step >= t.step.max() / 2]
        first = int(late.step.iloc[0])
        diffs += list(100 * (late.knn_acc - late.dnn_acc))
    if not diffs or min(diffs) < 0 < max(diffs):
        return None
    side = "below" if max(diffs) < 0 else "above"
    lo, hi = sorted(abs(d) for d in (min(diffs), max(diffs)))
    return f"{lo:.1f} to {hi:.1f} points {side} its DNN at every evaluation from step {first:,} on"


def _weight_decay_test(wd, runs, paper: tuple[float, float], command: str) -> str:
    """What the run with the weight decay the paper prints (`wd`; None: not run) says of Table 2's
    generalisation errors, which `runs` (the authors' rate squared) leave above the paper's
    (DNN, k-NN) `paper`: a sentence or two for the claim's 'why'."""
    if wd is None:
        return (f" Not run here: `{command}` would test it, about as long as this run "
                f"({duration(runs[0].meta['wall_time_s'])} recorded, on {runs[0].meta['device_name']}).")
    ours = [_values(runs, f"{who} generalisation gap (%)") for who in ("DNN", "k-NN")]
    gaps = [_values([wd], f"{who} generalisation gap (%)") for who in ("DNN", "k-NN")]
    checks = [numeric(Stated(f"{p:.1f}", "Table 2"), g, "(%)", who)
              for p, g, who in zip(paper, gaps, ("DNN", "k-NN"))]
    closer = all(abs(g[0] - p) < abs(float(np.mean(o)) - p) for g, o, p in zip(gaps, ours, paper))
    acc = {s: 100 * wd.final(split=s, k=30, metric="l1").dnn_acc for s in ("train", "test")}
    test0 = [100 * r.final(split="test", k=30, metric="l1").dnn_acc for r in runs]
    if all(ch.held for ch in checks):
        verdict = ("Both agree with Table 2 by the rule above: the penalty at the printed rate gives the "
                   "paper's generalisation errors.")
    elif closer:
        verdict = ("The printed rate brings both closer to Table 2's, but not within the rule above: the weight "
                   "decay explains part of the difference at most.")
    else:
        verdict = "The printed rate does not bring them closer to Table 2's: the weight decay does not explain the difference."
    return (f" A run with the rate the paper prints tests it (`{command}`, one seed, run {wd.key}, "
            f"{duration(wd.meta['wall_time_s'])} on {wd.meta['device_name']}): its DNN accuracy (%) is "
            f"{acc['train']:.2f} on the training set and {acc['test']:.2f} on the test set, against "
            f"{_fmt(test0, '(%)')} on the test set with the authors' rate; its generalisation errors are DNN "
            f"{gaps[0][0]:.2f} and k-NN {gaps[1][0]:.2f}, against Table 2's {paper[0]:.1f} and {paper[1]:.1f}. {verdict}")


def claims_table(quick: Params, full: Params) -> list[dict]:
    """One dict per claim: claim, where, evidence (Markdown), verdict, why. `full`: the paper profile,
    read only; `quick`: the quick profile (indicative numbers only)."""
    mnist = {m: _runs(full, m, "mnist") for m in ("mlp640", "lenet")}
    cifar10 = {m: _runs(full, m, "cifar10") for m in ("mlp640", "lenet")}  # or its stand-in's
    copy = [(m, dataset_name("cifar10", rs)) for m, rs in cifar10.items() if rs and rs[0].config.dataset != "cifar10"]
    copy_note = (f" {' and '.join(name(m) for m, _ in copy)} on CIFAR-10: runs on {copy[0][1]} (no run on CIFAR-10 "
                 f"itself is in the run store or results/), which compare the paper's claim with runs on slightly "
                 f"different images." if copy else "")
    gd = full.store().find(experiments.gd_config(full))
    not_run = {(m, d): experiments.main_config(full, d, m) for m in ("wrn", "lenet", "mlp640") for d in ("mnist", "cifar10", "cifar100")
               if not _runs(full, m, d)}
    rows = []

    def add(claim, where, checks, why, settings_missing=()):
        ev = "; ".join(c.evidence for c in checks if c.held is not None) or "no run here"
        verdict = combine(checks)
        miss = [not_run[k] for k in settings_missing if k in not_run]
        if miss:
            labels = ", ".join(f"{name(m)} on {name(d)}" for m, d in settings_missing if (m, d) in not_run)
            ev += f". Not run here: {labels} ({projection(full, miss)})"
        rows.append({"claim": claim, "where": where, "evidence": ev, "verdict": verdict, "why": why})

    # 4.1 / Figure 1 --------------------------------------------------------------------------
    lenets = [(d, runs) for d, runs in (("mnist", mnist["lenet"]), ("cifar10", cifar10["lenet"])) if runs]
    lenet_note = copy_note if cifar10["lenet"] else ""
    closing, open_gaps = [], []
    for d, runs in lenets:
        gaps_end = [abs(_at(r, -1).knn_acc - _at(r, -1).dnn_acc) * 100 for r in runs]
        gaps_early = [abs(_at(r, 1).knn_acc - _at(r, 1).dnn_acc) * 100 for r in runs]
        held = all(e <= 1.0 and e <= g for e, g in zip(gaps_end, gaps_early))
        if not held and (late := _late_gap(runs)):
            open_gaps.append(f" On {dataset_name(d, runs)} LeNet's k-NN does not close on its DNN in the second "
                             f"half of training: it stays {late} ({_seeds(runs)}).")
        closing.append(Check(held, f"LeNet on {dataset_name(d, runs)}, |k-NN − DNN| at the last step "
                                   f"{_fmt(gaps_end, '(%)')} points, at the first step after 0 {_fmt(gaps_early, '(%)')} "
                                   f"({_seeds(runs)}; test: ≤ 1 point at the end and no larger than early on)"))
    add("k-NN test accuracy follows the DNN's through training, the gap closing at the end (Wide-ResNet, LeNet)",
        "section 4.1, Figure 1 (a)–(f)", closing,
        "LeNet is the only network of the claim a CPU trains at the paper's length." + "".join(open_gaps)
        + lenet_note,
        [("wrn", "mnist"), ("wrn", "cifar10"), ("wrn", "cifar100"), ("lenet", "cifar10"), ("lenet", "cifar100")])

    for d in ("mnist", "cifar10"):
        st = STATED[("mlp640", d, "|k-NN − DNN| (%)")]
        runs = _runs(full, "mlp640", d)
        check = numeric(st, _values(runs, "|k-NN − DNN| (%)"), "|k-NN − DNN| (%)",
                        f"MLP-640 on {dataset_name(d, runs)}, |k-NN − DNN| (%)")
        signed = _values(runs, "k-NN − DNN (%)")
        if runs:
            check.evidence += f" (signed, k-NN − DNN: {_fmt(signed, '(%)')})"
        why = ("The paper gives the difference without its sign, so its size is compared. "
               if d == "cifar10" and np.mean(signed or [0]) < 0 else "")
        why += copy_note.strip() if d == "cifar10" else ""
        old = _runs(full, "mlp640", d, "legacy")
        if runs and old:
            why = (f"The schedule decides this gap. At the authors' MNIST learning-rate drops (steps 150, 300 and "
                   f"400, their `train_simple.ini`) the DNN reaches {_fmt(_values(runs, 'DNN test acc (%)'), '(%)')}% "
                   f"and the k-NN {_fmt(_values(runs, 'k-NN test acc (%)'), '(%)')}%. With dnnknn 0.2's drops at "
                   f"30/60/80% of the steps the DNN trained longer at a high rate, reached "
                   f"{_fmt(_values(old, 'DNN test acc (%)'), '(%)')}%, and the gap was "
                   f"{_fmt(_values(old, 'k-NN − DNN (%)'), '(%)')} points (page 09).")
        add(f"MLP-640's k-NN and DNN test accuracies differ by {st.text}% on {name(d)}", st.where, [check], why,
            [("mlp640", d)])

    start, compared = [], []
    for d, group in (("mnist", mnist), ("cifar10", cifar10)):
        step0 = {}
        for m, runs in group.items():
            if runs:
                knn0, dnn0 = [100 * _at(r, 0).knn_acc for r in runs], [100 * _at(r, 0).dnn_acc for r in runs]
                step0[m] = float(np.mean(knn0))
                start.append(Check(all(a > b for a, b in zip(knn0, dnn0)),
                                   f"{name(m)} on {dataset_name(d, runs)} at step 0: k-NN {_fmt(knn0, '(%)')}, "
                                   f"DNN {_fmt(dnn0, '(%)')}"))
        if len(step0) > 1:
            spread = max(step0.values()) - min(step0.values())
            where = dataset_name(d, [r for rs in group.values() for r in rs])
            compared.append(name(d) if where == name(d) else f"{name(d)}'s copy")
            start.append(Check(spread <= 5.0, f"on {where}, the architectures' step-0 k-NN accuracies within "
                                              f"{spread:.2f} points (test: ≤ 5)"))
    add("Before training the k-NN beats the DNN, at roughly the same accuracy for every architecture",
        "section 4.1, Figure 1", start,
        "A k-NN on a random network's embedding is a k-NN on a random projection of the pixels, which "
        "does well on MNIST; the untrained network's softmax is at chance. 'The same accuracy for every "
        "architecture' is tested where two or more architectures ran on one dataset "
        f"({' and '.join(compared) or 'none here'})." + copy_note,
        [("wrn", "mnist"), ("wrn", "cifar10"), ("lenet", "cifar10"), ("mlp640", "cifar10")])

    # 4.2 / Figure 2 --------------------------------------------------------------------------
    layers, apart = [], []
    for r in (r for _, runs in lenets for r in runs):
        last = r.last_step(split="test", metric="l1", pca=0, k=30)
        order = list(r.config.probe_layers)
        acc = last.set_index("layer").knn_acc.reindex(order).dropna() * 100
        dnn = 100 * last.dnn_acc.iloc[0]
        steps = np.diff(acc.values)
        rising = bool((steps >= -0.5).all())
        meets = abs(acc.iloc[-1] - dnn) <= 1.0
        drop = "" if rising else (f"; it falls by {-steps.min():.1f} points from {acc.index[int(steps.argmin())]} to "
                                  f"{acc.index[int(steps.argmin()) + 1]}")
        if not meets:
            apart.append(f"{name(r.config.dataset)} seed {r.config.seed} ({acc.iloc[-1] - dnn:+.1f})")
        layers.append(Check(rising and meets, f"LeNet on {name(r.config.dataset)}, seed {r.config.seed}: k-NN (k = 30) by layer "
                                              f"{', '.join(f'{v:.1f}' for v in acc.values)}% ({', '.join(acc.index)}), "
                                              f"DNN {dnn:.1f}%{drop}"))
    add("k-NN accuracy rises with the layer's depth and meets the DNN's at the embedding (Wide-ResNet: MNIST "
        "by unit_2_2, CIFAR by unit_3_2 / unit_3_3)", "section 4.2, Figure 2", layers,
        "Test: no layer more than 0.5 points below the one before it, and the embedding within 1 point of the "
        "DNN. Each 2-D layer is globally average pooled before the k-NN, as in the paper, so a pooling layer can "
        "read worse than the convolution before it. The Wide-ResNet's layer names are not testable on a CPU."
        + (f" Where the embedding misses the DNN by more than a point ({', '.join(apart)}), it is Figure 1's "
           f"k-NN at the last step: the first claim's gap." if apart else "")
        + lenet_note,
        [("wrn", "mnist"), ("wrn", "cifar10"), ("wrn", "cifar100"), ("lenet", "cifar10"), ("lenet", "cifar100")])

    # 4.3 / Figures 3, 4 ----------------------------------------------------------------------
    wrn = [numeric(STATED[("wrn", "cifar10", q)], _values(_runs(full, "wrn", "cifar10"), q), q,
                   f"Wide-ResNet on CIFAR-10, {q}") for q in ("MC", "ME")]
    add("MC and ME approach 1 for the Wide-ResNet (CIFAR-10: MC 0.999, ME 0.965)", "section 4.3, Figure 3 (a)–(c)",
        wrn, "", [("wrn", "mnist"), ("wrn", "cifar10"), ("wrn", "cifar100")])
    lenet = [numeric(STATED[("lenet", None, q)], _values(runs, q), q, f"LeNet on {dataset_name(d, runs)}, {q}")
             for d, runs in lenets or [("mnist", [])] for q in ("MC", "ME")]
    add("For LeNet MC is close to 1 and ME roughly around 0.8", "section 4.3, Figure 3 (d)–(f)", lenet,
        "The paper gives one MC and one ME for LeNet across its three datasets; ours are per dataset." + lenet_note,
        [("lenet", "cifar10"), ("lenet", "cifar100")])
    st = STATED[("mlp640", "mnist", "MC")]
    mlp = [numeric(st, _values(mnist["mlp640"], "MC"), "MC", "MLP-640 on MNIST, MC")]
    if mnist["mlp640"]:  # "the rest of the scores": MNIST's ME, and MC and ME on the other datasets
        ref = float(np.mean(_values(mnist["mlp640"], "MC")))
        for d, runs in (("mnist", mnist["mlp640"]), ("cifar10", cifar10["mlp640"])):
            for q in ("ME",) if d == "mnist" else ("MC", "ME") if runs else ():
                vals = _values(runs, q)
                mlp.append(Check(all(v <= ref - ATTENUATED for v in vals),
                                 f"MLP-640 on {dataset_name(d, runs)}, {q} {_fmt(vals, q)} (attenuated: every run at "
                                 f"least {ATTENUATED} below MNIST's mean MC {ref:.4f})"))
    add("For MLP-640 only MC on MNIST is high (≈ 0.997); the rest of its scores are greatly attenuated", st.where, mlp,
        f"'Greatly attenuated' is tested as a score at least {ATTENUATED} below MNIST's MC; CIFAR-100 is not run "
        f"here.{copy_note}", [("mlp640", "cifar10"), ("mlp640", "cifar100")])

    grows = []
    for d, group in (("mnist", mnist), ("cifar10", cifar10)):
        for m, runs in group.items():
            if runs:
                first, last = [_at(r, 0).P_SAME for r in runs], [_at(r, -1).P_SAME for r in runs]
                grows.append(Check(all(b > a for a, b in zip(first, last)),
                                   f"{name(m)} on {dataset_name(d, runs)}, P_SAME at step 0 {_fmt(first, 'P')}, at "
                                   f"the end {_fmt(last, 'P')}"))
    for d in ("mnist", "cifar10", "cifar100"):
        grows.append(numeric(STATED[("wrn", d, "P_SAME")], _values(_runs(full, "wrn", d), "P_SAME"), "P_SAME",
                             f"Wide-ResNet on {name(d)}, P_SAME"))
    add("P_SAME grows during training; for the Wide-ResNet it ends at 0.9998 / 0.9971 / 0.981 (MNIST / "
        "CIFAR-10 / CIFAR-100)", "section 4.3, Figure 4", grows, copy_note.strip(),
        [("wrn", "mnist"), ("wrn", "cifar10"), ("wrn", "cifar100")])

    # 4.4 / Figure 5, appendix E / Figure 8 ------------------------------------------------------
    rnd = []
    for d in ("mnist", "cifar10", "cifar100"):
        runs = _runs(full, "wrn", d, "random")
        for who in ("DNN", "k-NN"):
            q = f"{who} random-label training accuracy (%)"
            rnd.append(numeric(STATED[("wrn", d, "random-label training accuracy (%)")], _values(runs, q), q,
                               f"Wide-ResNet on {name(d)}, random labels, {q}"))
    qr = [r for r in [quick.store().find(experiments.random_config(quick, "mnist5k", "wrn"))] if r is not None]  # never trained here
    hint = ""
    if qr:
        f = qr[0].final(split="train", k=30, metric="l1")
        hint = (f"Indicative only, the quick profile ({qr[0].config.label()}, first "
                f"{qr[0].config.limit[0] if qr[0].config.limit else 'all'} training images): training accuracy DNN "
                f"{100 * f.dnn_acc:.1f}%, k-NN {100 * f.knn_acc:.1f}%, P_SAME {f.P_SAME:.3f} (page 04).")
    random_cfgs = [experiments.random_config(full, d, "wrn") for d in ("mnist", "cifar10", "cifar100")]
    add("With random labels the k-NN follows the DNN on the training set (100 / 100 / 99.972% at the end) and "
        "P_SAME grows on the training and the test set", "section 4.4, Figure 5; appendix E, Figure 8", rnd,
        hint)
    if combine(rnd) == NOT_RUN:
        rows[-1]["evidence"] = f"Not run here: Wide-ResNet-28-10 on random labels ({projection(full, random_cfgs)})"

    # Appendix B / Table 1 ---------------------------------------------------------------------
    robust = []
    for m, runs in mnist.items():
        spans, worst = [], None
        for r in runs:
            last = r.last_step(split="test", layer="embedding")
            last = last[last.k != 1000]
            ref = last[(last.k == 30) & (last.metric == "l1") & (last.pca == 0)].knn_acc.iloc[0]
            dev = 100 * (last.knn_acc - ref).abs()
            spans.append(float(dev.max()))
            if worst is None or dev.max() > worst[0]:
                w = last.loc[dev.idxmax()]
                worst = (float(dev.max()), f"k = {w.k}, {w.metric.upper()}{', PCA-64' if w.pca else ''}")
        if runs:
            robust.append(Check(max(spans) <= 1.0, f"{name(m)} on MNIST: every k ≤ 150, L1 and L2, with and without "
                                                   f"PCA-64 within {max(spans):.2f} points of k = 30, L1, the furthest "
                                                   f"{worst[1]} ({_seeds(runs)}; test: ≤ 1 point)"))
    add("k-NN accuracy is robust to k, to L1 / L2 and to PCA-64, except k = 1000 on CIFAR-100",
        "appendix B, Table 1 (Wide-ResNet, CIFAR)", robust,
        "Shown for the paper's other networks on MNIST; Table 1's own setting (the Wide-ResNet on CIFAR, 10 runs "
        "each) needs a GPU.",
        [("wrn", "cifar10"), ("wrn", "cifar100")])

    # Appendix C / Table 2 ---------------------------------------------------------------------
    gen, signs, overfit = [], [], []
    from .paper import TABLE2
    for (m, d), runs in [(("mlp640", "mnist"), mnist["mlp640"]), (("lenet", "mnist"), mnist["lenet"]),
                         *((("mlp640", "cifar10"), cifar10["mlp640"]), (("lenet", "cifar10"), cifar10["lenet"]))]:
        if not runs:
            continue
        where = f"{name(m)} on {dataset_name(d, runs)}"
        dnn, knn = _values(runs, "DNN generalisation gap (%)"), _values(runs, "k-NN generalisation gap (%)")
        diff = abs(float(np.mean(dnn)) - float(np.mean(knn)))
        gen.append(Check(diff <= 1.0, f"{where}: gap DNN {_fmt(dnn, '(%)')}, k-NN {_fmt(knn, '(%)')} "
                                      f"(similar: {diff:.2f} points apart)"))
        for who, vals, paper in (("DNN", dnn, TABLE2[(m, d)][0]), ("k-NN", knn, TABLE2[(m, d)][1])):
            q = f"{who} generalisation gap (%)"
            gen.append(numeric(Stated(f"{paper:.1f}", "Table 2"), vals, q, f"{where}, Table 2's {who} gap"))
            if (who == "DNN" and d != "mnist" and not gen[-1].held and np.mean(vals) > paper
                    and runs[0].config.weight_decay_rule == "authors" and runs[0].config.resolve().weight_decay > 0):
                overfit.append((where, d, runs, paper))
        if d == "mnist":
            signs.append(np.mean(dnn) < 0)
    why = ("Tests: the mean DNN and k-NN gaps within 1 point of each other (similar), and each gap against "
           "Table 2's value by the numeric rule. ")
    if any(signs):
        why += ("Our MNIST gaps are negative: after 1,000 steps (3.3 epochs, augmented) the network does no better "
                "on its clean training images than on the test images. The paper prints positive gaps of the "
                "same size. Its definition, 'differentiating the training and testing error rates', leaves the "
                "sign open, and the authors' code computed train − test error in one commit (b5e7428, "
                "`knn_classifier_tester.py`) and test − train 33 minutes later (48646ef); we use the latter. "
                "Whether the paper's MNIST entries came from the first is not settled here.")
    cifar_gaps = [g for rs in cifar10.values() for r in rs for g in report.generalization_gaps(r)]
    if cifar_gaps:
        fitted = all(g > 0 for g in cifar_gaps)
        why += (f" After 200 epochs on CIFAR the training set is fitted {'better' if fitted else 'not always better'} "
                f"than the test set: {'every' if fitted else 'not every'} gap there has the paper's sign "
                f"(positive).")
    for where, d, runs, paper in overfit:  # a gap well above the paper's: how far the network fitted its training set
        c = runs[0].config
        train = [100 * r.final(split="train", k=30, metric="l1").dnn_acc for r in runs]
        test = [100 * r.final(split="test", k=30, metric="l1").dnn_acc for r in runs]
        rate = c.resolve().weight_decay
        why += (f" {where} fits its training set far better than the paper's gap of {paper:.1f} implies: its DNN "
                f"accuracy (%) is {_fmt(train, '(%)')} on the training set against {_fmt(test, '(%)')} on the test "
                f"set. It trains with the authors' weight decay, which puts {c.effective_weight_decay:g} on the "
                f"weights (the rate {rate:g} squared, as their `lib/models/{AUTHORS_MODEL_FILE[c.model]}` applies it "
                f"at 48646ef); a penalty at the rate the paper prints, {1 / rate:.0f} times stronger, may be what "
                f"held the paper's training set back.")
        wd_cfg = experiments.weight_decay_config(full, c.dataset, c.model)
        why += _weight_decay_test(full.store().find(wd_cfg), runs, TABLE2[(c.model, d)],
                                  experiments.weight_decay_command(wd_cfg))
    if cifar_gaps:
        why += copy_note
    add("DNN and k-NN generalisation errors are similar, more so for deeper networks", "appendix C, Table 2", gen,
        why, [(m, d) for m in ("wrn", "lenet", "mlp640") for d in ("mnist", "cifar10", "cifar100")])

    # Appendix D / Figure 7 --------------------------------------------------------------------
    gdc = []
    if gd is not None and mnist["mlp640"]:
        f = gd.final(k=30, metric="l1")
        for q in ("MC", "P_SAME"):
            sgd = _values(mnist["mlp640"], q)
            mean, std, n = report.spread(sgd)
            gdc.append(Check(float(f[q]) >= mean - GD_MARGIN, f"{q}: GD {f[q]:.4f}, SGD {_fmt(sgd, q)}"))
    add("Full-batch gradient descent does not change the correspondence", "appendix D, Figure 7", gdc,
        f"MLP-640 on MNIST, full-batch GD, 400 steps. Test: the GD run's final MC and P_SAME at most "
        f"{GD_MARGIN} below the SGD runs' means (a change the paper's two-digit statements of MC and ME would not "
        f"show), or above them.")
    for r in rows:
        r["evidence"] = r["evidence"].replace("`", "")
    return rows


def verdict_counts(rows) -> dict[str, int]:
    out = {v: 0 for v in (REPRODUCED, PARTLY, NOT, NOT_RUN)}
    for r in rows:
        out[r["verdict"]] += 1
    return out
