"""The claims page's sentences and tables, written from `claims.Claim` data (nothing is judged here)."""
from __future__ import annotations

import pandas as pd

from . import paper
from .claims import VERDICTS, Check, Claim, Fact, duration
from .names import name, short_name
from .report import depth_lines, fmt_spread


def setting_name(setting, data: str | None = None, wrn: str | None = None) -> str:
    """'LeNet on MNIST'; `wrn`: the name of the network standing in for the Wide-ResNet."""
    m, d = setting
    return f"{wrn if wrn and m == 'wrn' else name(m)} on {name(data or d)}"


def _settings(settings) -> str:
    return ", ".join(setting_name(s) for s in settings)


def values_text(c: Check) -> str:
    """Per run: mean ± std (n); a statistic over the runs: its value(s) and how many runs; a series: a → b."""
    if c.layers:
        return ", ".join(str(x) for x in c.layers) + f" ({len(c.layers)} run{'s' * (len(c.layers) != 1)})"
    if c.shape == "per run":
        return fmt_spread(c.values, c.digits)
    vals = (" → " if c.shape == "series" else ", ").join(f"{v:.{c.digits}f}" for v in c.values)
    return f"{vals} ({len(c.runs)} run{'s' * (len(c.runs) != 1)})"


def ours(c: Check, quantity: bool = False, wrn: str | None = None) -> str:
    """'LeNet on MNIST: 0.18 ± 0.05 (n=3) at step 500'; with `quantity`, the quantity named first."""
    where = " and ".join(setting_name(s, c.data.get(s), wrn) for s in c.settings) if c.settings else "the quick profile"
    at = f" at step {c.step:,}" if c.step is not None else ""
    return f"{where}: {c.quantity + ' ' if quantity else ''}{values_text(c)}{at}"


def settings_column(cl: Claim) -> str:
    own, stand_in = cl.covered()
    extra = f" ({len(stand_in)} on a stand-in)" if stand_in else ""
    return f"{len(own) + len(stand_in)} / {len(cl.settings)}{extra}"


def summary(claims: list) -> pd.DataFrame:
    """The claims page's table: one row a claim."""
    rows = [{"#": i + 1, "claim": cl.text, "where in the paper": cl.where, "the paper's value": cl.paper,
             "ours (mean ± std, n)": "; ".join(ours(c, len({c.quantity for c in cl.checks}) > 1)
                                                for c in cl.checks if c.values or c.layers) or "—",
             "settings run / claimed": settings_column(cl), "verdict": cl.verdict,
             INDICATIVE_COLUMN: indicative_cell(cl)} for i, cl in enumerate(claims)]
    return pd.DataFrame(rows).set_index("#")


INDICATIVE_COLUMN = "indicative only: a CPU's Wide-ResNet in the paper's place"


def indicative_cell(cl: Claim) -> str:
    """The summary's last column: how the claim fares with the stand-in network, or '—'."""
    word = cl.indicative_verdict()
    if word is None:
        return "—"
    where = sorted({name(d) for c in cl.indicative for m, d in c.settings if m == "wrn"})
    return f"{word} on {', '.join(where)} ({short_name(cl.indicative_name)})"


def counts(claims: list) -> dict[str, int]:
    out = {v: 0 for v in VERDICTS}
    for cl in claims:
        out[cl.verdict] += 1
    return out


def counts_text(claims: list) -> str:
    return ", ".join(f"{n} {v}" for v, n in counts(claims).items())


def check_sentence(c: Check, wrn: str | None = None) -> str:
    if c.held is None:
        return f"{_settings(c.settings)}: not run here"
    verdict = "holds" if c.held else "does not hold"
    how = f" ({paper.diff_text(c.diff, c.tol, c.digits)})" if c.tol is not None else ""
    return f"{ours(c, wrn=wrn)}, {c.quantity}, against {c.paper}: {verdict}{how}"


def _spread(values, digits=2) -> str:
    return fmt_spread(values, digits)


def _authors_figure2(v) -> str:
    panels = "; ".join(f"{name(p['model'])} on {name(p['dataset'])}: ρ {p['rho']:.2f}, embedding − DNN "
                       f"{p['gap']:+.2f}, {'holds' if p['held'] else 'fails'}" for p in v["panels"])
    return f"The same test on the authors' plotted values ({', '.join(paper.FIGURE2_SOURCE.values())}): {panels}."


def _authors_first_layer(v) -> str:
    panels = "; ".join(f"{name(p['dataset'])}: {p['first']} (the paper names {p['named']}, our {p['ours']}), "
                       f"{'holds' if p['first'] == p['ours'] else 'fails'}" for p in v["panels"])
    return (f"The test on the authors' plotted values ({paper.FIGURE2_SOURCE['wrn']}), in our layer names: "
            f"{panels}.")


def _not_run(v) -> str:
    cost = ""
    if "pflop" in v:
        when = duration(3600 * v["gpu_hours"])
        when = when if when.startswith("under") else f"about {when}"
        cost = (f" ({len(v['settings'])} run{'s' * (len(v['settings']) > 1)}, {v['pflop']:,.1f} PFLOP of training: "
                f"{when} on one GPU at 100 TFLOP/s sustained, projected, evaluation not included; {v['command']})")
    return f"Not run here: {_settings(v['settings'])}{cost}."


def _table2_last_step(v) -> str:
    parts = "; ".join(f"{setting_name(r['setting'])}, {r['quantity']}: {_spread(r['values'])}" for r in v["rows"])
    return f"At our last step ({v['last_step']:,}), from the main runs: {parts}."


def _indicative(v) -> str:
    held = "" if v["held"] is None else f"; the test {'holds' if v['held'] else 'does not hold'} there"
    vals = ", ".join(f"{x:.{v['digits']}f}" for x in v["values"])
    return f"Indicative only, the {v['what']}: {v['quantity']} {vals}{held}."


def _raw_vs_standardised(v) -> str:
    r, s = v["raw"], v["standardised"]
    t2 = v["table2"]
    return (f"LeNet on {name(v['data'])} on raw pixels, as the authors trained the paper's CIFAR-10 LeNet (run "
            f"{', '.join(v['keys'])}): DNN test accuracy {_spread(r['DNN test acc (%)'])}% (standardised: "
            f"{_spread(s['DNN test acc (%)'])}%; the authors' Figure 2 file: {v['authors_dnn']:.2f}%), k-NN − DNN "
            f"{_spread(r['k-NN − DNN (%)'])} points (standardised: {_spread(s['k-NN − DNN (%)'])}), generalisation "
            f"errors DNN {_spread(r['DNN generalisation gap (%)'])} and k-NN {_spread(r['k-NN generalisation gap (%)'])} "
            f"(standardised: {_spread(s['DNN generalisation gap (%)'])} and {_spread(s['k-NN generalisation gap (%)'])}; "
            f"Table 2: {t2[0]:.1f} and {t2[1]:.1f}).")


def _table2_flipped(v) -> str:
    rows = "; ".join(f"{setting_name(r['setting'])}, {r['quantity']}: {_spread(r['values'])} against {r['paper']}, "
                     f"{'agrees' if r['held'] else 'does not agree'}" for r in v["rows"])
    n = sum(bool(r["held"]) for r in v["rows"])
    return (f"With the sign the authors' code gave at b5e7428 (`knn_classifier_tester.py`: train − test error, "
            f"33 minutes before 48646ef turned it into test − train; both commits' `test_simple.ini` read the MNIST "
            f"run at ckpt-500), our MNIST cells at step 500 would be: {rows} ({n} of {len(v['rows'])} agree by the "
            f"rule). Which of the two formulas made the paper's MNIST column cannot be settled from the repository; "
            f"the verdict above uses test − train, as the code has since 48646ef.")


def _depth(v, leaders: bool) -> str:
    lines = depth_lines([], v) if leaders else depth_lines(v["rows"], {})
    return "The depth-and-width chapter, on MNIST, mean over seeds: " + "; ".join(lines) + "."


FACTS = {  # a Fact's kind -> its sentence
    "depth_measures": lambda v: _depth(v, leaders=False),
    "depth_leaders": lambda v: _depth(v, leaders=True),
    "table2_flipped": _table2_flipped,
    "raw_vs_standardised": _raw_vs_standardised,
    "raw_pending": lambda v: (f"The run as the authors trained the paper's CIFAR-10 LeNet, on raw pixels "
                              f"(`experiments.raw_pixels_config`: the same run with `pixels='raw'`), is not in "
                              f"results/ yet; on {name(v['data'])} it takes about 3 h on a 2-core CPU."),
    "late_gap": lambda v: (f"On {name(v['data'])} {v.get('network', 'LeNet')}'s k-NN does not close on its DNN in the second half of "
                           f"training: it stays {v['lo']:.1f} to {v['hi']:.1f} points {v['side']} it at every "
                           f"evaluation from step {v['from_step']:,} on ({v['n']} seed{'s' * (v['n'] > 1)})."),
    "signed": lambda v: f"Signed, k-NN − DNN: {_spread(v['values'])}.",
    "at_last_step": lambda v: (f"At our last step ({v['last_step']:,}) the same runs give {_spread(v['values'])}; the paper's "
                               f"number was read at step {v['paper_step']:,} ({paper.STEP_SOURCE[v['paper_step']]})."),
    "authors_figure2": _authors_figure2,
    "authors_first_layer": _authors_first_layer,
    "not_run": _not_run,
    "indicative": _indicative,
    "other_setting": lambda v: f"In a setting the paper's table does not show (evidence only): {check_sentence(v['check'])}.",
    "table2_last_step": _table2_last_step,
}


def fact_sentence(f: Fact) -> str:
    return FACTS[f.kind](f.values)


def details(claims: list) -> str:
    """Markdown: each claim, its verdict, test, evidence, facts and reasons."""
    out = []
    for i, cl in enumerate(claims):
        lines = [f"**{i + 1}. {cl.text}** ({cl.where}; the paper: {cl.paper}): **{cl.verdict}**, "
                 f"{settings_column(cl)} settings run.", "", f"- Test: {cl.test}."]
        lines += [f"- {check_sentence(c)}." for c in cl.checks if c.held is not None]  # the rest: the not_run fact
        lines += [f"- {fact_sentence(f)}" for f in cl.facts]
        if cl.indicative:
            lines.append(f"- Indicative only, not counted in the verdict: the same test with the {cl.indicative_name} in "
                         f"the paper's Wide-ResNet-28-10's place, where that network was not run here, "
                         f"**{cl.indicative_verdict()}**:")
            lines += [f"  - {check_sentence(c, cl.indicative_name)}." for c in cl.indicative]
        if cl.why:
            lines.append(f"- Why: {cl.why}")
        out.append("\n".join(lines))
    return "\n\n".join(out)
