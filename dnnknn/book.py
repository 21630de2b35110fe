"""Execute the notebooks with papermill and build the Jupyter Book.

    python -m dnnknn book                      # every notebook, quick profile, then the HTML
    python -m dnnknn book --only 01 -p steps 500 -p datasets '["mnist5k"]'   # one notebook, rebuild

Sources live in notebooks/ without outputs; executed copies go to book/ (the book's pages), each
written to a temporary file and moved into place only when the whole notebook succeeded, with
papermill's record of its parameters plus the code version, device and wall time in its metadata.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BOOK = ROOT / "book"

# (source notebook, page in book/, parameters): the quick profile for every section, and the
# paper profile (trained on this CPU only where it fits, else read from results/) for four.
PAGES = [(f"{n}.ipynb", f"{n}.ipynb", {}) for n in (
    "01_knn_during_training", "02_knn_across_layers", "03_dnn_as_knn_approximator",
    "04_random_labels", "05_robustness_k_metric_pca", "06_generalization_error",
    "07_full_batch_gd", "08_random_labels_mc_me")]
PAGES += [(f"{n}.ipynb", f"paper/{n}.ipynb", {"profile": "paper", "train_missing": False}) for n in (
    "01_knn_during_training", "02_knn_across_layers", "03_dnn_as_knn_approximator",
    "06_generalization_error", "07_full_batch_gd")]
PAGES += [("09_side_by_side.ipynb", "09_side_by_side.ipynb", {})]
PAGES += [("10_probe_any_network.ipynb", "10_probe_any_network.ipynb", {})]


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def execute(source: str, page: str, parameters: dict, cwd: Path = ROOT, book: Path = BOOK) -> float:
    """Run notebooks/<source> into <book>/<page> with papermill; returns the wall time."""
    import papermill as pm

    from .runs import code_version, device_name

    src = NOTEBOOKS / source
    if not src.exists():
        raise ConfigError(f"no notebook {src}")
    known = set(pm.inspect_notebook(str(src)))
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ConfigError(f"unknown parameter {unknown[0]!r} for {source}; its parameters are {sorted(known)}")
    out = Path(book) / page
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".ipynb", prefix=".tmp-", dir=out.parent)
    os.close(fd)
    t = time.time()
    try:
        pm.execute_notebook(str(src), tmp, parameters=parameters, cwd=str(cwd), kernel_name="python3",
                            progress_bar=False, log_output=True, request_save_on_cell_execute=False)
        wall = time.time() - t
        nb = json.loads(Path(tmp).read_text())
        if Path(page).parent != Path("."):  # a second copy of a chapter: its own labels and title
            _relabel(nb, suffix=f"-{Path(page).parent.name}",
                     title=f" ({parameters.get('profile', 'quick')} profile)")
        dev = parameters.get("device", "auto")
        import torch
        dev = "cuda" if dev == "auto" and torch.cuda.is_available() else ("cpu" if dev == "auto" else dev)
        nb["metadata"]["dnnknn"] = {"code_version": code_version(), "device": device_name(dev),
                                    "wall_time_s": round(wall, 1), "source": f"notebooks/{source}"}
        Path(tmp).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
        return wall
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _relabel(nb: dict, suffix: str, title: str):
    """Make figure labels unique (`:name: "x"` -> "x<suffix>", numrefs too) and mark the title."""
    import re

    first = True
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        text = re.sub(r':name: "([^"]+)"', lambda m: f':name: "{m.group(1)}{suffix}"', text)
        text = re.sub(r"\{numref\}`([^`]+)`", lambda m: f"{{numref}}`{m.group(1)}{suffix}`", text)
        if first:
            text = re.sub(r"^# (.*)$", lambda m: f"# {m.group(1)}{title}", text, count=1, flags=re.M)
            first = False
        cell["source"] = text


def build(warnings_as_errors: bool = True, book: Path = BOOK) -> Path:
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(book)]
    if warnings_as_errors:
        cmd += ["-W", "-n", "--keep-going"]
    r = subprocess.run(cmd, cwd=Path(book).parent)
    if r.returncode:
        raise ConfigError("jupyter-book build failed (see the messages above)")
    return Path(book).parent / "_build" / "html" / "index.html"  # beside _config.yml


def main(args) -> int:
    import logging
    logging.basicConfig(level=logging.INFO, format="      %(message)s")
    for noisy in ("traitlets", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    pages = PAGES
    if args.only:
        pages = [p for p in PAGES if any(p[1].startswith(o) or p[0].startswith(o) for o in args.only)]
        if args.profile:
            pages = [p for p in pages if p[2].get("profile", "quick") == args.profile]
        if not pages:
            raise ConfigError(f"no notebook matches {args.only}; pages: {[p[1] for p in PAGES]}")
    extra = {}
    for item in args.p or []:
        if len(item) != 2:
            raise ConfigError("-p takes a name and a value, e.g. -p steps 500")
        extra[item[0]] = _parse_value(item[1])
    if args.profile:
        extra["profile"] = args.profile
    from .experiments import Params
    for _, _, params in pages:  # a wrong parameter stops here, in one line, before any page runs
        Params.from_notebook(**{**params, **extra})
    total = time.time()
    if not args.no_execute:
        for i, (src, page, params) in enumerate(pages, 1):
            params = {**params, **extra}
            print(f"[{i}/{len(pages)}] {page} {params or ''}", flush=True)
            wall = execute(src, page, params)
            print(f"      done in {wall:.0f} s", flush=True)
    if not args.no_build:
        index = build()
        print(f"book built in {time.time() - total:.0f} s: open {index}")
    return 0
