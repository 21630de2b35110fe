"""Fault injection on the run store and one clear line for every bad input (issue 13's table)."""
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from dnnknn import ConfigError, RunConfig, RunStore
from dnnknn.runs import MANIFEST, RUN_FILES, DamagedRun, Run, export

from .conftest import ROOT, run_cli

TINY = dict(dataset="mnist5k", model="mlp640", steps=6, eval_steps=(0, 6), limit=(300, 100), ks=(1, 5))
CLI = ["--steps", "6", "--eval-every", "3", "--limit", "300", "100", "--k", "1", "5", "--device", "cpu"]


def cli(args, store, env_extra=None, command="train"):
    extra = ["--no-progress"] if command == "train" else []
    return run_cli([command, *extra, *args], {"DNNKNN_RUNS": store, **(env_extra or {})})


def one_line_error(r, *needles):
    """Exit 2, no traceback, one line on stderr naming what is wrong."""
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    run = RunStore(root).get(RunConfig(**TINY), progress=False)
    return run.path


def _copy_store(finished, tmp_path):
    dest = tmp_path / "store" / finished.name
    shutil.copytree(finished, dest)
    return RunStore(tmp_path / "store"), dest


@pytest.mark.parametrize("damage", ["truncate", "empty", "garble", "delete"])
@pytest.mark.parametrize("name", RUN_FILES + (MANIFEST,))
def test_every_damaged_file_is_noticed(finished, tmp_path, capsys, name, damage):
    store, path = _copy_store(finished, tmp_path)
    f = path / name
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        f.write_bytes(b"")
    elif damage == "garble":
        f.write_bytes(data[:-3] + bytes(b ^ 0xFF for b in data[-3:]))
    else:
        f.unlink()
    assert store.find(RunConfig(**TINY)) is None
    err = capsys.readouterr().err
    assert f"run {path.name}" in err and "will be recomputed" in err
    assert (name in err) or (MANIFEST in err)
    with pytest.raises(DamagedRun):
        export(store, path.name, tmp_path / "results")
    assert not (tmp_path / "results" / path.name).exists()
    assert store.runs(report=lambda e: None) == []  # left out of the listing, which does not crash


def test_a_damaged_run_is_recomputed_by_the_same_command(tmp_path):
    store = tmp_path / "s"
    first = cli(CLI, store)
    assert first.returncode == 0, first.stderr
    (path,) = [p for p in store.iterdir() if not p.name.startswith(".")]
    (path / "measures.csv").write_text((path / "measures.csv").read_text()[:40])
    again = cli(CLI, store)
    assert again.returncode == 0, again.stderr
    assert "measures.csv is damaged" in again.stderr and "will be recomputed" in again.stderr
    assert "from the run store" not in again.stdout and "Empty DataFrame" not in again.stdout
    Run(path)  # whole again


def test_export_lists_intact_runs_and_reports_damaged_ones(finished, tmp_path):
    store, path = _copy_store(finished, tmp_path)
    other = RunStore(tmp_path / "store").get(RunConfig(**{**TINY, "seed": 1}), progress=False)
    (path / "meta.json").write_text("{broken")
    r = cli([], tmp_path / "store", command="export")
    assert r.returncode == 0, r.stderr
    assert other.key in r.stdout and f"damaged (not exportable): run {path.name}: meta.json" in r.stdout
    bad = cli([path.name, "--to", str(tmp_path / "res")], tmp_path / "store", command="export")
    one_line_error(bad, "meta.json", "not exported")


def test_a_malformed_manifest_is_a_damaged_run(finished, tmp_path, capsys):
    import json
    store, path = _copy_store(finished, tmp_path)
    for bad in ({"config.json": {"sha256": "x"}}, {"config.json": "abc"}, [1, 2]):
        (path / MANIFEST).write_text(json.dumps(bad))
        assert store.find(RunConfig(**TINY)) is None
        assert "manifest.json is damaged" in capsys.readouterr().err
        with pytest.raises(DamagedRun):
            export(store, path.name, tmp_path / "results")


def test_two_processes_asking_for_one_run(tmp_path):
    """Started together, both end with the same records and only one of them trains."""
    store = tmp_path / "s"
    env = {**os.environ, "DNNKNN_RUNS": str(store)}
    cmd = [sys.executable, "-m", "dnnknn", "train", "--no-progress", *CLI, "--model", "lenet"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[0][0].splitlines()[-1] == outs[1][0].splitlines()[-1]  # the same records folder
    # the other one either waited for the lock or found the finished run
    trained = [o for o, e in outs if "from the run store" not in o and "waiting: " not in e]
    assert len(trained) == 1 and len([p for p in store.iterdir() if not p.name.startswith(".")]) == 1
    assert not list((store / ".partial").glob("*.lock*"))


def _hold_lock(store_root, cfg, pid, host=None, age=0.0):
    import json
    store = RunStore(store_root)
    lock = store.root / ".partial" / f"{store.key(cfg)}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    from dnnknn.lock import identity
    lock.write_text(json.dumps({"pid": pid, **identity(), **({"host": host} if host else {})}))
    if age:
        os.utime(lock, (time.time() - age, time.time() - age))
    return store, lock


def test_a_live_holder_is_waited_for_or_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        cfg = RunConfig(**{**TINY, "eval_steps": (0, 3, 6)})  # what CLI asks for
        _hold_lock(tmp_path / "s", cfg, holder.pid)
        nowait = cli([*CLI, "--no-wait"], tmp_path / "s")
        one_line_error(nowait, "is being computed by PID", str(holder.pid), "--no-wait")
        waiting = subprocess.Popen([sys.executable, "-m", "dnnknn", "train", "--no-progress", *CLI], cwd=ROOT,
                                   env={**os.environ, "DNNKNN_RUNS": str(tmp_path / "s")},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = waiting.stderr.readline()  # blocks until the waiter says it waits (the event, not a delay)
        assert first.startswith("waiting: ") and f"PID {holder.pid}" in first, first
        assert waiting.poll() is None  # still waiting for the live holder
        holder.kill()  # the holder dies without releasing its lock: the waiter takes over
        holder.wait()  # (reaped: a zombie still answers kill(pid, 0))
        out, err = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, err
        assert "taking over the stale lock" in err
    finally:
        holder.kill()


def test_stale_locks_are_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    cfg = RunConfig(**TINY)
    store, lock = _hold_lock(tmp_path / "a", cfg, int(dead.stdout))  # a dead process on this host
    assert store.get(cfg, progress=False).measures.step.max() == 6 and not lock.exists()
    store, lock = _hold_lock(tmp_path / "b", cfg, 1, host="another-node", age=3600)  # not refreshed for an hour
    assert store.get(cfg, progress=False).measures.step.max() == 6 and not lock.exists()


def test_a_held_lock_is_refreshed(tmp_path):
    from dnnknn.runs import RunLock
    path = tmp_path / "x.lock"
    with RunLock(path, "x", beat=0.2):
        os.utime(path, (0, 0))
        time.sleep(0.6)
        assert time.time() - path.stat().st_mtime < 5
    assert not path.exists()


def _images(root, n, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / split / cls / f"{seed}-{i}.png")


def test_imagefolder_runs_are_keyed_by_contents(tmp_path):
    _images(tmp_path / "img", 3)
    cfg = RunConfig(dataset=f"imagefolder:{tmp_path / 'img'}", steps=2, ks=(1,))
    before = cfg.key("v")
    one = tmp_path / "img" / "train" / "a" / "0-0.png"
    data = one.read_bytes()
    one.write_bytes(data)  # rewritten, same bytes (a new mtime): the same run
    os.utime(one, (1, 1))
    assert cfg.key("v") == before
    one.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one byte changed: another run
    assert cfg.key("v") != before
    one.write_bytes(data)
    assert cfg.key("v") == before
    _images(tmp_path / "img", 2, seed=1)  # images added
    assert cfg.key("v") != before


def test_imagefolder_bad_contents_one_line(tmp_path):
    _images(tmp_path / "img", 3)
    (tmp_path / "img" / "train" / "c").mkdir()
    (tmp_path / "img" / "test" / "c").mkdir()
    one_line_error(cli(["--dataset", f"imagefolder:{tmp_path / 'img'}", "--k", "1"], tmp_path / "s1"),
                   "holds no image", "train/c")
    shutil.rmtree(tmp_path / "img" / "train" / "c")
    shutil.rmtree(tmp_path / "img" / "test" / "c")
    (tmp_path / "img" / "train" / "a" / "broken.png").write_bytes(b"not a png")
    one_line_error(cli(["--dataset", f"imagefolder:{tmp_path / 'img'}", "--k", "1"], tmp_path / "s2"),
                   "cannot read image", "broken.png")
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()


@pytest.mark.parametrize("args,needles", [
    (["--dataset", "mnist", "--data-dir", "/nonexistent/dnnknn-data"], ["/nonexistent/dnnknn-data", "does not exist"]),
    (["--model", "wrn", "--width", "0"], ["width must be a positive integer", "0"]),
    (["--model", "wrn", "--depth", "27"], ["6n+4", "27"]),
    (["--lr", "inf"], ["lr (learning rate)", "inf"]),
    (["--lr", "-1"], ["lr (learning rate)", "-1"]),
    (["--pca", "100000"], ["pca_dims", "640", "100000"]),
    (["--pca", "400"], ["PCA to 400", "300"]),  # above the 300 training images
    (["--batch-size", "0"], ["batch_size", "0", "--optimizer gd"]),
    (["--k", "301"], ["k=301", "300"]),
    (["--probe-layers", "bogus"], ["unknown layer 'bogus'", "embedding"]),
])
def test_bad_train_input_one_line_nothing_on_disk(tmp_path, args, needles):
    r = cli([*CLI, *args], tmp_path / "store")
    one_line_error(r, *needles)
    assert not (tmp_path / "store").exists()
    assert not os.path.exists("/nonexistent/dnnknn-data")


@pytest.mark.parametrize("p,needles", [(["steps", "notanumber"], ["'steps'", "notanumber"]),
                                       (["models", '["nope"]'], ["'models'", "nope", "mlp640"])])
def test_bad_book_parameter_one_line(tmp_path, p, needles):
    r = cli(["--only", "01", "-p", *p, "--no-build"], tmp_path / "store", command="book")
    one_line_error(r, *needles)


def test_divergence_first_seen_at_an_evaluation_names_the_learning_rate(tmp_path, monkeypatch):
    """The loss of step 1 is finite; its update makes the weights non-finite (forced here); the
    evaluation at step 1 is the first to see it."""
    import torch

    import dnnknn.train
    from dnnknn import TrainingDiverged

    real = dnnknn.train.make_optimizer

    def poisoned(model, cfg):
        opt = real(model, cfg)
        step = opt.step

        def step_then_nan(*a, **k):
            step(*a, **k)
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        opt.step = step_then_nan
        return opt

    monkeypatch.setattr(dnnknn.train, "make_optimizer", poisoned)
    cfg = RunConfig(**{**TINY, "steps": 1, "eval_steps": (0, 1), "lr": 0.5, "lr_milestones": ()})
    with pytest.raises(TrainingDiverged, match="NaN or infinite by step 1 .*lr 0.5.*--lr"):
        RunStore(tmp_path / "s").get(cfg, progress=False)
    assert not list((tmp_path / "s" / ".partial").glob("*/ckpt.pt"))


def test_runconfig_validates_what_the_cli_validates():
    for bad in (dict(width=0, model="wrn"), dict(depth=12, model="wrn"), dict(lr=float("nan")), dict(lr=0.0),
                dict(batch_size=0), dict(pca_dims=(641,)), dict(momentum=1.5), dict(weight_decay=float("inf"))):
        with pytest.raises(ConfigError):
            RunConfig(**bad)
    RunConfig(optimizer="gd", batch_size=0)  # the resolved form of full-batch GD
    RunConfig(model="wrn", width=2, pca_dims=(128,))
