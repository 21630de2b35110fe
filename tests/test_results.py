"""Compact records travel with the repository (results/) and give the same tables as the original run."""
import pandas as pd
import pytest

from dnnknn import RunConfig, RunStore
from dnnknn.profiles import RESULTS_DIR
from dnnknn.runs import UNFINISHED
from dnnknn.train import pred_key
from dnnknn.metrics import agreement
from dnnknn.runs import Run, export

from .conftest import SHARED_DATA, needs_shared_mnist



def test_exported_record_gives_the_same_tables(tmp_path):
    cfg = RunConfig(dataset="mnist5k", model="mlp640", steps=10, eval_steps=(0, 10), limit=(500, 200),
                    ks=(1, 30), eval_train=True)
    original = RunStore(tmp_path / "store").get(cfg, progress=False)
    path = export(RunStore(tmp_path / "store"), original.key, tmp_path / "results")
    assert sorted(p.name for p in path.iterdir()) == sorted(["config.json", "meta.json", "measures.csv",
                                                               "losses.csv", "predictions.npz", "manifest.json"])
    shipped = RunStore(tmp_path / "fresh", extra=[tmp_path / "results"]).get(cfg, train=False)
    assert shipped.path == path
    for split in ("test", "train"):
        pd.testing.assert_frame_equal(shipped.table(split), original.table(split))


@pytest.mark.parametrize("path", sorted(p for p in RESULTS_DIR.glob("*") if p.is_dir() and p.name != UNFINISHED),
                         ids=lambda p: p.name)
def test_committed_results_are_consistent(path):
    """Every committed record: its measures recompute from its predictions, and its key is its config's."""
    run = Run(path)
    assert RunStore().key(run.config) == run.key
    p = run.predictions()
    assert len(run.measures) > 0
    for r in run.measures.itertuples():
        knn = p[f"{r.step}/{r.split}/{r.layer}/{r.metric}/{r.k}/{r.pca}"]
        got = agreement(knn, p[pred_key(r.step, r.split)], p[f"labels/{r.split}"])
        for name in ("dnn_acc", "knn_acc", "MC", "ME", "P_SAME"):  # NaN only where NaN is right
            assert got[name] == pytest.approx(getattr(r, name), nan_ok=True), (r, name)


def _paper_profile():
    from dnnknn.profiles import Params
    return Params.from_notebook(profile="paper", n_runs=3, train_missing=False, runs_dir=str(RESULTS_DIR))


def test_page_09_and_the_claims_page_agree_on_every_value_they_both_judge():
    from dnnknn import claims, paper
    full = _paper_profile()
    page09 = {(j.model, j.dataset, j.quantity + (", raw pixels" if j.kind == "raw" else "")): j
              for j in paper.stated_judged(full)}
    shared = 0
    for cl in claims.evaluate(None, full):
        for c in cl.checks:
            if c.tol is None:  # a qualitative test: page 09 does not judge it
                continue
            (model, dataset), = c.settings
            j = page09.get((model, dataset, c.quantity))
            if j is None:  # a cell of the claims page only
                continue
            shared += 1
            assert (c.held, c.step, c.runs) == (j.agreement.held, j.step, tuple(r.key for r in j.runs)), (cl.text, c)
    assert shared >= 10


def test_the_500_step_runs_are_the_first_500_steps_of_the_1000_step_runs():
    """Table 2's MNIST runs stop where the authors' did; their step-500 test numbers are the main runs', up to
    float rounding: the runs were trained on different CPUs (an Intel Xeon and an AMD EPYC), whose
    convolution kernels round differently, so LeNet's trajectories part by a few test images."""
    from dnnknn import experiments
    full = _paper_profile()
    for m in ("mlp640", "lenet"):
        short, main = experiments.seed_runs(full, m, "mnist", "table2"), experiments.seed_runs(full, m, "mnist")
        if not short:
            pytest.skip("the 500-step MNIST runs are not in results/")
        for s, r in zip(short, main):
            assert s.config.seed == r.config.seed and s.config.steps == 500
            a, b = s.at(500), r.at(500)
            assert (a.dnn_acc, a.knn_acc) == pytest.approx((b.dnn_acc, b.knn_acc), abs=1.5e-3), (m, s.key, r.key)
            assert s.at(500, split="train").dnn_acc > 0  # the training set evaluated at step 500


@pytest.mark.parametrize("path", sorted((RESULTS_DIR / UNFINISHED).glob("*")), ids=lambda p: p.name)
def test_committed_unfinished_runs_are_checkpoints_of_their_own_key(path):
    """An unfinished run carried to another machine: a checkpoint that loads with weights_only, and
    an unfinished.json naming the folder's key and the checkpoint's step."""
    import json

    from dnnknn.train import load_checkpoint
    info = json.loads((path / "unfinished.json").read_text())
    assert info["key"] == path.name and not (path / "ckpt.pt").is_symlink()
    assert load_checkpoint(path / "ckpt.pt", "cpu")["step"] == info["step"] > 0


@needs_shared_mnist
def test_a_committed_run_re_evaluates_to_its_records(tmp_path, monkeypatch):
    """MLP-640 on MNIST, 500 steps (Table 2's run, seed 0), trained again: its k-NN predictions and
    measures, now through the 8-bit filter and the exact re-rank where they pay, equal the record's.
    Identical training is the premise: where this CPU trains the network to other weights (its losses
    differ from the record's), the k-NN cannot be compared, and the test says so."""
    import numpy as np

    from dnnknn import knn
    kept = []  # the filter's re-ranked counts, query by query, when it runs
    inner = knn.filtered_l1
    monkeypatch.setattr(knn, "filtered_l1", lambda *a: (inner(*a), kept.extend(a[9]))[0])
    record = Run(RESULTS_DIR / "34270e869094a9f2")
    cfg = record.config
    fresh = RunStore(tmp_path / "store").train(cfg, data_dir=SHARED_DATA, progress=False)
    assert fresh.key == record.key
    old, new = record.predictions(), fresh.predictions()
    if not fresh.losses.equals(record.losses):
        pytest.skip("this CPU trains other weights than the recording one (the losses differ)")
    for split in ("test", "train"):
        np.testing.assert_array_equal(new[pred_key(500, split)], old[pred_key(500, split)])
        key = pred_key(500, split, "embedding", "l1", 30)
        np.testing.assert_array_equal(new[key], old[key])
    pd.testing.assert_frame_equal(fresh.measures, record.measures)
    if knn.SAD_WIDTH:  # both searches went through the filter (70,000 queries), re-ranking a few each
        assert len(kept) == 70_000 and 0 < np.mean(kept) < knn.FILTER_MAX_KEPT * 60_000


def test_the_raw_pixel_run_stands_in_for_cifar10_where_only_its_copy_was_run():
    """LeNet on the CIFAR-10 JPEG copy from raw pixels (issue 32's run) is what the pages read for
    CIFAR-10's raw-pixel LeNet: found through the stand-in, like the standardised runs."""
    from dnnknn import experiments
    full = _paper_profile()
    raw, std = experiments.seed_runs(full, "lenet", "cifar10", "raw"), experiments.seed_runs(full, "lenet", "cifar10")
    if not raw:
        pytest.skip("the raw-pixel LeNet run is not in results/")
    assert [r.config.pixels for r in raw] == ["raw"] and [r.config.pixels for r in std] == ["standardised"] * len(std)
    assert raw[0].config.dataset == std[0].config.dataset and raw[0].config.steps == 50_000


def test_the_cpu_wide_resnet_stands_in_on_the_figures_named_as_itself():
    """The Wide-ResNet-28-2 (issue 35's runs) fills the Wide-ResNet-28-10's empty MNIST panels, named as itself
    in the title and the caption, and never becomes the paper network's runs that the claims judge."""
    import matplotlib
    matplotlib.use("Agg")
    from dnnknn import experiments, plots, report
    full = _paper_profile()
    runs, cfgs = experiments.seed_grid(full, models=["wrn"], datasets=["mnist"])
    got = runs[("wrn", "mnist")]
    if not got:
        pytest.skip("no Wide-ResNet-28-2 run in results/")
    assert {(r.config.depth, r.config.width) for r in got} == {(28, 2)} and cfgs[("wrn", "mnist")].width == 10
    assert experiments.seed_runs(full, "wrn", "mnist") == []  # the claims' own evidence stays empty
    fig = plots.grid(["wrn"], ["mnist"], plots.accuracy_panel(), runs)
    assert "Wide-ResNet-28-2 (the paper's depth, a fifth of its width)" in " ".join(fig.axes[0].get_title().split())
    assert "not run here on MNIST; there its panels and cells show the Wide-ResNet-28-2 (the paper's depth, a fifth of its width) in its place" in report.sources(full, runs, cfgs)


def test_the_random_label_stand_in_is_named_with_its_subset_and_one_seed():
    """Figures 5 and 8's Wide-ResNet-28-2 on MNIST's first 5,000 images: named with its subset, and its
    one seed is all a random-label panel asks for (not "of the 10 the profile asks for")."""
    from dnnknn import experiments, report
    full = _paper_profile()
    runs, cfgs = experiments.random_runs(full, datasets=["mnist"])
    run = runs[("wrn", "mnist")]
    if run is None:
        pytest.skip("no random-label Wide-ResNet-28-2 run in results/")
    assert (run.config.width, run.config.limit) == (2, experiments.CPU_RANDOM_LIMIT)
    text = report.sources(full, runs, cfgs)
    assert "first 5,000 training images" in text and "the profile asks for" not in text
    assert "first 5,000 training and 5,000 test images" in report.random_label_text(runs, k=30, metric="l1")
    grid, _ = experiments.seed_grid(full, models=["wrn"], datasets=["mnist"], kind="random")
    assert [r.key for r in grid[("wrn", "mnist")]] == [run.key]
    import matplotlib
    matplotlib.use("Agg")
    from dnnknn import plots
    fig = plots.grid(["wrn"], ["mnist"], plots.accuracy_panel("train", 30, "l1"), runs)
    assert "(seed 0, first 5,000 images)" in " ".join(fig.axes[0].get_title().split())
