"""Second round of bad input and faults: each case ends in one line naming what is wrong (exit 2),
or is recovered from, and nothing blocks a run for good. In-process through `cli.main`."""
import json
import os
import tarfile
import time

import numpy as np
import pytest
import torch

from dnnknn import ConfigError, RunConfig, RunStore, cli, experiments
from dnnknn.book import PAGES, select
from dnnknn.profiles import Params
from dnnknn.runs import DamagedRun, RunLock, export

TINY = dict(dataset="mnist5k", model="mlp640", steps=6, eval_steps=(0, 6), limit=(300, 100), ks=(1, 5))
CLI = ["train", "--no-progress", "--steps", "6", "--eval-every", "3", "--limit", "300", "100", "--k", "1", "5",
       "--device", "cpu"]


def main_line(capsys, argv, *needles, code=2):
    """Run the CLI in this process: exit `code`, and for errors exactly one line on stderr."""
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == code, (rc, out[-500:], err[-1500:])
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
        for n in needles:
            assert n in lines[0], (n, lines[0])
        return lines[0]
    return out + err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    return RunStore(root).get(RunConfig(**TINY), progress=False)


# -- severe --------------------------------------------------------------------------------
def test_only_01_is_the_quick_page_and_paper_pages_are_named():
    pages = [p[1] for p in select(PAGES, ["01"])]
    assert pages == ["01_knn_during_training.ipynb"]
    assert [p[1] for p in select(PAGES, ["paper/01"])] == ["paper/01_knn_during_training.ipynb"]
    assert [p[1] for p in select(PAGES, ["01"], profile="paper")] == ["paper/01_knn_during_training.ipynb"]
    assert {p[1] for p in select(PAGES, ["paper/"])} == {p[1] for p in PAGES if p[1].startswith("paper/")}


@pytest.mark.parametrize("damage", ["garble", "truncate", "empty"])
def test_a_damaged_checkpoint_is_named_and_the_run_restarts(tmp_path, capsys, damage, finished):
    store = RunStore(tmp_path / "s")
    cfg = RunConfig(**TINY)
    ckpt = store.root / ".partial" / store.key(cfg) / "ckpt.pt"
    ckpt.parent.mkdir(parents=True)
    good = bytes(range(256)) * 50
    ckpt.write_bytes({"garble": good, "truncate": good[:100], "empty": b""}[damage])
    run = store.get(cfg, progress=False)
    err = capsys.readouterr().err
    assert f"the checkpoint {ckpt} cannot be read" in err and "starting" in err and "from step 0" in err
    # the same numbers as a run that never had a checkpoint
    assert run.measures.equals(finished.measures)
    assert np.array_equal(run.losses.loss.values, finished.losses.loss.values)


def test_an_unreadable_lock_is_stale_after_the_silent_timeout(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text("{not json")
    os.utime(lock, (time.time() - 7200, time.time() - 7200))
    t = time.time()
    with RunLock(lock, "x", poll=0.05):  # taken over, not waited on forever
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert time.time() - t < 60
    lock.write_text("{not json")  # fresh: being written, so waited on
    with pytest.raises(ConfigError, match="being computed"):
        with RunLock(lock, "x", wait=False):
            pass


# -- one line instead of a traceback ---------------------------------------------------------
def _archive(tmp_path, members):
    path = tmp_path / "records.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            tar.addfile(*m)
    return path


def test_bad_archives_one_line(tmp_path, capsys, finished):
    whole = tmp_path / "whole.tar.gz"
    with tarfile.open(whole, "w:gz") as tar:
        tar.add(finished.path, arcname=finished.key)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    main_line(capsys, ["import", str(cut), "--to", str(tmp_path / "r")], "not a whole run archive")
    noise = tmp_path / "noise.tar.gz"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    main_line(capsys, ["import", str(noise), "--to", str(tmp_path / "r")], "not a whole run archive")
    evil = tarfile.TarInfo("../../evil")
    evil.size = 1
    import io
    main_line(capsys, ["import", str(_archive(tmp_path, [(evil, io.BytesIO(b"x"))])), "--to", str(tmp_path / "r")],
              "not a whole run archive")
    link = tarfile.TarInfo("k/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    main_line(capsys, ["import", str(_archive(tmp_path, [(link,)])), "--to", str(tmp_path / "r")],
              "not a whole run archive")
    main_line(capsys, ["import", str(_archive(tmp_path, [])), "--to", str(tmp_path / "r")], "holds no run")
    assert not (tmp_path / "r").exists() and not (tmp_path.parent / "evil").exists()


def test_bad_data_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mnist.npz").write_bytes(b"PK\x03\x04 garbage")
    main_line(capsys, [*CLI, "--dataset", "mnist", "--data-dir", str(tmp_path / "d"), "--runs-dir", str(tmp_path / "s")],
              "data pack", "mnist.npz", "cannot be read")
    raw = tmp_path / "t" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / f).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)  # truncated
    main_line(capsys, [*CLI, "--dataset", "mnist", "--data-dir", str(tmp_path / "t"), "--runs-dir", str(tmp_path / "s")],
              "cannot be read", "truncated")
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("DNNKNN_DATA", str(tmp_path / "afile"))
    main_line(capsys, [*CLI, "--dataset", "mnist", "--runs-dir", str(tmp_path / "s")], "is a file, not a folder")
    assert not (tmp_path / "s").exists()


def test_bad_store_one_line_before_training(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    main_line(capsys, [*CLI, "--runs-dir", str(tmp_path / "afile" / "runs")], "cannot be written")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root ignores permissions: a read-only store cannot be made here
        ro.chmod(0o755)
    else:
        main_line(capsys, [*CLI, "--runs-dir", str(ro)], "cannot be written")
    store = RunStore(tmp_path / "s")
    cfg = RunConfig(**{**TINY, "eval_steps": (0, 3, 6)})
    store.root.mkdir()
    (store.root / store.key(cfg)).write_text("in the way")
    import dnnknn.train
    monkeypatch.setattr(dnnknn.train, "fit", lambda *a, **k: pytest.fail("trained before the check"))
    main_line(capsys, [*CLI, "--runs-dir", str(store.root)], "is a file where the run's folder should go")


def test_full_disk_one_line(tmp_path, capsys, monkeypatch):
    import dnnknn.runs
    def full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(dnnknn.runs, "write_manifest", full)
    main_line(capsys, [*CLI, "--runs-dir", str(tmp_path / "s")], "No space left on device")


@pytest.mark.parametrize("args,needles", [
    (["--lr", "1e300"], ["lr (learning rate)", "3e38"]),
    (["--seed", "20000000000000"], ["seed must be an integer from 0 to 2**31 - 1"]),
    (["--seed", "-1"], ["seed must be"]),
    (["--eval-train", "--train-eval-steps", "4"], ["train_eval_steps [4] are not evaluation steps", "0, 3, 6"]),
])
def test_bad_values_one_line(tmp_path, capsys, args, needles):
    main_line(capsys, [*CLI, *args, "--runs-dir", str(tmp_path / "s")], *needles)
    assert not (tmp_path / "s").exists()


def test_bad_image_folders_one_line(tmp_path, capsys):
    from PIL import Image
    root = tmp_path / "img"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (i, 2, 3)).save(root / split / c / f"{i}.png")
    (root / "train" / "a" / "x.png").mkdir()  # a folder with an image's name: not an image
    (root / "train" / "a" / bytes.fromhex("ff").decode("utf-8", "surrogateescape").join(["n", ".png"])).write_bytes(
        (root / "train" / "a" / "0.png").read_bytes())  # a non-UTF-8 name: an ordinary image
    out = main_line(capsys, [*CLI, "--dataset", f"imagefolder:{root}", "--k", "1", "--limit", "8", "6",
                             "--runs-dir", str(tmp_path / "s")], code=0)
    assert "last evaluation at step 6" in out
    (root / "train" / "b" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    main_line(capsys, [*CLI, "--dataset", f"imagefolder:{root}", "--k", "1", "--runs-dir", str(tmp_path / "s2")],
              "broken link", "gone.png")


def test_export_of_a_path_is_refused(tmp_path, capsys, finished):
    main_line(capsys, ["export", "../other/" + finished.key, "--runs-dir", str(finished.path.parent),
                       "--to", str(tmp_path / "r")], "is not a run key")


@pytest.mark.parametrize("p,needles", [
    (["models", "[]"], ["'models' must name at least one"]),
    (["wrn_width", "0", "-p", "models", '["wrn"]'], ["'wrn_width' must be a positive integer"]),
    (["random_limit", "[0, 0]"], ["'random_limit' must be two positive numbers"]),
    (["gd_dataset", "nope"], ["'gd_dataset': unknown dataset 'nope'"]),
])
def test_bad_book_parameters_one_line_before_any_page(tmp_path, capsys, p, needles, monkeypatch):
    import dnnknn.book
    monkeypatch.setattr(dnnknn.book, "run_pages", lambda *a, **k: pytest.fail("a page ran"))
    main_line(capsys, ["book", "--only", "01", "--no-build", "-p", *p], *needles)


def test_cuda_asked_on_a_machine_without_it(capsys, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    import dnnknn.book
    monkeypatch.setattr(dnnknn.book, "run_pages", lambda *a, **k: pytest.fail("a page ran"))
    main_line(capsys, ["book", "--only", "01", "--no-build", "-p", "device", "cuda"], "no CUDA GPU is visible")


def test_api_misuse_clear_errors(finished):
    from dnnknn import probe
    with pytest.raises(ConfigError, match="described by a RunConfig, got str 'mlp640'"):
        RunStore().get("mlp640")
    d = torch.randn(40, 1, 28, 28), torch.arange(40) % 10
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with pytest.raises(ConfigError, match="k must be a positive integer or a list of them, got 5.0"):
        probe(net, d, d, layer="1", k=5.0)
    with pytest.raises(ConfigError, match="test: the set is empty"):
        probe(net, d, (d[0][:0], d[1][:0]), layer="1", k=5)
    with pytest.raises(ConfigError, match="batch must be a positive integer"):
        probe(net, d, d, layer="1", k=5, batch=-1)
    with pytest.raises(ConfigError, match="no rows for.*the training set was not evaluated: train with eval_train=True"):
        finished.final(split="train")


# -- wrong or misleading -------------------------------------------------------------------
def test_the_summary_names_the_last_evaluation(tmp_path, capsys):
    argv = [a for a in CLI if a not in ("--eval-every", "3")]
    out = main_line(capsys, [*argv, "--eval-steps", "0", "5", "--runs-dir", str(tmp_path / "s")], code=0)
    assert "last evaluation at step 5" in out and "step 6" not in out


def test_a_config_that_is_not_its_key_is_damage(tmp_path, capsys, finished):
    import shutil
    store = RunStore(tmp_path / "s")
    dest = store.root / finished.key
    shutil.copytree(finished.path, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["seed"] = 7  # edited by hand, the manifest too
    (dest / "config.json").write_text(json.dumps(cfg, indent=1))
    from dnnknn.runs import write_manifest
    write_manifest(dest)
    assert store.find(RunConfig(**TINY)) is None
    assert "config.json describes another run" in capsys.readouterr().err
    with pytest.raises(DamagedRun, match="describes another run"):
        export(store, finished.key, tmp_path / "r")
    dest.rename(store.root / "0123456789abcdef")  # renamed: the same message, no blame on a version
    with pytest.raises(DamagedRun, match="edited, or the folder renamed"):
        export(store, "0123456789abcdef", tmp_path / "r")


def test_a_same_size_garbled_file_says_checksum(tmp_path, finished):
    import shutil
    from dnnknn.runs import verify
    dest = tmp_path / finished.key
    shutil.copytree(finished.path, dest)
    data = bytearray((dest / "losses.csv").read_bytes())
    data[-2] ^= 1
    (dest / "losses.csv").write_bytes(bytes(data))
    with pytest.raises(DamagedRun, match="losses.csv is damaged \\(its contents differ from the checksum"):
        verify(dest)


def test_interrupted_waiter_without_checkpoint_says_so(tmp_path, capsys, monkeypatch):
    from dnnknn import runs
    def interrupt(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(runs.RunLock, "__enter__", interrupt)
    rc = cli.main([*CLI, "--runs-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 130 and "nothing was saved yet" in err and "checkpoint" not in err


def test_params_defaults_follow_the_profile():
    P = Params.from_notebook(profile="paper", n_runs=3)
    cfg = experiments.main_config(P, "mnist", "mlp640")
    r = cfg.resolve()
    assert r.lr_milestones == (150, 300, 400) and r.pad_fill == "black" and r.full_eval_steps == (1000,)
    assert not r.train_full and r.neighbour_images == 64
    old = experiments.legacy_config(P, "mnist", "mlp640").resolve()
    assert old.lr_milestones == (300, 600, 800) and old.pad_fill == "zero" and old.full_eval_steps is None


def test_gpu_run_removes_its_temporary_store(monkeypatch, tmp_path):
    import dnnknn.gpubox
    seen = []

    def fake(job, data_dir, out, small, device, budget, runs_dir, limits):
        assert os.path.isdir(runs_dir)
        seen.append(runs_dir)
        return tmp_path
    monkeypatch.setattr(dnnknn.gpubox, "_run_job", fake)
    dnnknn.gpubox.run_job("mnist", str(tmp_path), str(tmp_path / "out"))
    assert seen and not os.path.exists(seen[0])


def test_staging_bad_data_leaves_no_folder(tmp_path):
    from dnnknn.data import pack_dataset
    from dnnknn.errors import DataNotFoundError
    with pytest.raises(DataNotFoundError):
        pack_dataset("mnist", tmp_path / "nothing-here", tmp_path / ".gpubox" / "mnist" / "mnist.npz")
    assert not (tmp_path / ".gpubox").exists()


def test_timing_reads_the_runs_dir_the_pages_used(tmp_path):
    from dnnknn.book import _train_eval_seconds
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "meta.json").write_text(json.dumps({"page": "01_x.ipynb", "wall_time_s": 10.0,
                                                          "eval_time_s": 4.0}))
    assert _train_eval_seconds("01_x.ipynb", 0.0, str(tmp_path)) == (6.0, 4.0, 1)


def test_a_run_records_the_code_it_was_trained_with(tmp_path, monkeypatch):
    """The code version is read when training starts: a checkout that changes during a long run
    does not relabel it."""
    import dnnknn.runs
    import dnnknn.train
    tree = {"version": "0.2.0+gstart"}
    fit = dnnknn.train.fit

    def fit_then_edit(*a, **k):
        rec = fit(*a, **k)
        tree["version"] = "0.2.0+gedited+dirty"  # someone commits while the run trains
        return rec
    monkeypatch.setattr(dnnknn.runs, "code_version", lambda: tree["version"])
    monkeypatch.setattr(dnnknn.train, "fit", fit_then_edit)
    run = RunStore(tmp_path).get(RunConfig(**TINY), progress=False)
    assert run.meta["code_version"] == "0.2.0+gstart"


def test_an_empty_dataset_folder_is_not_called_damaged(tmp_path):
    """A failed download leaves torchvision's empty folders: the message says the files are not
    there, not that they are damaged."""
    from dnnknn.data import load_dataset
    from dnnknn.errors import DataNotFoundError
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="is not in .* and could not be downloaded"):
        load_dataset("mnist", tmp_path, download=False)
