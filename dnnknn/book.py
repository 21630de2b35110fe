"""Execute the notebooks with papermill and build the Jupyter Book.

    python -m dnnknn book                      # every notebook, quick profile, then the HTML
    python -m dnnknn book --only 01 -p steps 500 -p datasets '["mnist5k"]'   # one notebook, rebuild

Sources live in notebooks/ without outputs; executed copies go to book/ (the book's pages), each
written to a temporary file and moved into place only when the whole notebook succeeded, with
papermill's record of its parameters plus the code version, device and wall time in its metadata.
"""
from __future__ import annotations

import dataclasses
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



def pages(toc: Path = BOOK / "_toc.yml") -> list[tuple[str, str, dict]]:
    """(source notebook, page in book/, parameters) for each notebook chapter of the toc, in order:
    chapter `x` is notebooks/x.ipynb with the quick profile; `paper/x` the same notebook with
    the paper profile (trained here only where that fits a CPU, else read from results/)."""
    import yaml

    out = []
    for part in yaml.safe_load(toc.read_text())["parts"]:
        for ch in part["chapters"]:
            page = Path(ch["file"])
            if (NOTEBOOKS / f"{page.name}.ipynb").exists():
                params = {"profile": "paper", "train_missing": False} if page.parent.name == "paper" else {}
                out.append((f"{page.name}.ipynb", f"{page}.ipynb", params))
    return out


PAGES = pages()


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def execute(source: str, page: str, parameters: dict, cwd: Path = ROOT, book: Path = BOOK) -> dict:
    """Run notebooks/<source> into <book>/<page> with papermill; returns its times in seconds:
    wall (the whole page) and cells (the sum of its cells' execution)."""
    import papermill as pm

    from .runs import code_version, device_name

    src = NOTEBOOKS / source
    if not src.exists():
        raise ConfigError(f"no notebook {src}")
    from .profiles import Params
    known = set(pm.inspect_notebook(str(src))) | {f.name for f in dataclasses.fields(Params)}
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
        from .train import resolve_device
        dev = str(resolve_device(parameters.get("device", "auto")))
        nb["metadata"]["dnnknn"] = {"code_version": code_version(), "device": device_name(dev),
                                    "wall_time_s": round(wall, 1), "source": f"notebooks/{source}"}
        Path(tmp).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
        cells = sum(c["metadata"].get("papermill", {}).get("duration") or 0 for c in nb["cells"])
        return {"wall": wall, "cells": cells}
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
    todo = PAGES
    if args.only:
        todo = [p for p in PAGES if any(p[1].startswith(o) or p[0].startswith(o) for o in args.only)]
        if args.profile:
            todo = [p for p in todo if p[2].get("profile", "quick") == args.profile]
        if not todo:
            raise ConfigError(f"no notebook matches {args.only}; pages: {[p[1] for p in PAGES]}")
    extra = {}
    for item in args.p or []:
        if len(item) != 2:
            raise ConfigError("-p takes a name and a value, e.g. -p steps 500")
        extra[item[0]] = _parse_value(item[1])
    if args.profile:
        extra["profile"] = args.profile
    from .profiles import Params
    for _, _, params in todo:  # a wrong parameter stops here, in one line, before any page runs
        Params.from_notebook(**{**params, **extra})
    total, times = time.time(), []
    if not args.no_execute:
        from .knn import warm_up
        numba_s = warm_up()  # compiled once here (cached on disk), loaded by every page's kernel
        print(f"numba kernels compiled or loaded from the disk cache in {numba_s:.0f} s", flush=True)
        for i, (src, page, params) in enumerate(todo, 1):
            params = {**params, **extra}
            print(f"[{i}/{len(todo)}] {page} {params or ''}", flush=True)
            before = _runs_made()
            t = execute(src, page, params)
            t["page"], t["train"], t["knn"] = page, *_train_eval_seconds(_runs_made() - before)
            times.append(t)
            print(f"      done in {t['wall']:.0f} s", flush=True)
    if not args.no_build:
        t = time.time()
        index = build()
        html_s = time.time() - t
    if times:
        print(timing_table(times, numba_s, html_s if not args.no_build else None))
    if not args.no_build:
        print(f"book built in {time.time() - total:.0f} s: open {index}")
    return 0


def _runs_made() -> set[Path]:
    """The finished runs in the store the notebooks use (./runs, or $DNNKNN_RUNS)."""
    root = Path(os.environ.get("DNNKNN_RUNS") or ROOT / "runs")
    return {p for p in root.glob("*/meta.json")} if root.is_dir() else set()


def _train_eval_seconds(metas) -> tuple[float, float]:
    """(training, k-NN evaluation) seconds of the runs whose meta.json files are given."""
    train = knn = 0.0
    for m in metas:
        meta = json.loads(m.read_text())
        knn += meta.get("eval_time_s", 0.0)
        train += meta["wall_time_s"] - meta.get("eval_time_s", 0.0)
    return train, knn


def timing_table(times: list[dict], numba_s: float, html_s: float | None) -> str:
    """Where `make book`'s time went, per page: the kernel's start and papermill (the page's wall
    time less its cells), training and k-NN evaluation of the runs it made, and the rest of its
    cells (reading runs, figures, tables)."""
    lines = ["", "| page | total (s) | kernel start + papermill | training | k-NN evaluation | other cells |",
             "|---|---|---|---|---|---|"]
    for t in times:
        other = t["cells"] - t["train"] - t["knn"]
        lines.append(f"| {t['page']} | {t['wall']:.0f} | {t['wall'] - t['cells']:.0f} | {t['train']:.0f} | "
                     f"{t['knn']:.0f} | {other:.0f} |")
    sums = {k: sum(t[k] for t in times) for k in ("wall", "cells", "train", "knn")}
    lines.append(f"| all pages | {sums['wall']:.0f} | {sums['wall'] - sums['cells']:.0f} | {sums['train']:.0f} | "
                 f"{sums['knn']:.0f} | {sums['cells'] - sums['train'] - sums['knn']:.0f} |")
    lines.append(f"\nnumba kernels (before the pages): {numba_s:.0f} s")
    if html_s is not None:
        lines.append(f"HTML build (jupyter-book): {html_s:.0f} s")
    return "\n".join(lines)
