"""The verdict rule, the paper's printed numbers, and the figures' labels."""
import math

import matplotlib
import pytest

from dnnknn import RunConfig, claims
from dnnknn.paper import STATED, Stated

matplotlib.use("Agg")


def test_printed_precision():
    assert Stated("4.44", "").precision == pytest.approx(0.005)
    assert Stated("≈ 0.997", "").precision == pytest.approx(0.001)
    assert Stated("≈ 0.8", "").precision == pytest.approx(0.1)
    assert Stated("100", "").precision == pytest.approx(0.5) and Stated("100", "").value == 100.0
    assert STATED[("mlp640", "mnist", "|k-NN − DNN| (%)")].value == 4.44


def test_numeric_rule():
    st = Stated("≈ 0.997", "")
    # the example: 0.9957 ± 0.0004 against ≈ 0.997 is within 2 std + a unit of the last digit
    assert claims.numeric(st, [0.9953, 0.9957, 0.9961], "MC", "MC").held
    assert not claims.numeric(Stated("4.44", ""), [1.2, 1.35, 1.5], "k-NN − DNN (%)", "gap").held
    one = claims.numeric(Stated("4.44", ""), [4.44 + 0.004], "k-NN − DNN (%)", "gap")
    assert one.held and "1 seed" in one.evidence
    off = claims.numeric(Stated("4.44", ""), [4.44 + 0.006], "k-NN − DNN (%)", "gap")
    assert not off.held and "|difference| 0.006 > 0.005" in off.evidence  # digits until the two differ
    assert claims.numeric(st, [], "MC", "MC").held is None
    assert claims.numeric(st, [float("nan"), 0.997], "MC", "MC").held  # undefined values left out


def test_combine():
    C = claims.Check
    assert claims.combine([C(True, ""), C(None, "")]) == claims.REPRODUCED
    assert claims.combine([C(True, ""), C(False, "")]) == claims.PARTLY
    assert claims.combine([C(False, ""), C(None, "")]) == claims.NOT
    assert claims.combine([C(None, "")]) == claims.NOT_RUN


def test_training_flops_are_counted_not_guessed():
    mlp = claims.train_flops(RunConfig(dataset="mnist", model="mlp640", steps=10))
    # 784 -> 640 -> 10 at batch 200: forward 2 FLOPs per weight, backward 2 for the weights' gradient
    # and 2 for the input's, which the first layer does not need
    assert mlp == pytest.approx(10 * 200 * (4 * 784 * 640 + 6 * 640 * 10), rel=0.02)
    assert claims.duration(30) == "under a minute" and claims.duration(600) == "10 min" and claims.duration(7200) == "2.0 h"


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


def test_a_gap_that_does_not_close_is_described_from_the_runs():
    import pandas as pd

    class Fake:  # a run's test curve: k-NN and DNN accuracy by step
        def __init__(self, knn, dnn):
            self.t = pd.DataFrame({"step": [0, 10, 20, 30, 40], "knn_acc": knn, "dnn_acc": dnn})

        def table(self, split, k, metric):
            return self.t

    below = Fake([0.5, 0.80, 0.810, 0.815, 0.818], [0.1, 0.79, 0.822, 0.828, 0.830])
    assert claims._late_gap([below]) == "1.2 to 1.3 points below its DNN at every evaluation from step 20 on"
    above = Fake([0.5, 0.80, 0.83, 0.84, 0.85], [0.1, 0.79, 0.82, 0.82, 0.82])
    assert claims._late_gap([above]).startswith("1.0 to 3.0 points above")
    assert claims._late_gap([above, below]) is None  # the sign changes between runs: no one side to name


def test_the_weight_decay_run_is_read_and_judged_against_table_2():
    import pandas as pd

    class Fake:  # a run's final accuracies, (DNN, k-NN) on each split
        def __init__(self, train, test, key="k"):
            self.acc, self.key = {"train": train, "test": test}, key
            self.meta = {"wall_time_s": 7200.0, "device_name": "cpu (x86_64, 2 cores)"}

        def final(self, split, k, metric):
            return pd.Series({"dnn_acc": self.acc[split][0], "knn_acc": self.acc[split][1]})

    authors = [Fake((0.999, 0.999), (0.83, 0.82))]  # gaps 16.9 / 17.9
    table2 = (6.8, 7.9)
    assert "Not run here: `CMD`" in claims._weight_decay_test(None, authors, table2, "CMD")
    agree = claims._weight_decay_test(Fake((0.80, 0.80), (0.732, 0.721), key="wd"), authors, table2, "CMD")
    assert "wd" in agree and "DNN 6.80 and k-NN 7.90" in agree and "Both agree" in agree
    assert "80.00 on the training set and 73.20 on the test set, against 83.00" in agree
    part = claims._weight_decay_test(Fake((0.90, 0.90), (0.80, 0.79)), authors, table2, "CMD")
    assert "DNN 10.00 and k-NN 11.00" in part and "explains part of the difference" in part
    worse = claims._weight_decay_test(Fake((1.0, 1.0), (0.80, 0.79)), authors, table2, "CMD")
    assert "does not explain" in worse


def test_the_weight_decay_command_trains_the_run_the_claims_page_reads():
    from dnnknn import __version__, experiments
    from dnnknn.cli import config_from_args, parser
    from dnnknn.profiles import Params

    P = Params.from_notebook(profile="paper", train_missing=False)
    cfg = experiments.weight_decay_config(P, "cifar10-jpeg", "lenet", seed=1)
    args = parser().parse_args(experiments.weight_decay_command(cfg).split()[3:] + ["--device", "cpu"])
    assert config_from_args(args).key(__version__) == cfg.key(__version__)
    assert cfg.resolve().weight_decay_rule == "paper-text" and cfg.resolve().eval_train
