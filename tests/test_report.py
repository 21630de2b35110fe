"""The book's tables, captions and figures drawn from a small finished run, checked against the
run's own measures and predictions; and `train_module`, the training loop for networks not ours."""
import math

import matplotlib
import numpy as np
import pytest
import torch

from dnnknn import RunConfig, RunStore, experiments, paper, plots, report
from dnnknn.data import load_dataset
from dnnknn.profiles import NOT_RUN, Params
from dnnknn.train import train_module

matplotlib.use("Agg")

# every k and space the tables read (Table 1's k up to 1,000 needs that many training images)
SMALL = dict(dataset="mnist5k", model="mlp640", steps=6, eval_steps=(0, 3, 6), full_eval_steps=(6,),
             limit=(1100, 200), ks=(1, 5, 30, 150, 1000), metrics=("l1", "l2"), pca_dims=(64,), eval_train=True,
             train_eval_steps=(6,), train_full=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of a small run."""
    store = RunStore(tmp_path_factory.mktemp("store"))
    return [store.get(RunConfig(**SMALL, seed=s), progress=False) for s in (0, 1)]


def test_spread_and_its_text():
    assert report.spread([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)), 2)
    assert report.fmt_spread([1.0, 3.0]) == "2.00 ± 1.41 (n=2)"
    assert report.fmt_spread([0.5]) == "0.50 (n=1)"
    assert report.fmt_spread([]) == NOT_RUN
    assert report.fmt_spread([float("nan")] * 2) == "undefined in all 2 runs"
    assert report.fmt_spread([1.0, 3.0, float("nan")]) == "2.00 ± 1.41 (n=2), undefined in 1"


def test_accuracy_table_is_the_runs_last_evaluation(runs):
    run = runs[0]
    p = run.predictions()
    y = p["labels/test"]
    knn, dnn = p["6/test/embedding/l1/30/0"], p["6/test/dnn"]
    t = report.final_accuracy_table({("mlp640", "mnist5k"): run, ("wrn", "mnist5k"): None})
    row = t.loc[(plots.name("mlp640"), plots.name("mnist5k"))]
    assert row["DNN (%)"] == f"{100 * (dnn == y).mean():.2f} (n=1)" and row["k-NN (%)"] == f"{100 * (knn == y).mean():.2f} (n=1)"
    assert (t.loc[(plots.name("wrn"), plots.name("mnist5k"))] == NOT_RUN).all()
    seeds = report.final_accuracy_table({("mlp640", "mnist5k"): runs}).iloc[0]  # the seeds: mean ± std
    assert seeds["DNN (%)"] == report.fmt_spread([100 * r.final().dnn_acc for r in runs])
    assert report.me_support(run).startswith(f"ME from {int((dnn != y).sum())} mistakes of 200")


def test_a_stand_in_is_found_only_when_the_dataset_was_not_run_and_is_named_as_itself(runs, monkeypatch):
    # CIFAR-10's JPEG copy stands in for CIFAR-10 (names.STAND_INS); here MNIST-5k stands in for MNIST
    import dataclasses
    monkeypatch.setattr(experiments, "STAND_INS", {"mnist": "mnist5k"})
    monkeypatch.setattr(plots, "STAND_INS", {"mnist": "mnist5k"})
    P = Params.from_notebook(profile="quick", runs_dir=str(runs[0].path.parent), train_missing=False)
    asked = dataclasses.replace(runs[0].config, dataset="mnist")
    got = experiments.get(P, asked)
    assert got is not None and got.key == runs[0].key
    assert experiments.dataset_name("mnist", [got]) == plots.name("mnist5k")
    assert report.final_accuracy_table({("mlp640", "mnist"): got}).index[0] == (plots.name("mlp640"), "MNIST-5k")
    wide = report.generalization_table({("mlp640", "mnist"): [got]}, wide=True)
    assert list(wide.columns) == ["MNIST"] and wide.iloc[0, 0].endswith("(n=1) (MNIST-5k)")
    text = report.sources(P, {("mlp640", "mnist"): got}, {("mlp640", "mnist"): asked})
    assert got.config.label() in text and "MNIST itself was not run here" in text
    fig = plots.grid(["mlp640"], ["mnist"], plots.accuracy_panel(), {("mlp640", "mnist"): got})
    # a run on a subset (the fixture's limit) says so in the title
    assert " ".join(fig.axes[0].get_title().split()) == f"MNIST-5k — MLP-640 (seed 0, first {got.config.limit[0]:,} images)"
    monkeypatch.setattr(experiments, "STAND_INS", {})
    assert experiments.get(P, asked) is None  # nothing stands in: not run here


def test_the_dataset_itself_wins_and_is_never_mixed_with_its_stand_in(monkeypatch):
    # a store holding CIFAR-10 seed 0 and the JPEG copy's seeds 0-2 (no training: find() only)
    import types
    P = Params.from_notebook(profile="paper", n_runs=3, train_missing=False)
    held = {experiments.main_config(P, "cifar10", "mlp640", 0).key("v")}
    held |= {experiments.main_config(P, "cifar10-jpeg", "mlp640", s).key("v") for s in range(3)}

    class Store:
        def find(self, cfg):
            return types.SimpleNamespace(config=cfg) if cfg.key("v") in held else None
    monkeypatch.setattr(Params, "store", lambda self: Store())
    assert experiments.get(P, experiments.main_config(P, "cifar10", "mlp640", 0)).config.dataset == "cifar10"
    assert experiments.get(P, experiments.main_config(P, "cifar10", "mlp640", 1)).config.dataset == "cifar10-jpeg"
    runs = experiments.seed_runs(P, "mlp640", "cifar10")
    assert [(r.config.dataset, r.config.seed) for r in runs] == [("cifar10", 0)]  # not the copy's seeds 1, 2
    held.discard(experiments.main_config(P, "cifar10", "mlp640", 0).key("v"))
    runs = experiments.seed_runs(P, "mlp640", "cifar10")
    assert [(r.config.dataset, r.config.seed) for r in runs] == [("cifar10-jpeg", s) for s in range(3)]
    assert experiments.dataset_name("cifar10", runs) == "CIFAR-10 (JPEG q75 copy)"
    assert experiments.seed_runs(P, "lenet", "cifar10") == []  # neither: not run here


def test_generalization_tables(runs):
    gaps = [report.generalization_gaps(r) for r in runs]
    r = runs[0]
    tr, te = r.final(split="train"), r.final(split="test")
    assert gaps[0] == pytest.approx((100 * (tr.dnn_acc - te.dnn_acc), 100 * (tr.knn_acc - te.knn_acc)))
    wide = report.generalization_table({("mlp640", "mnist5k"): runs, ("lenet", "mnist5k"): None}, wide=True)
    assert list(wide.index) == [(plots.name("mlp640"), "DNN"), (plots.name("mlp640"), "k-NN"),
                                (plots.name("lenet"), "DNN"), (plots.name("lenet"), "k-NN")]
    assert wide.iloc[0, 0] == report.fmt_spread([g[0] for g in gaps]) and wide.iloc[3, 0] == NOT_RUN


def test_robustness_table_reads_every_space(runs):
    t = report.robustness_table({("mnist5k", 0): runs[0], ("mnist5k", 1): runs[1], ("mnist5k", 2): None})
    assert t.shape == (2 * 5 + 1, 2) and t.index[-1] == "DNN accuracy"
    want = report.fmt_spread([100 * r.final(metric="l2", k=150, pca=64).knn_acc for r in runs])
    assert t.loc["150 + PCA", (plots.name("mnist5k"), "L2")] == want


def test_captions_say_what_made_a_panel_and_what_would_fill_one(runs):
    P = Params.from_notebook(profile="paper", device="cpu")
    cfg = RunConfig(**SMALL)
    text = report.describe(P, runs[0], cfg)
    assert runs[0].key in text and runs[0].meta["device_name"] in text and "first 1,100 training images" in text
    assert "a CPU trains it" in report.how_to_fill(P, experiments.main_config(P, "mnist", "mlp640"))
    gpu = report.how_to_fill(P, experiments.main_config(P, "cifar10", "wrn"))
    assert gpu.startswith(NOT_RUN) and "needs a GPU" in gpu and "--datasets cifar10 --models wrn --sections main" in gpu
    both = report.sources(P, {"a": runs[0], "b": None}, {"a": cfg, "b": experiments.main_config(P, "cifar10", "wrn")})
    assert runs[0].key in both and "Not run here" in both and "They need a GPU" in both


def test_paper_rule_and_stated_numbers():
    st = paper.Stated("0.5", "")
    assert paper.agrees(st, [0.4, 0.6]).text(2).startswith("yes")
    assert paper.agrees(st, [0.4, 0.41]).text(2).startswith("no (|difference|")
    assert paper.agrees(st, []).text(2) == "—"
    rows = list(paper.stated_rows())
    random = [q for m, d, q, st in rows if d == "cifar100" and "random-label" in q]
    assert sorted(random) == ["DNN random-label training accuracy (%)", "k-NN random-label training accuracy (%)"]
    assert all(q in paper.QUANTITIES for _, _, q, _ in rows)
    assert paper.digits("MC") == 4 and paper.digits("k-NN − DNN (%)") == 2


def test_panels_draw_the_runs_numbers_and_name_a_missing_one(runs):
    fig = plots.grid(["mlp640", "lenet"], ["mnist5k"], plots.accuracy_panel(),
                     {("mlp640", "mnist5k"): runs[0]}, missing=lambda r, c: f"{NOT_RUN}: {r}")
    ax, empty = fig.axes[0], fig.axes[1]
    t = runs[0].table("test", k=30, metric="l1")
    dnn, knn = ax.get_lines()[:2]
    assert not ax.collections  # one seed: no band
    np.testing.assert_allclose(dnn.get_ydata(), 100 * t.dnn_acc.values)
    np.testing.assert_allclose(knn.get_ydata(), 100 * t.knn_acc.values)
    assert list(dnn.get_xdata()) == [0, 3, 6] and ax.get_xlabel() == "training step"
    assert [tx.get_text() for tx in empty.texts] == [f"{NOT_RUN}: lenet"]
    fig.canvas.draw()  # the drawn panel keeps its y ticks, labels and grid though the empty one shares its y axis
    assert len(ax.get_yticks()) > 2 and any(t.get_text() for t in ax.get_yticklabels())
    assert any(line.get_visible() for line in ax.yaxis.get_gridlines())
    assert not any(t.get_visible() and t.get_text() for t in empty.get_yticklabels())
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_train_module_is_seeded_and_resumes_exactly():
    data = load_dataset("mnist5k", limit=(400, 100))

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 32), torch.nn.ReLU(),
                                   torch.nn.Linear(32, 10))
    whole_net, part_net = net(), net()
    whole = train_module(whole_net, data, 12, batch=50, device="cpu")
    first = train_module(part_net, data, 5, batch=50, device="cpu")
    # a second call continues at step 5 with a new optimiser (no momentum carried over): the
    # batches and augmentation are those of steps 5.. of the uninterrupted run
    rest = train_module(part_net, data, 12, batch=50, device="cpu", start=5)
    assert first == whole[:5] and len(rest) == 7
    assert np.mean(whole[-4:]) < np.mean(whole[:4])  # it learns
    again = train_module(net(), data, 12, batch=50, device="cpu")
    assert again == whole  # same seed, same numbers


def test_pick_shows_different_labels_where_a_case_has_them():
    import pandas as pd
    from dnnknn import neighbours

    right, wrong, dis = neighbours.CASES
    t = pd.DataFrame({"test_index": range(7), "label": [0, 0, 0, 1, 4, 2, 2],
                      "case": [right, right, right, right, wrong, dis, dis]})
    chosen = neighbours.pick(t, per_case=2)
    assert list(chosen.test_index) == [0, 3, 4, 5, 6]  # a second label before a repeat; the recorded order


def test_a_panel_of_several_seeds_draws_their_mean_and_a_band_of_one_sd(runs):
    import matplotlib.pyplot as plt
    fig = plots.grid(["mlp640"], ["mnist5k"], plots.accuracy_panel(), {("mlp640", "mnist5k"): runs})
    ax = fig.axes[0]
    tables = [r.table("test", k=30, metric="l1") for r in runs]
    knn = 100 * np.stack([t.knn_acc.values for t in tables])
    line = ax.get_lines()[1]
    np.testing.assert_allclose(line.get_ydata(), knn.mean(0))
    band = ax.collections[1].get_paths()[0].vertices  # the k-NN's band: mean ± sd (ddof=1) at each step
    for step, mean, sd in zip(tables[0].step, knn.mean(0), knn.std(0, ddof=1)):
        ys = band[band[:, 0] == step, 1]
        assert ys.min() == pytest.approx(mean - sd) and ys.max() == pytest.approx(mean + sd), step
    assert " ".join(ax.get_title().split()).endswith(f"(n={len(runs)}, mean ± sd, first {runs[0].config.limit[0]:,} images)")
    assert len(fig.legends) == 1 and ax.get_legend() is None  # one legend for the figure
    plt.close(fig)


def test_the_pages_sentences_carry_the_runs_numbers(runs):
    first = [r.table(k=30, metric="l1").iloc[0] for r in runs]
    text = report.start_text({("mlp640", "mnist5k"): runs, ("lenet", "mnist5k"): None})
    assert text == (f"{plots.name('mlp640')} on MNIST-5k: k-NN {report.fmt_spread([100 * f.knn_acc for f in first], 1, '%')} "
                    f"vs DNN {report.fmt_spread([100 * f.dnn_acc for f in first], 1, '%')}")
    mc = report.mc_me_text({("mlp640", "mnist5k"): runs})
    assert report.fmt_spread([r.final().MC for r in runs], 3) in mc and report.me_support(runs[0]) in mc
    assert report.final_text(None) == NOT_RUN and f"{100 * runs[0].final().dnn_acc:.2f}%" in report.final_text(runs[0])


def test_the_neighbours_page_shows_the_first_network_with_a_run_per_dataset():
    from dnnknn import neighbours
    runs = {("lenet", "a"): None, ("wrn", "a"): "run", ("lenet", "b"): "run", ("lenet", "c"): "run"}
    assert neighbours.shown_settings(runs, ["a", "b", "c"], ["lenet"], ["wrn", "lenet"]) == [("wrn", "a"), ("lenet", "b")]
    assert neighbours.shown_settings({}, ["a"], ["lenet"], ["wrn"]) == []


def test_the_missing_runs_are_the_grid_less_the_store(tmp_path):
    P = Params.from_notebook(profile="paper", n_runs=1, runs_dir=str(tmp_path), train_missing=False)
    table, count, flops = experiments.missing_runs(P)
    store = P.store()
    missing = [c for c in experiments.grid_configs(P) if store.find(c) is None]
    assert count == len(missing) and sum(len(s.split(", ")) for s in table.seeds) == count
    from dnnknn.claims import train_flops
    assert flops == pytest.approx(sum(train_flops(c) for c in missing))


def test_probing_along_training_probes_each_step():
    from dnnknn import probing
    d = load_dataset("mnist5k", limit=(300, 100))
    net = experiments.resnet18_for(d)
    reports = probing.probe_during_training(net, d, [0, 2], layer=["layer1", "avgpool"], k=[1, 5], batch=50,
                                            device="cpu")
    assert sorted(reports) == [0, 2]
    assert reports[0].table.knn_acc.tolist() != reports[2].table.knn_acc.tolist()  # trained between the probes
    t = probing.training_table(reports, "avgpool", "l1", 5)
    assert list(t.index) == [0, 2]
    assert t.loc[2, "k-NN acc (%)"] == round(100 * reports[2].table.loc[("avgpool", "l1", 5)].knn_acc, 2)


def test_runs_another_process_is_training_are_asked_for_last(tmp_path, monkeypatch):
    P = Params.from_notebook(profile="quick", runs_dir=str(tmp_path))
    cfgs = [experiments.main_config(P, "mnist5k", m) for m in ("wrn", "lenet", "mlp640")]
    store = P.store()
    lock = store.root / ".partial" / f"{store.key(cfgs[0])}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("held")
    assert store.busy(cfgs[0]) and not store.busy(cfgs[1])
    asked = []
    monkeypatch.setattr(experiments, "get", lambda P, c: asked.append(c.model) or c.model)
    assert experiments.get_all(P, cfgs) == ["wrn", "lenet", "mlp640"]  # in the order given
    assert asked == ["lenet", "mlp640", "wrn"]  # the busy one last
    asked.clear()
    seeds = [experiments.main_config(P, "mnist5k", "wrn", s) for s in range(3)]
    monkeypatch.setattr(experiments, "get", lambda P, c: asked.append(c.seed) or c.seed)
    assert experiments.get_all(P, seeds) == [0, 1, 2] and asked == [2, 1, 0]  # seed 0, the shared one, last


def test_a_table_of_numbers_keeps_its_integers(monkeypatch):
    import pandas as pd
    said = {}
    monkeypatch.setattr(report, "glue_md", lambda name, text: said.setdefault(name, text))
    report.glue_table("t", pd.DataFrame([{"step": 0, "acc": 1.5}, {"step": 40, "acc": 2.25}]).set_index("step"))
    assert "| 40     | 2.25  |" in said["t"] and "40.0" not in said["t"]
