"""The GPU job rehearsed on CPU as a bare GPU machine is: a copy of the tracked tree plus the
staged data only, its own interpreter without the book's or the cluster's packages, the results
coming back through $OUT within a job's limits, and imported into a results folder."""
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap

import pytest

from .conftest import ROOT, SHARED_DATA, copy_tree

MISSING_THERE = ("mlxtend", "papermill", "jupyter_book", "submitit", "faiss", "psutil", "myst_nb")

BLOCKER = textwrap.dedent(f"""
    import sys
    BLOCKED = {set(MISSING_THERE)!r}
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (not on the GPU machine)")
    sys.meta_path.insert(0, _Block())
""")

needs_shared = pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir()
                                  or not (SHARED_DATA / "cifar10-jpeg").is_dir(),
                                  reason="../shared/data (MNIST, cifar10-jpeg) is not present")


def _gpu_machine_env(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    venv_bin = str(ROOT / ".venv" / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "DNNKNN_DATA", "DNNKNN_RUNS", "PYTHONPATH")}
    return {**env, "PATH": path, "PYTHONPATH": str(blocker), "TQDM_DISABLE": "1", "HOME": str(tmp_path / "home")}


@needs_shared
def test_staged_jobs_run_as_on_a_gpu_machine_and_import(tmp_path):
    tree = tmp_path / "machine" / "repo"  # no ../shared beside it, as on the device
    tree.mkdir(parents=True)
    # with the k-NN kernels numba compiled here: compiling them in a fresh tree (~15 s) is what the
    # suite's first k-NN test does on a fresh clone; this test is about staging, budgets and imports
    copy_tree(tree, numba_cache=True)
    assert not (tree.parent / "shared").exists() and not (tree / ".venv").exists()
    staged = subprocess.run([sys.executable, "-m", "dnnknn", "gpu-stage", "--small", "--data-dir", str(SHARED_DATA)],
                            cwd=tree, capture_output=True, text=True, timeout=300)
    assert staged.returncode == 0, staged.stderr
    jobs = [ln.split("command: ", 1)[1] for ln in staged.stdout.splitlines() if "command: " in ln]
    sends = [ln.split("send: ", 1)[1].split(" (with", 1)[0].strip() for ln in staged.stdout.splitlines() if "send: " in ln]
    assert len(jobs) == 2 and sends == ['[".gpubox/mnist"]', '[".gpubox/cifar10-jpeg"]']
    assert "TOO BIG" not in staged.stdout and staged.stdout.count("of the 64 MiB a job sends") == 2
    env = _gpu_machine_env(tmp_path)
    check = subprocess.run([sys.executable, "-c", "import mlxtend"], cwd=tree, env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "not on the GPU machine" in check.stderr  # the blocker works
    from dnnknn.gpubox import import_archive
    from dnnknn.runs import Run

    results = tmp_path / "results"
    for i, cmd in enumerate(jobs):
        out = tmp_path / f"OUT{i}"
        out.mkdir()
        argv = cmd.replace("$OUT", str(out)).split()
        assert argv[:3] == ["python3", "-m", "dnnknn"]
        r = subprocess.run([sys.executable, *argv[1:]], cwd=tree, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "estimated s" in r.stdout  # the time budget, printed first
        files = [p for p in out.rglob("*") if p.is_file()]
        assert len(files) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in files)
        with tarfile.open(out / "records.tar.gz") as tar:
            names = tar.getnames()
        assert names and not any("ckpt" in n for n in names)
        summary = (out / "summary.md").read_text()
        assert "skipped" not in summary and "failed" not in summary, summary
        import_archive(out / "records.tar.gz", results)
    runs = [Run(p) for p in sorted(results.iterdir())]
    assert {(r.config.model, r.config.dataset, r.config.labels) for r in runs} == {
        ("wrn", "mnist", "true"), ("wrn", "mnist", "random"), ("mlp640", "cifar10-jpeg", "true"),
        ("lenet", "cifar10-jpeg", "true")}
    # the book's tables compute from the imported records
    from dnnknn import report as ex
    main = {(r.config.model, r.config.dataset): r for r in runs if r.config.labels == "true"}
    acc = ex.final_accuracy_table(main)
    gap = ex.generalization_table(main)
    assert len(acc) == len(gap) == 3 and not (acc == "not run here").any().any()
    assert all(r.meta["device"] == "cpu" for r in runs)


def test_gpu_job_limits_are_enforced(tmp_path):
    from dnnknn.gpubox import check_out
    from dnnknn.errors import ConfigError

    for i in range(9):
        (tmp_path / f"f{i}").write_bytes(b"x")
    with pytest.raises(ConfigError, match="at most 8"):
        check_out(tmp_path)
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()
    with open(tmp_path / "big", "wb") as f:
        f.truncate(16 * 2**20 + 1)
    with pytest.raises(ConfigError, match="16 MiB"):
        check_out(tmp_path)


def test_import_refuses_a_damaged_archive(tmp_path):
    import io

    from dnnknn.gpubox import import_archive
    from dnnknn.runs import DamagedRun

    bad = tmp_path / "records.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        data = b"{}"
        info = tarfile.TarInfo("0123456789abcdef/config.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DamagedRun, match="manifest.json is missing"):
        import_archive(bad, tmp_path / "results")
    assert not (tmp_path / "results").exists()


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="../shared/data (MNIST) is not present")
def test_a_small_pack_is_never_taken_for_the_whole_dataset(tmp_path):
    from dnnknn.data import load_dataset, pack_dataset
    from dnnknn.errors import DataNotFoundError

    pack_dataset("mnist", SHARED_DATA, tmp_path / "mnist.npz", limit=(300, 100))
    with pytest.raises(DataNotFoundError, match="holds only the first 300 / 100 images"):
        load_dataset("mnist", tmp_path)
    d = load_dataset("mnist", tmp_path, limit=(200, 100))
    full = load_dataset("mnist", SHARED_DATA, limit=(200, 100))
    assert d.x_train.shape == (200, 1, 28, 28) and (d.x_train == full.x_train).all()  # exact pixels


def test_import_refuses_a_run_keyed_by_another_version(tmp_path):
    from dnnknn import RunConfig, RunStore
    from dnnknn.gpubox import import_archive, write_archive
    from dnnknn.runs import DamagedRun, Run

    run = RunStore(tmp_path / "s").get(RunConfig(dataset="mnist5k", steps=2, eval_steps=(0, 2), ks=(1,),
                                                 limit=(100, 50)), progress=False)
    other = tmp_path / "s" / "0000000000000000"
    shutil.copytree(run.path, other)
    write_archive([run, Run(other)], tmp_path / "records.tar.gz")
    with pytest.raises(DamagedRun, match="0000000000000000: its config.json describes another run"):
        import_archive(tmp_path / "records.tar.gz", tmp_path / "results")
    assert not (tmp_path / "results").exists()  # nothing published: all checked first
