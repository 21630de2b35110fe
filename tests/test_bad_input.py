"""The third probe's smaller cases (issue 34): each bad input ends in one line (exit 2) naming what to
do, and nothing is written or overwritten."""
import json

import numpy as np
import pytest
import torch

from dnnknn import ConfigError, RunConfig
from dnnknn.runs import COMMITTED

from .test_reliability import CLI, finished, main_line  # noqa: F401 - finished: the fixture


@pytest.mark.parametrize("args,needles", [
    (["--weight-decay", "1e30"], ["weight_decay must be at most 10"]),
    (["--device", "meta"], ["unknown device 'meta'"]),
    (["--device", "mps"], ["unknown device 'mps'"]),
    (["--lr", "1e30"], ["diverged", "lower the learning rate"]),
])
def test_bad_training_values_one_line_nothing_published(tmp_path, capsys, args, needles):
    main_line(capsys, [*CLI, *args, "--runs-dir", str(tmp_path / "s")], *needles)
    assert not list((tmp_path / "s").glob("*/manifest.json")) if (tmp_path / "s").exists() else True


def test_a_run_store_that_is_empty_or_the_committed_results_is_refused(tmp_path, capsys):
    main_line(capsys, [*CLI, "--runs-dir", ""], "run store's folder is empty")
    before = sorted(p.name for p in COMMITTED.iterdir())
    main_line(capsys, [*CLI, "--runs-dir", str(COMMITTED)], "holds the committed runs", "export")
    assert sorted(p.name for p in COMMITTED.iterdir()) == before


def test_bad_book_selection_and_data_folder_one_line(tmp_path, capsys, monkeypatch):
    import dnnknn.book
    monkeypatch.setattr(dnnknn.book, "run_pages", lambda *a, **k: pytest.fail("a page ran"))
    main_line(capsys, ["book", "--only", "", "--no-build"], "--only takes page names")
    main_line(capsys, ["book", "--only", "01", "--no-build", "-p", "data_dir", str(tmp_path / "missing")],
              "is not a folder")


def test_grid_without_slurm_one_line(tmp_path, capsys, monkeypatch):
    import shutil
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "sbatch" else real(name, *a, **k))
    main_line(capsys, ["grid", "--profile", "quick", "--models", "mlp640", "--steps", "4", "--n-runs", "1",
                       "--sections", "main", "--runs-dir", str(tmp_path / "s")], "no Slurm", "--executor local")


def test_a_budget_that_is_not_a_number_is_refused(capsys):
    from dnnknn import cli
    with pytest.raises(SystemExit) as e:
        cli.main(["gpu-run", "--job", "mnist", "--budget", "nan"])
    assert e.value.code == 2 and "positive number of seconds" in capsys.readouterr().err


def test_runconfig_values():
    with pytest.raises(ConfigError, match="lr_factor"):
        RunConfig(lr_factor=True)
    assert RunConfig(steps=np.int64(100), ks=(np.int64(30),)).key("v") == RunConfig(steps=100).key("v")
    with pytest.raises(ConfigError, match="need at least one k"):
        RunConfig(probe_layers=("embedding",), probe_ks=())


def test_hidden_folders_are_not_classes(tmp_path):
    from PIL import Image
    from dnnknn.data import load_dataset
    root = tmp_path / "img"
    for split in ("train", "test"):
        for c in ("a", "b", ".ipynb_checkpoints"):
            (root / split / c).mkdir(parents=True)
            if not c.startswith("."):
                for i in range(2):
                    Image.new("RGB", (8, 8), (i, 2, 3)).save(root / split / c / f"{i}.png")
    assert load_dataset(f"imagefolder:{root}").num_classes == 2


def test_features_that_overflow_float32_distances_are_refused():
    from dnnknn.knn import KNNClassifier
    x = np.full((20, 4), 3e37, dtype=np.float32)
    with pytest.raises(ConfigError, match="would overflow"):
        KNNClassifier(k=3).fit(x, np.arange(20) % 2).predict(x)


def test_nan_features_are_named_in_the_users_words():
    from dnnknn import probe
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x = torch.randn(30, 4)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ConfigError) as e:
        probe(model, (x, torch.arange(30) % 2), (bad, torch.arange(30) % 2), layer="1", k=3, device="cpu")
    assert "refs" not in str(e.value) and "NaN" in str(e.value)
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        probe(model, (x, torch.arange(30) % 2), (x, torch.arange(30) % 2), layer="1", k=3, device="gpu0")


def test_a_list_passed_as_text_says_how_to_pass_it():
    from dnnknn.profiles import Params
    with pytest.raises(ConfigError, match="-y 'models: "):
        Params.from_notebook(models='["mlp640"]')


def test_a_garbled_record_or_a_temporary_folder_does_not_stop_the_time_table(tmp_path):
    from dnnknn.book import _train_eval_seconds
    for name, text in (("a" * 16, "{garbled"), (".tmp-" + "b" * 16 + "-x", json.dumps({"page": "p", "wall_time_s": 5})),
                       ("c" * 16, json.dumps({"page": "p", "wall_time_s": 3.0, "eval_time_s": 1.0}))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "meta.json").write_text(text)
    assert _train_eval_seconds("p", 0.0, str(tmp_path)) == (2.0, 1.0, 1)


def test_a_failed_download_leaves_no_empty_folders(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    from dnnknn.data import load_dataset
    from dnnknn.errors import DataNotFoundError

    def fail(self):  # what torchvision does offline: make the raw folder, then fail
        (tmp_path / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
        raise RuntimeError("no network")
    monkeypatch.setattr(tvd.MNIST, "download", fail)
    with pytest.raises(DataNotFoundError, match="could not be downloaded"):
        load_dataset("mnist", tmp_path)
    assert not (tmp_path / "MNIST").exists()


# -- locks -------------------------------------------------------------------------------------------
def test_a_lock_is_removed_only_by_its_holder(tmp_path, capsys):
    from dnnknn.lock import RunLock
    path = tmp_path / "x.lock"
    with RunLock(path, "x"):
        path.unlink()  # taken over as stale by another process, which now holds it
        path.write_text(json.dumps({"pid": 1, "host": "other", "nonce": "theirs"}))
    assert json.loads(path.read_text())["nonce"] == "theirs"  # left in place
    assert "taken over while this process held it" in capsys.readouterr().err


def test_a_dead_pid_elsewhere_says_nothing(tmp_path):
    """Same host name, another boot or PID namespace: its PID is not ours to test, so the lock is waited on."""
    import subprocess
    import sys
    from dnnknn.lock import RunLock, identity
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    path = tmp_path / "x.lock"
    for other in ({"pidns": "pid:[1]"}, {"boot": "another-boot"}):
        path.write_text(json.dumps({"pid": dead, **identity(), **other}))
        with pytest.raises(ConfigError, match="being computed by PID"):
            with RunLock(path, "x", wait=False):
                pass
    path.write_text(json.dumps({"pid": dead, **identity()}))
    with RunLock(path, "x", wait=False):  # here, and dead: stale at once
        pass


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_lock_that_is_not_a_file_is_reported_and_taken_over(tmp_path, capsys, kind):
    import os
    import time
    from dnnknn.lock import RunLock
    path = tmp_path / "x.lock"
    path.mkdir() if kind == "folder" else os.mkfifo(path)
    with pytest.raises(ConfigError, match="not a lock file"):  # at once: a FIFO is never opened
        with RunLock(path, "x", wait=False):
            pass
    t = time.time()
    with RunLock(path, "x", poll=0.05, stale_after=0.3):
        assert path.is_file()
    assert time.time() - t < 60
    assert ("was a folder" if kind == "folder" else "was not a regular file") in capsys.readouterr().err


def test_a_lock_from_the_future_is_stale_after_the_timeout(tmp_path):
    import os
    import time
    from dnnknn.lock import RunLock
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"pid": 1, "host": "another-node"}))
    future = time.time() + 365 * 86400
    os.utime(path, (future, future))
    t = time.time()
    with RunLock(path, "x", poll=0.05, stale_after=0.3):
        pass
    assert time.time() - t < 60


# -- imports -----------------------------------------------------------------------------------------
def _run_archive(tmp_path, finished, change=None):
    import shutil
    import tarfile
    src = tmp_path / "src" / finished.key
    shutil.copytree(finished.path, src)
    if change:
        change(src)
    archive = tmp_path / "records.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=finished.key)
    return archive


def _remanifest(folder):
    from dnnknn.provenance import write_manifest
    write_manifest(folder)


def test_an_archive_that_unpacks_too_far_is_refused_before_writing(tmp_path, capsys):
    import io
    import tarfile
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("0123456789abcdef/predictions.npz")
        info.size = 3 * 2**20
        tar.addfile(info, io.BytesIO(bytes(info.size)))  # zeros: a small archive, a large file
    main_line(capsys, ["import", str(archive), "--to", str(tmp_path / "r"), "--max-mib", "2"],
              "unpacks to more than 2 MiB", "--max-mib")
    assert not (tmp_path / "r").exists()


def test_a_run_whose_arrays_are_too_large_or_pickled_is_refused(tmp_path, capsys, finished):
    def huge(folder):
        np.savez_compressed(folder / "predictions.npz", a=np.zeros(2**20, np.int64))  # 8 MiB of zeros, tiny on disk
        _remanifest(folder)
    main_line(capsys, ["import", str(_run_archive(tmp_path, finished, huge)), "--to", str(tmp_path / "r"),
                       "--max-array-mib", "4"], "over the 4 MiB")
    assert not (tmp_path / "r").exists()

    def pickled(folder):
        np.savez(folder / "predictions.npz", a=np.array([{"x": 1}], dtype=object))
        _remanifest(folder)
    from dnnknn.runs import Run, DamagedRun
    src = tmp_path / "p" / finished.key
    import shutil
    shutil.copytree(finished.path, src)
    pickled(src)
    with pytest.raises(DamagedRun, match="never unpickled"):
        Run(src).predictions()


def test_data_on_the_meta_device_is_refused():
    from dnnknn import probe
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x = torch.empty(30, 4, device="meta")
    with pytest.raises(ConfigError, match="meta device"):
        probe(model, (x, torch.arange(30) % 2), (x, torch.arange(30) % 2), layer="1", k=3, device="cpu")


# -- publishing --------------------------------------------------------------------------------------
def test_a_stale_temporary_is_swept_and_a_failed_replace_keeps_the_old_copy(tmp_path, monkeypatch):
    import os
    import time
    from dnnknn import atomic
    old = tmp_path / ".tmp-0123456789abcdef-killed"
    old.mkdir()
    os.utime(old, (time.time() - 2 * atomic.STALE_S, time.time() - 2 * atomic.STALE_S))
    fresh = tmp_path / ".tmp-fedcba9876543210-writing"
    fresh.mkdir()  # another process's, being written: left alone
    atomic.publish_dir(tmp_path, "k", lambda d: (d / "f").write_text("1"))
    assert not old.exists() and fresh.exists() and (tmp_path / "k" / "f").read_text() == "1"
    real = os.rename

    def fail_second(src, dst):  # killed between moving the old copy aside and renaming the new one in
        if str(src).startswith(str(tmp_path / ".tmp-k-")) and not str(src).startswith(str(tmp_path / ".tmp-k-old")) \
                and dst == tmp_path / "k":
            raise OSError(5, "Input/output error")
        return real(src, dst)
    monkeypatch.setattr(os, "rename", fail_second)
    with pytest.raises(OSError):
        atomic.publish_dir(tmp_path, "k", lambda d: (d / "f").write_text("2"))
    assert (tmp_path / "k" / "f").read_text() == "1"  # the published copy is still there
    assert not list(tmp_path.glob(".tmp-k-*"))


def test_book_folders_are_relative_to_where_the_command_runs(tmp_path, monkeypatch):
    import dnnknn.book
    from dnnknn import cli
    seen = {}
    monkeypatch.setattr(dnnknn.book, "run_pages", lambda todo, extra, jobs, **kw: (seen.update(extra), ([], 0.0))[1])
    monkeypatch.chdir(tmp_path)
    assert cli.main(["book", "--only", "01", "--no-build", "-p", "runs_dir", "rel"]) == 0
    assert seen["runs_dir"] == str(tmp_path / "rel")


def test_a_holder_whose_lock_was_taken_over_leaves_the_checkpoints_alone(tmp_path, capsys):
    from dnnknn import RunStore
    from dnnknn.data import load_dataset
    store, cfg = RunStore(tmp_path / "s"), RunConfig(dataset="mnist5k", steps=3, eval_steps=(0, 3), limit=(300, 100))
    key = store.key(cfg)

    class TakenOver:  # the lock the new holder now holds
        def held(self):
            return False
    rcfg = cfg.resolve()
    run = store._train_locked(rcfg, key, torch.device("cpu"), load_dataset("mnist5k", limit=(300, 100)), False,
                              TakenOver())
    assert run.key == key and (store.root / ".partial" / key).is_dir()  # the new holder's folder is kept
