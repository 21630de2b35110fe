"""The verdict: the rule, the verdict words, and claims judged from small constructed runs (data, not prose)."""
import ast
import inspect
import math

import matplotlib
import pandas as pd
import pytest

from dnnknn import RunConfig, claims, paper
from dnnknn.claims import Check, Claim, Evidence
from dnnknn.paper import STATED, Stated
from dnnknn.runs import Run

matplotlib.use("Agg")


class FakeRun(Run):
    """A run built from a few numbers: `curve` {step: (dnn_acc, knn_acc)} on the test set (MC, ME and
    P_SAME derived simply), optional training-set rows and layers at the last step."""

    def __init__(self, curve, dataset="mnist", model="mlp640", train=None, layers=None, key="fake", seed=0):
        rows = []
        for split, c in (("test", curve), ("train", train or {})):
            for step, (dnn, knn) in c.items():
                rows.append(dict(step=step, split=split, layer="embedding", metric="l1", k=30, pca=0, dnn_acc=dnn,
                                 knn_acc=knn, MC=knn, ME=0.5, P_SAME=1 - abs(dnn - knn)))
        last = max(curve)
        for layer, acc in (layers or {}).items():  # "embedding" is the curve's own row
            if layer != "embedding":
                rows.append(dict(step=last, split="test", layer=layer, metric="l1", k=30, pca=0, dnn_acc=curve[last][0],
                                 knn_acc=acc, MC=1.0, ME=0.5, P_SAME=1.0))
        self.measures = pd.DataFrame(rows)
        self.config = RunConfig(dataset=dataset, model=model, steps=last, eval_steps=tuple(sorted(curve)),
                                probe_layers=tuple(layers or ()), seed=seed)
        self.meta, self.path = {}, None
        self._key = key

    @property
    def key(self):
        return self._key


def test_printed_precision():
    assert Stated("4.44", "").precision == pytest.approx(0.005)
    assert Stated("≈ 0.997", "").precision == pytest.approx(0.001)
    assert Stated("≈ 0.8", "").precision == pytest.approx(0.1)
    assert Stated("100", "").precision == pytest.approx(0.5) and Stated("100", "").value == 100.0
    assert STATED[("mlp640", "mnist", "|k-NN − DNN| (%)")].value == 4.44


def test_the_one_rule():
    st = Stated("≈ 0.997", "")
    assert paper.agrees(st, [0.9953, 0.9957, 0.9961]).held  # within 2 std + a unit of the last digit
    assert not paper.agrees(Stated("4.44", ""), [1.2, 1.35, 1.5]).held
    assert paper.agrees(Stated("4.44", ""), [4.444]).held and not paper.agrees(Stated("4.44", ""), [4.446]).held
    assert paper.agrees(st, []).held is None
    assert paper.agrees(st, [float("nan"), 0.997]).held  # undefined values left out
    assert paper.diff_text(0.006, 0.005, 2) == "|difference| 0.006 > 0.005"  # digits until the two differ


def _claim(checks, settings):
    return Claim("c", "w", "p", tuple(settings), "t", checks)


def test_verdict_words_say_how_much_was_run():
    own, other = ("lenet", "mnist"), ("wrn", "mnist")
    ok, bad = Check((own,), "q", "p", [1.0], True), Check((own,), "q", "p", [1.0], False)
    copy = Check((("lenet", "cifar10"),), "q", "p", [1.0], True, data={("lenet", "cifar10"): "cifar10-jpeg"})
    assert _claim([ok], [own]).verdict == claims.REPRODUCED
    assert _claim([ok], [own, other]).verdict == claims.HOLDS  # a setting not run
    assert _claim([copy], [("lenet", "cifar10")]).verdict == claims.HOLDS  # run on a stand-in only
    assert _claim([ok, bad], [own]).verdict == claims.NOT  # one setting, one of its checks fails
    assert _claim([ok, Check((other,), "q", "p", [1.0], False)], [own, other]).verdict == claims.PARTLY
    assert _claim([bad], [own]).verdict == claims.NOT
    assert _claim([Check((own,), "q", "p")], [own]).verdict == claims.NOT_RUN
    assert _claim([ok, copy], [own, ("lenet", "cifar10")]).covered() == ({own}, {("lenet", "cifar10")})
    # a setting holds when every check on it holds: MC holds and ME fails everywhere is "not reproduced"
    other_own = ("mlp640", "mnist")
    mc = [Check((s,), "MC", "p", [1.0], True) for s in (own, other_own)]
    me = [Check((s,), "ME", "p", [1.0], False) for s in (own, other_own)]
    assert _claim(mc + me, [own, other_own]).verdict == claims.NOT
    assert _claim(mc + me[:1], [own, other_own]).verdict == claims.PARTLY


def _mlp_runs(gap500, gap1000, n=3):
    return [FakeRun({0: (0.1, 0.8), 100: (0.8, 0.9), 500: (0.90, 0.90 + gap500 / 100),
                     1000: (0.90, 0.90 + gap1000 / 100)}, train={1000: (0.91, 0.91)}, seed=s, key=f"k{s}")
            for s in range(n)]


def test_the_444_is_read_at_step_500_of_the_run():
    at500 = claims.mlp_gap_mnist(Evidence.of({("mlp640", "mnist", "main"): _mlp_runs(4.44, 1.0)}))
    (c,) = at500.checks
    assert c.step == 500 and c.values == pytest.approx([4.44] * 3) and c.held
    assert at500.verdict == claims.REPRODUCED
    wrong = claims.mlp_gap_mnist(Evidence.of({("mlp640", "mnist", "main"): _mlp_runs(1.0, 4.44)}))
    assert wrong.checks[0].values == pytest.approx([1.0] * 3) and wrong.verdict == claims.NOT
    last = [f for f in wrong.facts if f.kind == "at_last_step"][0]
    assert last.values["values"] == pytest.approx([4.44] * 3)  # the last step is shown, not judged


def test_table2_mnist_cells_read_the_500_step_runs():
    t2 = [FakeRun({500: (0.90, 0.95)}, train={500: (0.91, 0.955)}, key=f"t{s}", seed=s) for s in range(3)]
    ev = Evidence.of({("mlp640", "mnist", "table2"): t2, ("mlp640", "mnist", "main"): _mlp_runs(4.4, 4.4)})
    cl = claims.table2_values(ev)
    mlp = [c for c in cl.checks if c.settings == (("mlp640", "mnist"),)]
    assert [c.runs for c in mlp] == [("t0", "t1", "t2")] * 2  # read from the 500-step runs, not the main ones
    assert mlp[0].values == pytest.approx([1.0] * 3) and mlp[1].values == pytest.approx([0.5] * 3)
    assert [c.held for c in mlp] == [False, False]  # Table 2: 0.8 and 0.4
    (flipped,) = [f for f in cl.facts if f.kind == "table2_flipped"]  # b5e7428's sign, shown beside, not judged
    assert [r["values"] for r in flipped.values["rows"]] == [pytest.approx([-1.0] * 3), pytest.approx([-0.5] * 3)]


def test_figure2_holds_the_authors_plotted_values():
    # plots/lenet_knn_layer_plots.py at 48646ef: LeNet on MNIST, k = 30; and on CIFAR-10, the DNN
    by_k, dnn = paper.FIGURE2[("lenet", "mnist")]
    assert by_k[30] == [13.86, 73.37, 70.18, 97, 96.88, 99.06] and dnn == 98.84
    assert paper.FIGURE2[("lenet", "cifar10")][1] == 84.75
    # plots/wrn_knn_layer_plots.py at 48646ef: the Wide-ResNet on CIFAR-10, k = 30, unit_3_2 (ours unit_3_1) to the end
    wrn = dict(zip(paper.FIGURE2_LAYERS["wrn"], paper.FIGURE2[("wrn", "cifar10")][0][30]))
    assert [wrn["unit_3_1"], wrn["unit_3_2"], wrn["embedding"]] == [94.48, 95.2, 95.2]
    assert paper.PAPER_UNIT["unit_2_2"] == "unit_2_1"


def test_the_layers_test_passes_the_authors_own_figure_and_can_fail():
    for (m, d), (by_k, dnn) in paper.FIGURE2.items():  # a test the paper's own figure fails is the wrong test
        assert claims.layers_test(by_k[30][1:], dnn)[0], (m, d)
    assert not claims.layers_test([90, 80, 70, 60, 99], 99)[0]  # falls with depth
    assert not claims.layers_test([10, 20, 30, 40, 90], 99)[0]  # rises, but misses the DNN
    named = {"mnist": "unit_2_2", "cifar10": "unit_3_2", "cifar100": "unit_3_3"}
    for d, unit in named.items():
        by_k, dnn = paper.FIGURE2[("wrn", d)]
        assert claims.first_within(by_k[30], paper.FIGURE2_LAYERS["wrn"], dnn) == paper.PAPER_UNIT[unit]


def test_layers_claim_from_runs():
    good = FakeRun({0: (0.1, 0.5), 1000: (0.99, 0.99)}, model="lenet",
                   layers={"conv1": 0.77, "pool1": 0.72, "conv2": 0.96, "pool2": 0.97, "embedding": 0.99})
    flat = FakeRun({0: (0.1, 0.5), 1000: (0.99, 0.99)}, model="lenet",
                   layers={"conv1": 0.97, "pool1": 0.96, "conv2": 0.95, "pool2": 0.94, "embedding": 0.99})
    assert claims.layers_rise(Evidence.of({("lenet", "mnist", "main"): [good]})).verdict == claims.HOLDS
    assert claims.layers_rise(Evidence.of({("lenet", "mnist", "main"): [flat]})).verdict == claims.NOT


def test_new_depth_claims_from_runs():
    mlp = [FakeRun({0: (0.1, 0.8), 100: (0.8, 0.9), 500: (0.9, 0.94), 1000: (0.9, 0.94)})]
    lenet = [FakeRun({0: (0.1, 0.8), 100: (0.97, 0.98), 500: (0.99, 0.99), 1000: (0.99, 0.985)}, model="lenet")]
    ev = Evidence.of({("mlp640", "mnist", "main"): mlp, ("lenet", "mnist", "main"): lenet})
    deeper = claims.deeper_mc_me(ev)
    assert [c.held for c in deeper.checks] == [True, True] and deeper.verdict == claims.HOLDS
    assert deeper.checks[0].values[0] < deeper.checks[0].values[1]  # MLP-640's MC, then LeNet's
    assert claims.deeper_mc_me(Evidence.of({("mlp640", "mnist", "main"): lenet,
                                            ("lenet", "mnist", "main"): mlp})).checks[0].held is False
    wrn = [FakeRun({0: (0.1, 0.8), 100: (0.5, 0.9), 1000: (0.995, 0.995)}, model="wrn")]
    late = claims.lenet_early_wrn_late(Evidence.of({("lenet", "mnist", "main"): lenet, ("wrn", "mnist", "main"): wrn}))
    assert late.checks[0].held and late.verdict == claims.HOLDS
    assert claims.lenet_early_wrn_late(Evidence.of({})).verdict == claims.NOT_RUN


def test_a_gap_that_does_not_close_is_described_from_the_runs():
    below = FakeRun({0: (0.1, 0.5), 10: (0.79, 0.80), 20: (0.822, 0.810), 30: (0.828, 0.815), 40: (0.830, 0.818)},
                    dataset="cifar10-jpeg", model="lenet")
    late = claims.late_gap([below])
    assert late["side"] == "below" and late["from_step"] == 20
    assert (round(late["lo"], 1), round(late["hi"], 1)) == (1.2, 1.3)
    cl = claims.gap_closes(Evidence.of({("lenet", "cifar10", "main"): [below]}))
    assert cl.verdict == claims.NOT and cl.checks[0].data == {("lenet", "cifar10"): "cifar10-jpeg"}
    assert [f.kind for f in cl.facts][:1] == ["late_gap"]
    above = FakeRun({0: (0.1, 0.5), 10: (0.79, 0.80), 20: (0.82, 0.83), 30: (0.82, 0.84), 40: (0.82, 0.85)})
    assert claims.late_gap([above, below]) is None  # the sign changes between runs


def test_each_claim_is_a_short_function():
    src = inspect.getsource(claims)
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.FunctionDef):
            assert node.end_lineno - node.lineno + 1 <= 60, node.name


def test_every_claim_renders_without_runs():
    from dnnknn import verdict
    cls = [fn(Evidence.of({})) for fn in claims.CLAIMS]
    assert all(cl.verdict == claims.NOT_RUN for cl in cls)
    assert set(verdict.counts(cls)) == set(claims.VERDICTS) and verdict.details(cls)
    assert list(verdict.summary(cls).columns) == ["claim", "where in the paper", "the paper's value",
                                                  "ours (mean ± std, n)", "settings run / claimed", "verdict",
                                                  verdict.INDICATIVE_COLUMN]


def test_training_flops_are_counted_not_guessed():
    mlp = claims.train_flops(RunConfig(dataset="mnist", model="mlp640", steps=10))
    # 784 -> 640 -> 10 at batch 200: forward 2 FLOPs per weight, backward 2 for the weights' gradient
    # and 2 for the input's, which the first layer does not need
    assert mlp == pytest.approx(10 * 200 * (4 * 784 * 640 + 6 * 640 * 10), rel=0.02)


def test_every_panel_labels_its_axes(tmp_path):
    from dnnknn import RunStore, plots
    run = RunStore(tmp_path).get(RunConfig(dataset="mnist5k", steps=4, eval_steps=(0, 4), limit=(200, 100),
                                           ks=(1, 5, 30), eval_train=True, probe_layers=("embedding_raw",)),
                                 progress=False)
    for panel in (plots.accuracy_panel(), plots.mc_me_panel(), plots.p_same_panel(("train", "test")),
                  plots.layers_panel(ks=(1, 5, 30))):
        fig = plots.grid(["mlp640"], ["mnist5k"], panel, {("mlp640", "mnist5k"): run})
        ax = fig.axes[0]
        assert ax.get_ylabel() and (ax.get_xlabel() or ax.get_xticklabels()), panel
    assert not math.isnan(run.final().knn_acc)


def test_random_labels_train_without_augmentation_by_default():
    assert RunConfig(labels="random").resolve().augment is False
    assert RunConfig(labels="random").resolve().pad_fill is None
    assert RunConfig(labels="random", augment=True).resolve().augment is True
    assert RunConfig().resolve().augment is True


def test_the_raw_pixel_run_is_judged_beside_the_standardised_one():
    def lenet(end, key):
        return FakeRun({0: (0.1, 0.3), 2500: (0.7, 0.72), 50000: end}, dataset="cifar10-jpeg", model="lenet",
                       train={50000: (0.999, 0.999)}, key=key)
    std, raw = [lenet((0.830, 0.818), "std")], [lenet((0.845, 0.843), "raw")]
    alone = claims.gap_closes(Evidence.of({("lenet", "cifar10", "main"): std}))
    assert [f.kind for f in alone.facts if f.kind.startswith("raw")] == ["raw_pending"]
    both = claims.gap_closes(Evidence.of({("lenet", "cifar10", "main"): std, ("lenet", "cifar10", "raw"): raw}))
    assert [c.held for c in both.checks] == [False, True] and "raw pixels" in both.checks[1].quantity
    (fact,) = [f for f in both.facts if f.kind == "raw_vs_standardised"]
    assert fact.values["raw"]["DNN test acc (%)"] == pytest.approx([84.5]) and fact.values["authors_dnn"] == 84.75
    t2 = claims.table2_values(Evidence.of({("lenet", "cifar10", "main"): std, ("lenet", "cifar10", "raw"): raw}))
    assert [c.runs for c in t2.checks if c.settings == (("lenet", "cifar10"),)] == [("std",), ("raw",)] * 2


def test_a_check_over_several_networks_names_each_ones_data():
    """LeNet on CIFAR-10 itself beside a Wide-ResNet on the JPEG copy: one setting is its own, one a stand-in."""
    lenet = [FakeRun({0: (0.1, 0.3), 100: (0.7, 0.72), 1000: (0.84, 0.84)}, dataset="cifar10", model="lenet")]
    wrn = [FakeRun({0: (0.1, 0.3), 100: (0.5, 0.6), 1000: (0.95, 0.95)}, dataset="cifar10-jpeg", model="wrn")]
    cl = claims.lenet_early_wrn_late(Evidence.of({("lenet", "cifar10", "main"): lenet, ("wrn", "cifar10", "main"): wrn}))
    (c,) = cl.checks
    assert c.data == {("wrn", "cifar10"): "cifar10-jpeg"}
    assert cl.covered() == ({("lenet", "cifar10")}, {("wrn", "cifar10")})


def test_table2_names_the_500_step_runs_it_lacks():
    main = _mlp_runs(4.4, 4.4)  # the 1,000-step runs are here, the 500-step ones are not
    cl = claims.table2_values(Evidence.of({("mlp640", "mnist", "main"): main}))
    missing = [f for f in cl.facts if f.kind == "not_run"]
    assert any(("mlp640", "mnist") in f.values["settings"] for f in missing)
    deeper = claims.table2_deeper(Evidence.of({("mlp640", "mnist", "main"): main, ("wrn", "mnist", "table2"): main}))
    assert deeper.checks == []  # no 500-step MLP-640 run to compare with: not judged, not failed


def test_quick_numbers_are_read_without_the_paper_profile():
    q = FakeRun({0: (0.1, 0.1), 800: (0.99, 0.99)}, dataset="mnist5k", model="wrn", train={800: (1.0, 1.0)})
    ev = Evidence.of({}, quick={("wrn", "mnist5k", "random"): q})
    facts = claims.random_train_accuracy(ev).facts
    assert [f.values["values"] for f in facts if f.kind == "indicative"] == [pytest.approx([100.0, 100.0])]


def test_the_cpu_wide_resnet_is_indicative_beside_a_verdict_it_never_changes():
    lenet = [FakeRun({0: (0.1, 0.8), 100: (0.97, 0.98), 500: (0.99, 0.99), 1000: (0.99, 0.985)}, model="lenet",
                     layers={"conv1": 0.9, "embedding": 0.985})]
    layers = {"init_conv": 0.5, "unit_3_3": 0.9, "embedding": 0.995}
    wrn = [FakeRun({0: (0.1, 0.8), 100: (0.5, 0.9), 500: (0.99, 0.99), 1000: (0.995, 0.995)}, model="wrn", layers=layers)]
    stand_in = {("lenet", "mnist", "main"): lenet, ("wrn-28-2", "mnist", "main"): wrn}
    judged = {cl.text: cl for cl in claims.judge_all(Evidence.of(stand_in))}
    without = {cl.text: cl.verdict for cl in claims.judge_all(Evidence.of({("lenet", "mnist", "main"): lenet}))}
    assert {t: cl.verdict for t, cl in judged.items()} == without  # no verdict moves
    assert sum(bool(cl.indicative) for cl in judged.values()) >= 3
    late = judged[claims.lenet_early_wrn_late(Evidence.of({})).text]
    assert late.verdict == claims.NOT_RUN  # the Wide-ResNet-28-10 was not run: the stand-in does not count
    assert late.indicative_verdict() == "holds" and late.indicative[0].settings == (("lenet", "mnist"), ("wrn", "mnist"))
    assert late.indicative_name.startswith("Wide-ResNet-28-2 (the paper's depth, a fifth of its width)")
    assert all(not cl.indicative for cl in judged.values() if not any(m == "wrn" for m, _ in cl.settings))
    # where the Wide-ResNet-28-10 itself was run, its own runs decide and no indicative check is added
    own = claims.judge_all(Evidence.of({**stand_in, ("wrn", "mnist", "main"): wrn}))
    late_own = [cl for cl in own if cl.text == late.text][0]
    assert late_own.verdict == claims.HOLDS and late_own.indicative == []
    # and the stand-in fails where its runs do
    early = [FakeRun({0: (0.1, 0.8), 100: (0.99, 0.99), 500: (0.99, 0.99), 1000: (0.98, 0.98)}, model="wrn",
                     layers=layers)]
    bad = [cl for cl in claims.judge_all(Evidence.of({**stand_in, ("wrn-28-2", "mnist", "main"): early}))
           if cl.text == late.text][0]
    assert bad.indicative_verdict() == "does not hold" and bad.verdict == claims.NOT_RUN


def test_the_wide_resnets_table2_row_is_its_main_run_at_step_500():
    import dnnknn
    from dnnknn import experiments, profiles
    P = profiles.Params.from_notebook(profile="paper")
    main = experiments.main_config(P, "mnist", "wrn")
    assert experiments.table2_config(P, "mnist", "wrn") == main and main.resolve().train_eval_steps == (500, 1000)
    for model, key in (("lenet", "3a450cb952b246c7"), ("mlp640", "b916a5d84933fa64")):  # committed keys unchanged
        assert experiments.main_config(P, "mnist", model).key(dnnknn.__version__) == key
    assert experiments.legacy_config(P, "mnist", "wrn").resolve().train_eval_steps == (1000,)  # dnnknn 0.2's
    wrn = [FakeRun({0: (0.1, 0.8), 500: (0.98, 0.97), 1000: (0.99, 0.99)}, model="wrn", key=f"w{s}", seed=s,
                   train={500: (0.99, 0.985), 1000: (0.995, 1.0)}) for s in range(3)]
    cl = claims.table2_values(Evidence.of({("wrn", "mnist", "table2"): wrn}))
    cells = [c for c in cl.checks if c.settings == (("wrn", "mnist"),)]
    assert [c.values for c in cells] == [pytest.approx([1.0] * 3), pytest.approx([1.5] * 3)]  # step 500: not 0.5, 1.0
    assert claims.report_gap(wrn[0], 0) == pytest.approx(1.0)


def test_an_indicative_check_on_a_subset_names_the_subset():
    import dataclasses
    q = FakeRun({0: (0.1, 0.1), 2000: (0.995, 0.999)}, model="wrn", train={0: (0.1, 0.1), 2000: (0.995, 0.999)})
    q.config = dataclasses.replace(q.config, labels="random", limit=(5000, 5000))
    (cl,) = [c for c in claims.judge_all(Evidence.of({("wrn-28-2", "mnist", "random"): [q]}))
             if c.text == claims.random_train_accuracy(Evidence.of({})).text]
    assert cl.verdict == claims.NOT_RUN and cl.indicative
    assert all(c.data[("wrn", "mnist")] == "MNIST, first 5,000 training and 5,000 test images, 2,000 steps"
               for c in cl.indicative)
