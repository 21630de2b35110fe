import re
import subprocess
import sys

import pytest

import yaml

from .conftest import ROOT


def _pins(lines):
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if m := re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s]+)", line):
            out[m.group(1).lower()] = m.group(2)
    return out


def test_environment_yml_matches_requirements():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert req and _pins(pip) == req
    assert any(str(d).startswith("python=") for d in env["dependencies"])


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make book" in readme
    assert [l for l in ci.splitlines() if l and not l.startswith("#")][-1] == "make test"


HEAVY = ("torch", "numpy", "pandas", "numba", "matplotlib", "seaborn")


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["grid", "--help"], ["gpu-run", "--help"],
                                  ["train", "--model", "vgg"], ["train", "--seed", "-1"], ["train", "--lr", "1e300"],
                                  ["train", "--eval-train", "--train-eval-steps", "3", "--steps", "20"],
                                  ["grid", "--sections", "none"], ["book", "--profile", "huge"], []])
def test_help_and_argument_errors_import_nothing_heavy(argv):
    """The command line answers --help and bad arguments from `dnnknn.names` and the config alone."""
    code = (f"import sys\nfrom dnnknn import cli\ntry:\n    cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "LOADED []" in r.stdout, (r.stdout[-300:], r.stderr[-300:])


def test_the_entry_point_answers_help_without_torch():
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "dnnknn", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: python -m dnnknn" in r.stdout
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "dnnknn.cli" in imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))
