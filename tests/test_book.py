"""The notebooks execute through papermill with tiny parameters, and the book builds without warnings."""
import json
import shutil

import nbformat
import pytest

from dnnknn import book
from dnnknn.errors import ConfigError

from .conftest import ROOT

TINY = {"steps": 10, "eval_every": 5, "n_runs": 2, "random_steps": 10, "random_limit": [300, 200],
        "gd_steps": 10, "gd_eval_every": 5, "device": "cpu"}


def test_source_notebooks_have_no_outputs_and_a_parameters_cell():
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(sources) == 10
    for path in sources:
        nb = nbformat.read(path, as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), path
        for c in nb.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None, path


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
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / f, site / f)
    shutil.copy(ROOT / "_toc.yml", site / "book" / "_toc.yml")
    shutil.copy(ROOT / "book" / "intro.md", site / "book" / "intro.md")
    for src, page, params in book.PAGES:
        book.execute(src, page, {**params, **TINY}, book=site / "book")
    index = book.build(warnings_as_errors=True, book=site / "book")
    html = index.parent
    for _, page, _ in book.PAGES:
        assert (html / page.replace(".ipynb", ".html")).exists(), page
    fig1 = (html / "01_knn_during_training.html").read_text()
    assert "Figure 1" in fig1 and "<img" in fig1 and "mnist5k, SGD 10 steps" in fig1
    side = (html / "09_side_by_side.html").read_text()
    from dnnknn import experiments as ex
    quick = ex.Params.from_notebook(profile="quick", device="cpu", runs_dir=str(tmp_path / "runs"))
    run = quick.store().find(quick.main_config("mnist5k", "mlp640"))
    r = run.final(split="test", k=30, metric="l1")
    assert f"{100 * abs(r.knn_acc - r.dnn_acc):.2f} (n=1)" in side  # computed from the run, not typed
    assert "not run here (needs a GPU" in side
    from .browser import check_in_chromium
    check_in_chromium(html, tmp_path / "screenshot.png")
