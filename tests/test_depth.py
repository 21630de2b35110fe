"""The depth-and-width chapter's data, from small constructed runs, and its lineup's configs."""
import pytest

from dnnknn import depth, experiments, profiles

from .test_claims import FakeRun


def _net(name, model, width, runs):
    P = profiles.Params.from_notebook(profile="paper", wrn_width=width or 10)
    return depth.Network(name, model, width, experiments.main_config(P, "mnist", model), runs)


def test_measures_and_leaders_from_runs():
    lenet = [FakeRun({0: (0.1, 0.1), 100: (0.97, 0.98), 1000: (0.99, 0.985)}, model="lenet", seed=s) for s in (0, 1)]
    wrn = [FakeRun({0: (0.1, 0.1), 100: (0.6, 0.9), 1000: (0.995, 0.995)}, model="wrn", seed=0)]
    nets = [_net("LeNet", "lenet", None, lenet), _net("Wide-ResNet-28-2", "wrn", 2, wrn), _net("Wide-ResNet-28-10", "wrn", 10, [])]
    m = depth.measures(nets).set_index(["network", "quantity"])
    assert m.loc[("LeNet", "k-NN − DNN (points)"), "mean"] == pytest.approx(-0.5) and m.loc[("LeNet", "MC"), "n"] == 2
    assert m.loc[("Wide-ResNet-28-2", "P_SAME"), "mean"] == pytest.approx(1.0)
    assert "Wide-ResNet-28-10" not in m.index.get_level_values(0)  # not run: no row of numbers
    assert m.loc[("Wide-ResNet-28-2", "MC"), "parameters"] < m.loc[("LeNet", "MC"), "parameters"]  # 1.46 M < 2.07 M
    t = depth.table(nets)
    assert t.loc["Wide-ResNet-28-10", "seeds"] == "not run here" and t.loc["LeNet", "seeds"] == 2
    c = depth.cost_table(nets)
    assert c.loc["Wide-ResNet-28-10", "parameters (M)"] == "36.22" and c.loc["LeNet", "hours a run (mean)"] == "—"
    lead = depth.leaders(depth.p_same_curves(nets))
    assert (lead["early"]["step"], lead["early"]["leader"]) == (100, "LeNet")  # P_SAME 0.99 against 0.70
    assert (lead["last"]["step"], lead["last"]["leader"]) == (1000, "Wide-ResNet-28-2")


def test_the_lineup_is_the_papers_settings_at_a_cpus_widths():
    P = profiles.Params.from_notebook(profile="paper", n_runs=3, runs_dir="/nonexistent-store")
    nets = depth.networks(P)
    assert [n.name.split(" (")[0] for n in nets] == ["MLP-640", "LeNet", "Wide-ResNet-28-2", "Wide-ResNet-28-4",
                                                     "Wide-ResNet-28-10"]
    wrn2, wrn10 = nets[2].config.resolve(), nets[4].config.resolve()
    assert (wrn2.depth, wrn2.width, wrn10.width) == (28, 2, 10)
    assert {f: getattr(wrn2, f) for f in ("steps", "lr_milestones", "weight_decay", "probe_layers", "train_eval_steps")} \
        == {f: getattr(wrn10, f) for f in ("steps", "lr_milestones", "weight_decay", "probe_layers", "train_eval_steps")}
    assert wrn2.train_eval_steps == (500, 1000) and wrn2.precision == "fp32"
    assert [c.key("v") for c in experiments.depth_configs(P)[:1]] == [nets[2].config.key("v")]
