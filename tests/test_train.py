import os
import subprocess
import sys

import json

import numpy as np
import pandas as pd
import pytest
import torch

import dnnknn.data
from dnnknn import ConfigError, RunConfig, RunStore, TrainingDiverged
from dnnknn.train import lr_at, pred_key

from .conftest import ROOT, run_cli

TINY = dict(dataset="mnist5k", model="mlp640", steps=30, eval_steps=(0, 10, 20, 30), limit=(600, 200),
            ks=(1, 5), metrics=("l1", "l2"), eval_train=True)


def test_paper_schedule_defaults():
    c = RunConfig(dataset="cifar10", model="wrn", steps=50_000).resolve()
    assert c.lr_milestones == (15_000, 30_000, 40_000)  # epochs 60, 120, 160 of 200 at batch 200
    assert (c.batch_size, c.lr, c.momentum, c.weight_decay, c.augment) == (200, 0.1, 0.9, 0.0008, True)
    assert [lr_at(c, s) for s in (0, 14_999, 15_000, 30_000, 40_000)] == pytest.approx([0.1, 0.1, 0.02, 0.004, 0.0008])
    assert RunConfig(dataset="cifar100", model="lenet").resolve().weight_decay == 0.01
    assert RunConfig(dataset="cifar10", model="lenet").resolve().weight_decay == 0.008
    assert RunConfig(dataset="mnist", model="lenet").resolve().weight_decay == 0.0
    gd = RunConfig(optimizer="gd", steps=400).resolve()
    assert (gd.batch_size, gd.lr, gd.lr_milestones, gd.weight_decay, gd.augment, gd.momentum) == (0, 10.0, (200, 300), 0.0, False, 0.0)
    assert RunConfig(steps=1000).resolve().eval_steps[0] == 0


def test_run_records_and_cache(store_dir, monkeypatch):
    store = RunStore()
    run = store.get(RunConfig(**TINY), progress=False)
    m = run.measures
    assert set(m.step) == {0, 10, 20, 30} and set(m.split) == {"train", "test"}
    assert set(zip(m.metric, m.k)) == {("l1", 1), ("l1", 5), ("l2", 1), ("l2", 5)}
    # every row is recomputable from the stored predictions
    p = run.predictions()
    r = m[(m.step == 30) & (m.split == "test") & (m.metric == "l1") & (m.k == 5)].iloc[0]
    knn, dnn, y = p[pred_key(30, "test", "embedding", "l1", 5, 0)], p[pred_key(30, "test")], p["labels/test"]
    assert r.knn_acc == pytest.approx((knn == y).mean()) and r.P_SAME == pytest.approx((knn == dnn).mean())
    # with the training point among its own neighbours, 1-NN on the training set is perfect
    assert run.table("train", k=1).knn_acc.eq(1.0).all()
    assert run.meta["device"] == "cpu" and run.meta["code_version"].startswith("0.")
    assert run.meta["wall_time_s"] > 0 and len(run.losses) == 30
    # the second call trains nothing
    monkeypatch.setattr("dnnknn.train.fit", lambda *a, **k: pytest.fail("trained again"))
    again = RunStore().get(RunConfig(**TINY))
    assert again.path == run.path
    pd.testing.assert_frame_equal(again.measures, m)


def test_mnist_schedule_is_the_authors():
    """MNIST SGD: the rate divided by 5 at steps 150, 300, 400 of 1,000 (the authors' MNIST
    configuration), at the same fractions of other step counts; CIFAR keeps 30/60/80%."""
    assert RunConfig(dataset="mnist", steps=1000).resolve().lr_milestones == (150, 300, 400)
    assert RunConfig(dataset="mnist5k", steps=300).resolve().lr_milestones == (90, 180, 240)  # the quick profile
    assert RunConfig(dataset="cifar10-jpeg", steps=1000).resolve().lr_milestones == (300, 600, 800)
    assert RunConfig(dataset="mnist", optimizer="gd", steps=400).resolve().lr_milestones == (200, 300)
    c = RunConfig(dataset="mnist", steps=1000).resolve()
    assert [lr_at(c, s) for s in (149, 150, 300, 400, 999)] == pytest.approx([0.1, 0.02, 0.004, 0.0008, 0.0008])
    assert c.pad_fill == "black" and RunConfig(optimizer="gd").resolve().pad_fill is None


def test_new_fields_at_their_legacy_values_keep_the_old_keys():
    """A run described as dnnknn 0.2 made it (grey border, every space at every step, no
    neighbours) has the key it had then; the new defaults make another run."""
    old = RunConfig(dataset="mnist", lr_milestones=(300, 600, 800), pad_fill="zero")
    assert "pad_fill" not in old.identity() and "full_eval_steps" not in old.identity()
    assert "neighbour_images" not in old.identity() and "train_full" not in old.identity()
    new = RunConfig(dataset="mnist", lr_milestones=(300, 600, 800))
    assert new.key("v") != old.key("v") and new.identity()["pad_fill"] == "black"
    # equivalent descriptions share one key
    assert RunConfig(metrics=("l1", "l1")).key("v") == RunConfig(metrics=("l1",)).key("v")
    assert RunConfig(steps=20, eval_steps=(0, 10, 20), full_eval_steps=(0, 10, 20)).key("v") == \
        RunConfig(steps=20, eval_steps=(0, 10, 20)).key("v")
    assert RunConfig(metrics=("l2", "l1")).key("v") != RunConfig(metrics=("l1", "l2")).key("v")  # first: the curves'


def test_full_spaces_only_where_asked_and_neighbours_recorded(tmp_path):
    """At steps outside full_eval_steps only the curves' k and metric are searched; the
    recorded neighbours are the embedding's nearest training images."""
    from dnnknn.train import neighbour_key, neighbour_queries

    cfg = RunConfig(**{**TINY, "ks": (1, 5, 30), "pca_dims": (8,), "full_eval_steps": (30,),
                       "train_eval_steps": (30,), "train_full": False, "neighbour_images": 6,
                       "probe_layers": ("embedding_raw",), "probe_ks": (1, 5)})
    run = RunStore(tmp_path).get(cfg, progress=False)
    m = run.measures
    mid = m[m.step < 30]
    assert set(zip(mid.split, mid.layer, mid.metric, mid.k, mid.pca)) == {("test", "embedding", "l1", 30, 0)}
    train = m[m.split == "train"]
    assert set(zip(train.layer, train.metric, train.k)) == {("embedding", "l1", 30)}  # no layers: Figure 2 is the test set's
    assert set(m[m.layer == "embedding_raw"].split) == {"test"}
    last = m[(m.step == 30) & (m.split == "test") & (m.layer == "embedding")]
    assert set(zip(last.metric, last.k, last.pca)) == {(mt, k, p) for mt in ("l1", "l2") for k in (1, 5, 30)
                                                        for p in (0, 8)}
    p = run.predictions()
    q = p["neighbours/queries"]
    assert np.array_equal(q, neighbour_queries(200, 6)) and len(set(q)) == 6
    for step in (0, 10, 20, 30):
        assert p[neighbour_key(step, "index")].shape == (6, 5)
    d = p[neighbour_key(30, "distance")]
    assert (np.diff(d, axis=1) >= 0).all() and not np.array_equal(p[neighbour_key(0, "index")],
                                                                  p[neighbour_key(30, "index")])
    # the 1-NN of each recorded image is the one the stored 1-NN prediction voted for
    y_train = dnnknn.data.load_dataset("mnist5k", limit=(600, 200)).y_train.numpy()
    pred1 = p[pred_key(30, "test", "embedding", "l1", 1, 0)][q]
    assert np.array_equal(y_train[p[neighbour_key(30, "index")][:, 0]], pred1)


def test_same_seed_same_numbers_other_seed_differs(tmp_path):
    a = RunStore(tmp_path / "a").get(RunConfig(**TINY), progress=False)
    b = RunStore(tmp_path / "b").get(RunConfig(**TINY), progress=False)
    c = RunStore(tmp_path / "c").get(RunConfig(**{**TINY, "seed": 1}), progress=False)
    pd.testing.assert_frame_equal(a.measures, b.measures)
    assert not a.losses.loss.equals(c.losses.loss)


# the command line with a training-step callback that dies like a killed job (SIGKILL) before step N
KILLED_AT = """
import functools, os, signal, sys
import dnnknn.train
die = int(sys.argv.pop(1))
dnnknn.train.fit = functools.partial(dnnknn.train.fit, on_step=lambda s: s == die and os.kill(os.getpid(), signal.SIGKILL))
from dnnknn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli(args, store, kill_at=None, env=None):
    """The train command: in this process, or in a subprocess killed before step `kill_at`."""
    if kill_at is None:
        return run_cli(["train", "--no-progress", *args], {"DNNKNN_RUNS": store, **(env or {})})
    return subprocess.run([sys.executable, "-c", KILLED_AT, str(kill_at), "train", "--no-progress", *args],
                          cwd=ROOT, env={**os.environ, "DNNKNN_RUNS": str(store)}, capture_output=True,
                          text=True, timeout=600)


CLI_TINY = ["--steps", "40", "--eval-every", "10", "--limit", "600", "200", "--k", "1", "5",
            "--metric", "l1", "l2", "--eval-train", "--model", "lenet", "--device", "cpu"]


def test_kill_and_resume_gives_identical_numbers(tmp_path, capsys):
    killed = _cli(CLI_TINY, tmp_path / "k", kill_at=25)
    assert killed.returncode == -9, killed.stderr  # SIGKILL, mid-way between checkpoints
    assert list((tmp_path / "k").glob("*/measures.csv")) == []  # nothing finished in the store
    partial = list((tmp_path / "k" / ".partial").glob("*/ckpt.pt"))
    assert len(partial) == 1
    assert torch.load(partial[0], weights_only=True)["step"] == 20  # tensors and plain data only
    from dnnknn.runs import RunStore, export, export_unfinished
    key = partial[0].parent.name
    moved = export_unfinished(RunStore(tmp_path / "k"), key, tmp_path / "res")  # to another machine's store
    assert moved == tmp_path / "res" / "unfinished" / key and (moved / "ckpt.pt").read_bytes() == partial[0].read_bytes()
    assert '"step": 20' in (moved / "unfinished.json").read_text()
    resumed = _cli(CLI_TINY, tmp_path / "k")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming lenet on mnist5k, SGD 40 steps, seed 0 from step 20" in resumed.stdout  # also with --no-progress
    whole = _cli(CLI_TINY, tmp_path / "w")
    assert whole.returncode == 0, whole.stderr
    (ka,), (wa,) = list((tmp_path / "k").glob("*/measures.csv")), list((tmp_path / "w").glob("*/measures.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(ka), pd.read_csv(wa))
    pd.testing.assert_frame_equal(pd.read_csv(ka.with_name("losses.csv")), pd.read_csv(wa.with_name("losses.csv")))
    with np.load(ka.with_name("predictions.npz")) as x, np.load(wa.with_name("predictions.npz")) as y:
        assert x.files == y.files and all(np.array_equal(x[f], y[f]) for f in x.files)
    assert not any((tmp_path / "k" / ".partial").iterdir())  # checkpoint cleaned up
    # the exported checkpoint, taken up by a store that reads it: the same numbers, then removed by export
    from dnnknn.config import RunConfig
    cfg = RunConfig.from_record(json.loads(ka.with_name("config.json").read_text()))
    other = RunStore(tmp_path / "u", extra=[tmp_path / "res"])
    capsys.readouterr()
    run = other.train(cfg, progress=False)
    assert run.key == key and "from step 20" in capsys.readouterr().out  # resumed, not trained afresh
    pd.testing.assert_frame_equal(run.measures.reset_index(drop=True), pd.read_csv(ka))
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["wall_time_s"] > 0 and meta["resumed_from"]["step"] == 20  # where its first steps ran, recorded
    export(other, key, tmp_path / "res")
    assert (tmp_path / "res" / key).is_dir() and not (tmp_path / "res" / "unfinished" / key).exists()


def test_cli_prints_the_table(tmp_path):
    r = _cli(["--steps", "20", "--limit", "500", "200", "--eval-train"], tmp_path)
    assert r.returncode == 0, r.stderr
    for word in ("dnn_acc", "knn_acc", "MC", "ME", "P_SAME", "test", "train", "records:"):
        assert word in r.stdout
    r2 = _cli(["--steps", "20", "--limit", "500", "200", "--eval-train"], tmp_path)
    assert "from the run store" in r2.stdout


@pytest.mark.parametrize("args,message", [
    (["--dataset", "svhn"], "unknown dataset 'svhn'"),
    (["--steps", "0"], "steps must be a positive integer"),
    (["--steps", "-5"], "steps must be a positive integer"),
    (["--k", "900", "--limit", "500", "100"], "k=900 is larger than the training set"),
    (["--dataset", "cifar10", "--data-dir", "{tmp}"], "could not be downloaded"),
    (["--dataset", "cifar10", "--data-dir", "{tmp}/nope"], "nope does not exist"),
    (["--probe-layers", "unit_9_9"], "unknown layer"),
    (["--model", "lenet", "--k", "5", "--limit", "60", "20", "--probe-layers", "conv1"], "k=100 is larger than the training set"),
    (["--model", "mlp640", "--depth", "16"], "apply to the 'wrn' model only"),
])
def test_bad_input_fails_cleanly(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = _cli(["--steps", "5", *args] if "--steps" not in args else args, tmp_path / "runs",
             env={"no_proxy": "*", "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"})
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and r.stderr.startswith("error:")
    assert "Traceback" not in r.stderr
    store = tmp_path / "runs"
    assert not store.exists() or not [p for p in store.iterdir() if p.name != ".partial"]
    assert not (store / ".partial").exists() or not any((store / ".partial").iterdir())


def test_unknown_model_and_metric_in_the_api():
    with pytest.raises(ConfigError, match="unknown model"):
        RunConfig(model="vgg")
    with pytest.raises(ConfigError, match="metrics"):
        RunConfig(metrics=("cosine",))
    with pytest.raises(ConfigError, match="steps"):
        RunConfig(steps="100")


def test_nan_loss_stops_with_a_clear_error_and_writes_nothing(store_dir, monkeypatch):
    real = dnnknn.data.load_dataset

    def poisoned(*a, **k):
        d = real(*a, **k)
        d.x_train[:] = float("nan")
        return d

    monkeypatch.setattr(dnnknn.data, "load_dataset", poisoned)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 1.*lower the learning rate"):
        RunStore().get(RunConfig(**{**TINY, "eval_steps": (30,)}), progress=False)
    assert not [p for p in store_dir.iterdir() if p.name != ".partial"]
    assert not any((store_dir / ".partial").iterdir())


def test_read_only_extra_store_is_searched(tmp_path):
    run = RunStore(tmp_path / "made").get(RunConfig(**{**TINY, "eval_train": False}), progress=False)
    other = RunStore(tmp_path / "empty", extra=[tmp_path / "made"])
    found = other.get(RunConfig(**{**TINY, "eval_train": False}), train=False)
    assert found.path == run.path
    with pytest.raises(ConfigError, match="not in"):
        other.get(RunConfig(**{**TINY, "seed": 9}), train=False)


def test_bf16_and_fp32_training_agree_within_noise(tmp_path):
    base = dict(dataset="mnist5k", model="lenet", steps=60, eval_steps=(60,), limit=(1000, 500), ks=(30,))
    acc = {}
    for precision in ("fp32", "bf16"):
        run = RunStore(tmp_path).get(RunConfig(**base, precision=precision), progress=False)
        acc[precision] = run.final()
    assert acc["fp32"].dnn_acc > 0.6  # it learned something
    assert abs(acc["fp32"].dnn_acc - acc["bf16"].dnn_acc) < 0.05
    assert abs(acc["fp32"].knn_acc - acc["bf16"].knn_acc) < 0.05


def test_subnormal_weights_and_momenta_are_flushed_and_nothing_else():
    from dnnknn.train import flush_subnormal

    p = torch.nn.Parameter(torch.tensor([1e-40, -1e-39, 1e-37, -0.5, 0.0]))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.tensor([1e-41, 0.0, 1.0, 1.0, 1.0])
    opt.step()  # the momentum buffer holds the gradient: subnormal in its first entry
    before = p.detach().clone()
    flush_subnormal(opt)
    tiny = torch.finfo(torch.float32).tiny
    assert p[0] == 0 and p[1] == 0 and torch.equal(p[2:], before[2:])  # 1e-37 - 0.1 is normal: kept
    buf = opt.state[p]["momentum_buffer"]
    assert buf[0] == 0 and torch.equal(buf[2:], torch.ones(3))
    assert not ((p.abs() > 0) & (p.abs() < tiny)).any()


def test_fit_flushes_subnormal_weights_every_flush_every_steps_on_a_cpu(tmp_path, monkeypatch):
    import dnnknn.train as train

    calls = []
    monkeypatch.setattr(train, "FLUSH_EVERY", 3)
    monkeypatch.setattr(train, "flush_subnormal", lambda opt: calls.append(opt))
    RunStore(tmp_path).get(RunConfig(dataset="mnist5k", steps=7, eval_steps=(0, 7), limit=(200, 100),
                                     device="cpu"), progress=False)
    assert len(calls) == 2  # after steps 3 and 6


def test_an_exported_checkpoint_of_another_run_is_not_taken_up(tmp_path, capsys):
    from dnnknn.config import RunConfig
    from dnnknn.runs import RunStore
    cfg = RunConfig(**{**TINY, "steps": 4, "eval_steps": (0, 4)})
    store = RunStore(tmp_path / "s", extra=[tmp_path / "res"])
    key = store.key(cfg)
    moved = tmp_path / "res" / "unfinished" / key
    moved.mkdir(parents=True)
    (moved / "ckpt.pt").write_bytes(b"not a checkpoint")
    (moved / "unfinished.json").write_text(json.dumps({"key": "0" * 16, "step": 2}))
    run = store.train(cfg, progress=False)
    err = capsys.readouterr().err
    assert "not resuming from" in err and "is of run '0000000000000000'" in err
    assert "resumed_from" not in run.meta  # trained from step 0


def test_export_unfinished_lists_copies_and_refuses_what_it_cannot_read(tmp_path, capsys):
    import os

    from dnnknn import cli
    from dnnknn.runs import DamagedRun, RunStore, export_unfinished
    from dnnknn.train import Records, save_checkpoint
    key, bad = "a" * 16, "b" * 16
    (tmp_path / "s" / ".partial" / key).mkdir(parents=True)
    (tmp_path / "s" / ".partial" / bad).mkdir(parents=True)
    net = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "s" / ".partial" / key / "ckpt.pt", net, torch.optim.SGD(net.parameters(), lr=0.1),
                    Records(), 7, 1.5)
    (tmp_path / "s" / ".partial" / bad / "ckpt.pt").write_bytes(b"garbled")
    assert cli.main(["export", "--unfinished", "--runs-dir", str(tmp_path / "s")]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed == [f"{key}  |  unfinished, at step 7"]  # the damaged one is not offered
    with pytest.raises(DamagedRun):
        export_unfinished(RunStore(tmp_path / "s"), bad, tmp_path / "res")
    assert not (tmp_path / "res" / "unfinished" / bad).exists()
    os.symlink(tmp_path / "s" / ".partial" / key / "ckpt.pt", tmp_path / "s" / ".partial" / bad / "link.pt")
    (tmp_path / "s" / ".partial" / bad / "ckpt.pt").unlink()
    (tmp_path / "s" / ".partial" / bad / "link.pt").rename(tmp_path / "s" / ".partial" / bad / "ckpt.pt")
    assert cli.main(["export", bad, "--unfinished", "--runs-dir", str(tmp_path / "s"), "--to", str(tmp_path / "res")]) == 2
    assert "no checkpoint of an unfinished run" in capsys.readouterr().err  # a symlink is not followed
