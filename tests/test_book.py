"""The notebooks execute through papermill with tiny parameters, and the book builds without warnings."""
import json
import subprocess
import sys
import os
import shutil

import nbformat
import pytest

from dnnknn import book, experiments
from dnnknn.errors import ConfigError
from dnnknn.profiles import Params

from .conftest import ROOT

TINY = {"steps": 10, "eval_every": 5, "n_runs": 1, "random_steps": 10, "random_limit": [300, 200],
        "gd_steps": 10, "gd_eval_every": 5, "device": "cpu"}


def test_source_notebooks_have_no_outputs_and_a_parameters_cell():
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(sources) == 14
    for path in sources:
        nb = nbformat.read(path, as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), path
        for c in nb.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None, path


def test_pages_come_from_the_toc_and_every_notebook_is_a_chapter():
    import yaml
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    # one list of pages, at the top level beside _config.yml; jupyter-book reads it through book/'s link
    assert (ROOT / "book" / "_toc.yml").is_symlink()
    assert (ROOT / "book" / "_toc.yml").resolve() == (ROOT / "_toc.yml").resolve()
    files = [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    assert [page for _, page, _ in book.PAGES] == [f"{f}.ipynb" for f in files]
    assert {src for src, _, _ in book.PAGES} == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    for src, page, params in book.PAGES:
        assert params == ({"profile": "paper", "train_missing": False} if page.startswith("paper/") else {})


def test_parameters_cells_hold_only_what_the_reader_changes():
    # the rest comes from the profile: no page repeats the machine settings or every default
    from dnnknn.profiles import Params
    fields = {f.name for f in __import__("dataclasses").fields(Params)}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        names = [line.split("=")[0].strip() for line in cell.source.splitlines()
                 if "=" in line and not line.startswith("#")]
        assert names and set(names) <= fields and len(names) <= 5, (path.name, names)
        assert not {"device", "runs_dir", "data_dir", "train_missing"} & set(names), path.name


def test_params_from_a_notebook_namespace():
    from dnnknn.profiles import QUICK, Params
    P = Params.from_globals({"profile": "quick", "steps": None, "metric": "l2", "glue": print, "x": 3})
    assert P.steps == QUICK["steps"] and P.metric == "l2" and P.ks == () and P.datasets == ("mnist5k",)
    assert Params.from_globals({"steps": 7, "random_limit": [5, 6]}).random_limit == (5, 6)
    with pytest.raises(ConfigError, match=r"parameter 'steps' must be of type int \| None, got '7'"):
        Params.from_globals({"steps": "7"})
    with pytest.raises(ConfigError, match="parameter 'datasets' must be of type tuple"):
        Params.from_globals({"datasets": "mnist"})
    with pytest.raises(ConfigError, match="parameter 'train_missing' must be of type bool"):
        Params.from_globals({"train_missing": 1})


def test_quick_profile_trains_in_bf16_only_where_the_cpu_computes_it(monkeypatch):
    from dnnknn import train
    from dnnknn.profiles import Params
    for native, expected in ((True, "bf16-train"), (False, "fp32")):
        monkeypatch.setattr(train, "cpu_has_bf16", lambda native=native: native)
        P = Params.from_notebook(device="cpu")
        assert P.precision == "auto" and P.train_precision == expected
        made = (experiments.main_config(P, "mnist5k", "wrn"), experiments.random_config(P, "mnist5k"),
                experiments.gd_config(P))
        assert {c.precision for c in made} == {expected}
        assert experiments.main_config(Params.from_notebook(profile="paper", device="cpu"), "mnist", "lenet").precision == "fp32"
    assert Params.from_notebook(device="cpu", precision="fp32").train_precision == "fp32"
    with pytest.raises(ConfigError, match="parameter 'precision' must be one of"):
        Params.from_notebook(precision="fp16")


def test_side_by_side_names_the_quick_runs_precision(tmp_path, monkeypatch):
    from dnnknn import paper, train
    from dnnknn.profiles import Params
    for native, column in ((True, "quick (bf16-train), 1 run"), (False, "quick, 1 run")):
        monkeypatch.setattr(train, "cpu_has_bf16", lambda native=native: native)
        quick = Params.from_notebook(device="cpu", runs_dir=str(tmp_path), train_missing=False)
        assert column in paper.side_by_side(quick, quick.as_profile("paper", train_missing=False)).columns


def test_timing_table_adds_up():
    times = [{"page": "a", "wall": 10.0, "cells": 8.0, "train": 5.0, "knn": 1.0},
             {"page": "b", "wall": 4.0, "cells": 1.0, "train": 0.0, "knn": 0.0}]
    text = book.timing_table(times, 3.0, 20.0)
    assert "| a | 10 | 2 | 5 | 1 | 2 |" in text and "| all pages | 14 | 5 | 5 | 1 | 3 |" in text
    assert "numba kernels, compiled beside the first pages: 3 s" in text and "HTML build (jupyter-book): 20 s" in text


def test_committed_book_pages_record_their_provenance():
    for _, page, params in book.PAGES:
        nb = json.loads((ROOT / "book" / page).read_text())
        meta = nb["metadata"]
        assert meta["papermill"]["parameters"].get("profile", "quick") == params.get("profile", "quick")
        assert {"code_version", "device", "wall_time_s"} <= set(meta["dnnknn"])
        assert not any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))


def test_unknown_or_bad_parameter_stops_and_keeps_the_page(tmp_path):
    (tmp_path / "book").mkdir()
    page = tmp_path / "book" / "01_knn_during_training.ipynb"
    page.write_text("{}")
    with pytest.raises(ConfigError, match="unknown parameter 'stepz'.*steps"):
        book.execute("01_knn_during_training.ipynb", page.name, {"stepz": 3}, book=tmp_path / "book")
    import papermill
    with pytest.raises(papermill.PapermillExecutionError, match="parameter 'steps' must be of type"):
        book.execute("01_knn_during_training.ipynb", page.name, {"steps": "many"}, book=tmp_path / "book")
    with pytest.raises(papermill.PapermillExecutionError, match="parameter 'models': unknown model 'vgg'"):
        book.execute("01_knn_during_training.ipynb", page.name, {"models": ["vgg"]}, book=tmp_path / "book")
    assert page.read_text() == "{}"  # the page was left as it was
    assert [p.name for p in (tmp_path / "book").iterdir()] == [page.name]  # no temporary file left


@pytest.mark.slow
def test_every_notebook_executes_and_the_book_builds(tmp_path, monkeypatch):
    monkeypatch.setenv("DNNKNN_RUNS", str(tmp_path / "runs"))
    site = tmp_path / "site"
    (site / "book").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", site / "_config.yml")
    shutil.copy(ROOT / "_toc.yml", site / "_toc.yml")
    (site / "book" / "_toc.yml").symlink_to(os.readlink(ROOT / "book" / "_toc.yml"))  # as in the repository
    for f in ("intro.md", "favicon.png"):
        shutil.copy(ROOT / "book" / f, site / "book" / f)
    # Every notebook runs as its quick page, on tiny settings. The paper-profile pages are the same
    # notebooks reading results/: one of them runs here on the committed runs, the others are built
    # as committed (`make book` executes them; test_committed_book_pages_record_their_provenance)
    shutil.copytree(ROOT / "book" / "paper", site / "book" / "paper")
    reading = "paper/06_generalization_error.ipynb"
    todo = [(src, page, {**params, **TINY}) for src, page, params in book.PAGES if not page.startswith("paper/")]
    todo += [(src, page, {**params, "device": "cpu"}) for src, page, params in book.PAGES if page == reading]
    times, numba_s = book.run_pages(todo, {}, jobs=2, book=site / "book", logs=tmp_path / "logs")  # as `make book` runs them
    assert sorted(t["page"] for t in times) == sorted(p[1] for p in todo) and numba_s >= 0
    for t in times:  # each page's times; the paper-profile page reads runs and trains nothing
        assert (site / "book" / t["page"]).exists() and 0 < t["cells"] < t["wall"]
        assert t["page"].startswith("paper/") <= (t["train"] == t["knn"] == 0)
    assert (site / "book" / reading).read_bytes() != (ROOT / "book" / reading).read_bytes()  # executed here
    index = book.build(warnings_as_errors=True, book=site / "book")
    html = index.parent
    for _, page, _ in book.PAGES:
        assert (html / page.replace(".ipynb", ".html")).exists(), page
    fig1 = (html / "01_knn_during_training.html").read_text()
    assert "Figure 1" in fig1 and "<img" in fig1 and "mnist5k, SGD 10 steps" in fig1
    side = (html / "09_side_by_side.html").read_text()
    quick = Params.from_notebook(profile="quick", runs_dir=str(tmp_path / "runs"), **TINY)  # as page 09's P
    run = quick.store().find(experiments.main_config(quick, "mnist5k", "mlp640"))
    r = run.final(split="test", k=30, metric="l1")
    assert f"{100 * abs(r.knn_acc - r.dnn_acc):.2f} (n=1)" in side  # computed from the run, not typed
    from dnnknn import report
    paper06 = (html / reading.replace(".ipynb", ".html")).read_text()
    committed, _ = experiments.seed_grid(Params.from_notebook(profile="paper", train_missing=False))
    assert any(committed.values())
    for runs in filter(None, committed.values()):  # each cell: its seeds' mean ± std, read, not typed
        assert all(r.key in paper06 for r in runs)
        assert report.fmt_spread([report.generalization_gaps(r)[0] for r in runs]) in paper06
        if runs[0].config.dataset == "cifar10-jpeg":  # standing in for CIFAR-10, and named as the copy
            assert "JPEG q75 copy" in paper06
    claims = (html / "claims.html").read_text()
    assert "not run here" in claims and "The rule" in claims
    assert "not run here" in side and "fill_the_missing_runs.html" in side  # one pointer, not a command per row
    from .browser import check_in_chromium
    check_in_chromium(html, tmp_path / "screenshot.png")


MAX_CODE_LINES = 16  # a page's code after its parameters cell: imports, then calls into the library


def test_pages_only_call_the_library():
    """Every page is its parameters cell plus calls into the library: no function or class of its
    own, no loop (over datasets or anything else), its sentences written by the library."""
    import re
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]
        lines = [line for c in code for line in c.source.splitlines() if line.strip() and not line.strip().startswith("#")]
        assert len(lines) <= MAX_CODE_LINES, (path.name, len(lines))
        for line in lines:
            assert not re.match(r"\s*(def|class|for|while|try|with)\b", line), (path.name, line)
            assert not re.search(r"\bfor\b.*\bin\b|\blambda\b", line), (path.name, line)  # comprehensions too
            assert not re.search(r"\bf[\"']", line), (path.name, line)  # sentences come from the library
        body = "\n".join(c.source for c in code)
        foreign = [line for line in body.splitlines() if re.match(r"\s*(import|from)\s", line)
                   and not re.match(r"\s*from dnnknn(\.\w+)? import ", line)]
        assert foreign == [], (path.name, foreign)  # the library draws and computes, not matplotlib or torch here
        imports = re.findall(r"^from dnnknn(?:\.\w+)? import (.+)$", body, re.M)
        rest = re.sub(r"^from .* import .*$", "", body, flags=re.M)
        for name in (n.strip() for line in imports for n in line.split(",")):  # nothing imported unused
            assert re.search(rf"\b{name}\b", rest), (path.name, name)
        assert "myst_nb" not in body, path.name


def _driver(code: str, tmp_path) -> subprocess.CompletedProcess:
    """The page driver in a process of its own, its output (every file descriptor) captured."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DNNKNN_RUNS": str(tmp_path / "runs")})


NOISE = ("Executing Cell", "Ending Cell", "Executing notebook", "without encryption", "Traceback",
         "KeyboardInterrupt", "[IPKernelApp]", "Input Notebook")


def test_the_driver_prints_a_line_a_page_and_logs_the_rest_to_a_file(tmp_path):
    """A page that reads committed runs (the full-batch run): the terminal gets the page's line,
    never papermill's cell lines, a kernel's warnings or a traceback; its log file gets them."""
    page = "paper/07_full_batch_gd.ipynb"
    code = (f"from pathlib import Path; from dnnknn import book\n"
            f"todo = [p for p in book.PAGES if p[1] == {page!r}]\n"
            f"book.run_pages(todo, {{}}, jobs=1, book=Path({str(tmp_path / 'book')!r}), logs=Path({str(tmp_path / 'logs')!r}))")
    r = _driver(code, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    said = r.stdout + r.stderr
    assert not [n for n in NOISE if n in said], said[-2000:]
    line = next(line for line in r.stdout.splitlines() if "paper/07_full_batch_gd" in line)
    assert line.split()[-2:] == ["1", "read"], line  # the full-batch run, read from results/
    log = (tmp_path / "logs" / "paper__07_full_batch_gd.log").read_text()
    assert "Executing Cell" in log and (tmp_path / "book" / page).exists()


def test_a_failing_page_says_its_cell_error_and_log_in_one_line(tmp_path):
    code = ("from pathlib import Path; from dnnknn import book\n"
            "from dnnknn.errors import PageFailed\n"
            "todo = [p for p in book.PAGES if p[1] == '07_full_batch_gd.ipynb']\n"
            f"try:\n    book.run_pages(todo, {{'metric': 'l3'}}, jobs=1, book=Path({str(tmp_path / 'book')!r}), "
            f"logs=Path({str(tmp_path / 'logs')!r}))\n"
            "except PageFailed as e:\n    print('FAILED', e)")
    r = _driver(code, tmp_path)
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAILED")]
    assert failed and "07_full_batch_gd.ipynb failed in its cell" in failed[0], (r.stdout[-1500:], r.stderr[-1500:])
    assert str(tmp_path / "logs" / "07_full_batch_gd.log") in failed[0]
    assert not list((tmp_path / "book").glob(".tmp-*"))
