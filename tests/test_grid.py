from .conftest import run_cli

ARGS = ["grid", "--profile", "quick", "--executor", "local", "--models", "mlp640", "lenet", "--steps", "4", "--n-runs", "1",
        "--sections", "main", "--device", "cpu"]


def _grid(tmp_path):
    # the driver in this process; submitit starts each run's job as a process of its own
    return run_cli([*ARGS, "--runs-dir", tmp_path / "runs", "--log-dir", tmp_path / "logs"], env={"TQDM_DISABLE": "1"})


def test_two_run_grid_through_submitit_local(tmp_path):
    r = _grid(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 runs in the grid, 0 already in the store, 2 to submit (local)" in r.stdout
    assert "failed" not in r.stdout
    finished = sorted(p.parent.name for p in (tmp_path / "runs").glob("*/measures.csv"))
    assert len(finished) == 2
    from dnnknn.runs import Run
    assert {Run(tmp_path / "runs" / k).config.model for k in finished} == {"mlp640", "lenet"}
    again = _grid(tmp_path)
    assert again.returncode == 0 and "2 already in the store, 0 to submit" in again.stdout
    assert "job " not in again.stdout



def test_grid_precision_matches_the_book_it_feeds(tmp_path, monkeypatch, capsys):
    # a quick grid run on GPUs (fp32 by default) fills a book built on a CPU with native bf16 only
    # when asked for the runs that book looks up: --precision bf16-train
    from dnnknn import train
    from dnnknn.cli import main
    from dnnknn import experiments
    from dnnknn.profiles import Params
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: True)
    book = experiments.main_config(Params.from_notebook(device="cpu"), "mnist5k", "mlp640")
    assert book.precision == "bf16-train"
    assert experiments.main_config(Params.from_notebook(device="cuda", precision="bf16-train"), "mnist5k", "mlp640").key("v") \
        == book.key("v") != experiments.main_config(Params.from_notebook(device="cuda"), "mnist5k", "mlp640").key("v")
    base = ["grid", "--profile", "quick", "--models", "mlp640", "--sections", "main", "--n-runs", "1",
            "--device", "cuda", "--runs-dir", str(tmp_path), "--dry-run"]
    for extra, label in (([], "SGD 300 steps, seed 0"), (["--precision", "bf16-train"], "SGD 300 steps, bf16-train, seed 0")):
        assert main([*base, *extra]) == 0
        assert capsys.readouterr().out.strip() == f"missing mlp640 on mnist5k, {label}"


def test_serial_grid_trains_here_one_run_after_another(tmp_path):
    args = [*ARGS, "--runs-dir", tmp_path / "runs", "--log-dir", tmp_path / "logs"]
    args[args.index("local")] = "serial"
    r = run_cli(args, env={"TQDM_DISABLE": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 to submit (serial)" in r.stdout and "job " not in r.stdout
    assert len(list((tmp_path / "runs").glob("*/measures.csv"))) == 2
    assert not (tmp_path / "logs").exists()  # no submitit here


def test_the_depth_section_lists_the_cpu_wide_resnets(tmp_path, capsys):
    from dnnknn.cli import main
    assert main(["grid", "--profile", "paper", "--sections", "depth", "--runs-dir", str(tmp_path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and all(line.split(" ", 1)[0] in ("done", "missing") for line in lines)  # results/ too
    assert sum("wrn-28-2 on mnist, SGD 1000 steps, seed" in line for line in lines) == 3
    assert sum("wrn-28-2 on mnist random labels, SGD 2000 steps" in line for line in lines) == 1
    assert sum("wrn-28-4 on mnist, SGD 1000 steps, seed 0" in line for line in lines) == 1
    assert main(["grid", "--profile", "paper", "--runs-dir", str(tmp_path), "--dry-run"]) == 0
    assert "wrn-28-2" not in capsys.readouterr().out  # the paper's grid by default
