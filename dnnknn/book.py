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

from . import atomic
from .errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BOOK = ROOT / "book"
LOGS = ROOT / "_build" / "logs"  # each page's papermill and kernel log, and jupyter-book's


def pages(toc: Path = ROOT / "_toc.yml") -> list[tuple[str, str, dict]]:
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


def select(pages: list, only: list[str], profile: str | None = None) -> list:
    """The pages `--only` names, by prefix of their path in book/: "01" is the quick page
    01_...; a paper-profile page only when named with its folder ("paper/01"), or with
    --profile paper."""
    folder = "paper/" if profile == "paper" else ""

    def hit(page: str, o: str) -> bool:
        o = o if "/" in o else folder + o
        return page.startswith(o) and page.count("/") == o.count("/")

    return [p for p in pages if any(hit(p[1], o) for o in only)]


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
        for cell in nb["cells"]:  # papermill's injected parameters: recorded in the metadata, not shown
            tags = cell.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags and "remove-cell" not in tags:
                tags.append("remove-cell")
        at = next((i + 1 for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"), 0)
        nb["cells"].insert(at, {"cell_type": "markdown", "id": "rerun-box", "metadata": {},
                                "source": rerun_box(page, pm.inspect_notebook(str(src)), parameters)})
        if Path(page).parent != Path("."):  # a second copy of a chapter: its own labels and title
            _relabel(nb, suffix=f"-{Path(page).parent.name}",
                     title=f" ({parameters.get('profile', 'quick')} profile)")
        from .train import resolve_device
        dev = str(resolve_device(parameters.get("device", "auto")))
        nb["metadata"]["dnnknn"] = {"code_version": code_version(), "device": device_name(dev),
                                    "wall_time_s": round(wall, 1), "source": f"notebooks/{source}"}
        atomic.write_text(out, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        Path(tmp).unlink()
        cells = sum(c["metadata"].get("papermill", {}).get("duration") or 0 for c in nb["cells"])
        return {"wall": wall, "cells": cells}
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def page_id(page: str) -> str:
    """The short name `--only` takes for a page: "01", "paper/03", "claims"."""
    folder, _, name = page.removesuffix(".ipynb").rpartition("/")
    return (folder + "/" if folder else "") + name.split("_")[0]


def rerun_box(page: str, declared: dict, given: dict) -> str:
    """Markdown for the box under a page's title: its parameters (name, value on this page, what it
    sets, from the parameters cell) and the command that reruns this page."""
    pid = page_id(page)
    rows = []
    for name, d in declared.items():
        value = json.dumps(given[name]) if name in given else d["default"]
        rows.append(f"| `{name}` | `{value}` | {d['help'].replace('|', '/')} |")
    example = next((n for n in declared if n not in ("profile",)), None)
    example = f" -p {example} VALUE" if example else ""
    return "\n".join([
        ":::{admonition} Rerun this page",
        ":class: tip dropdown",
        "",
        f"`python -m dnnknn book --only {pid}{example}` executes this page again with the parameters you "
        "give (`-p NAME VALUE`, a JSON value) and rebuilds the book; a wrong value stops before anything "
        "changes. Its parameters:",
        "",
        "| parameter | value on this page | what it sets |",
        "|---|---|---|",
        *rows,
        "",
        "Every other field of `dnnknn.profiles.Params` (`device`, `runs_dir`, `data_dir`, `n_runs`, ...) can be "
        "set the same way. The README's section *The book* has the details; {doc}`/fill_the_missing_runs` says how "
        "to compute the runs this machine did not make.",
        ":::",
    ])


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


def build(warnings_as_errors: bool = True, book: Path = BOOK, verbose: bool = False) -> Path:
    """jupyter-book's HTML build of `book`; its output goes to _build/logs/jupyter-book.log (with
    `verbose`, to the terminal), and a failed build says its warnings and where the log is."""
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(book)]
    if warnings_as_errors:
        cmd += ["-W", "-n", "--keep-going"]
    site = Path(book).parent  # beside _config.yml
    log = site / "_build" / "logs" / "jupyter-book.log"
    if verbose:
        r = subprocess.run(cmd, cwd=site)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            r = subprocess.run(cmd, cwd=site, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        said = [] if verbose else [line.strip() for line in log.read_text().splitlines()
                                   if "WARNING" in line or "ERROR" in line][:5]
        raise ConfigError("jupyter-book build failed" + (f": {' | '.join(said)}" if said else "")
                          + ("" if verbose else f"; its log: {log}"))
    html = site / "_build" / "html"
    for page in html.rglob("*.html"):
        once_each_inline_script(page)
    return html / "index.html"


def once_each_inline_script(page: Path):
    """Drop a repeated inline <script> line from a built page. sphinx-thebe and sphinx-togglebutton,
    which Jupyter Book 1 always loads, write their configuration twice into every page, and the
    second `const THEBE_JS_URL` is a SyntaxError in the browser's console."""
    lines, seen, kept = page.read_text().splitlines(keepends=True), set(), []
    for line in lines:
        s = line.strip()
        if s.startswith("<script>") and s.endswith("</script>"):
            if s in seen:
                continue
            seen.add(s)
        kept.append(line)
    if len(kept) != len(lines):
        page.write_text("".join(kept))


def _children(pid: int) -> list[int]:
    """The PIDs whose parent is `pid` (Linux's /proc; elsewhere none)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, ...
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _worker_init():
    """A page worker: in its own process group, so that Ctrl-C reaches the driver only. The
    driver's SIGTERM stops it quietly: its kernel (a session of its own) is killed at once, before
    it can print its lost connection, the worker's stderr goes to /dev/null (the driver says the
    one line), and the page's temporary file is removed as papermill unwinds."""
    import signal

    os.setpgrp()

    def stop(*_):
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        for pid in _children(os.getpid()):
            try:
                os.killpg(pid, signal.SIGKILL)  # the kernel leads its own session and group
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def page_log(page: str, logs: Path = LOGS) -> Path:
    """Where a page's papermill and kernel log goes: _build/logs/paper__01_knn_during_training.log."""
    return Path(logs) / (page.removesuffix(".ipynb").replace("/", "__") + ".log")


def _run_page(job: tuple) -> dict:
    """One page in a worker process: its kernel gets `threads` threads (torch, BLAS, numba), the
    runs it trains are marked with its name (meta.json "page") and those it reads listed, for the
    driver's line and timing table. Papermill's log and the kernel's output go to the page's log
    file (with `verbose`, to the terminal); a failing cell raises PageFailed with its error."""
    from papermill.exceptions import PapermillExecutionError

    from .errors import DnnKnnError, PageFailed

    src, page, params, threads, book, logs, verbose = job
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["DNNKNN_PAGE"] = page
    log = page_log(page, logs)
    log.parent.mkdir(parents=True, exist_ok=True)
    reads = log.with_suffix(".runs")
    reads.unlink(missing_ok=True)
    os.environ["DNNKNN_RUNS_READ"] = str(reads)
    if not verbose:  # this process's and its kernel's output (a kernel inherits the descriptors)
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    import logging
    logging.basicConfig(level=logging.INFO, format=f"      [{page}] %(message)s", force=True, stream=sys.stderr)
    for noisy in ("traitlets", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # parameters the driver passes beyond the page's own (train_missing, device, ...) are expected
    logging.getLogger("papermill").addFilter(lambda r: "Passed unknown parameter" not in r.getMessage())
    before = _recorded(page, book)[0]
    start = time.time()
    where = "" if verbose else f"; the page's log: {log}"
    try:
        t = execute(src, page, params, book=book)
    except PapermillExecutionError as e:
        raise PageFailed(f"page {page} failed in its cell {e.exec_count or e.cell_index}: {e.ename}: "
                         f"{' '.join(str(e.evalue).split())[:300]}{where}") from None
    except DnnKnnError:
        raise  # a wrong parameter: its own line
    except Exception as e:  # noqa: BLE001 - a dead kernel, a timeout: the same one line
        raise PageFailed(f"page {page} failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}{where}") from None
    t["page"], (t["train"], t["knn"], t["trained"]) = page, _train_eval_seconds(page, start, params.get("runs_dir"))
    read = set(reads.read_text().split()) if reads.exists() else set()
    t["read"] = len(read)  # found in the store: never the runs it trained
    # the seconds its runs took, for the next build's order (`run_pages`); a page that found its runs
    # made (by an earlier build) keeps the seconds they took when it made them
    out = Path(book) / page
    nb = json.loads(out.read_text())
    nb["metadata"]["dnnknn"]["runs_s"] = round(t["train"] + t["knn"], 1) if t["trained"] else before
    atomic.write_text(out, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return t


def _recorded(page: str, book: Path = BOOK) -> tuple[float, float]:
    """(seconds of the runs it trained, wall time) that the page in `book` recorded when it was
    last executed (0 where unknown)."""
    try:
        meta = json.loads((Path(book) / page).read_text())["metadata"]["dnnknn"]
    except (OSError, ValueError, KeyError):
        return 0.0, 0.0
    return float(meta.get("runs_s", 0.0)), float(meta.get("wall_time_s", 0.0))


def run_pages(todo: list, extra: dict, jobs: int, book: Path = BOOK, logs: Path = LOGS,
              verbose: bool = False) -> tuple[list[dict], float]:
    """Execute the pages `jobs` at a time, each kernel with cores / jobs threads (two 1-thread
    training processes get 12% more steps through a 2-core CPU than one with 2 threads). First the
    pages that only read runs (paper profile), beside the numba compilation (a process of its
    own); then the pages that trained runs when last executed, the longest first, then the others,
    the summary (09) last. Pages needing the same run share it: the run store's lock
    lets one train it while the others wait. Shows a progress bar over the pages and a line per
    finished page. Returns the pages' times and the compilation's."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tqdm import tqdm

    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
    Path(logs).mkdir(parents=True, exist_ok=True)
    with open(Path(logs) / "numba.log", "w") as numba_log:  # its warnings, if any, with the pages' logs
        numba = subprocess.Popen([sys.executable, "-c", "from dnnknn.knn import warm_up; print(warm_up())"],
                                 cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
                                 stderr=None if verbose else numba_log)
    reading = [p for p in todo if p[2].get("profile") == "paper"]
    # the pages that train runs first, the longest first, so that the others find them made
    # instead of waiting in a worker for them; then the rest, the longest first; the summary last
    recorded = {page: _recorded(page, book) for _, page, _ in todo}  # (runs' seconds, wall)
    rest = sorted((p for p in todo if p not in reading),
                  key=lambda p: (p[0].startswith("09_"), not recorded[p[1]][0], [-x for x in recorded[p[1]]]))
    print(f"{len(todo)} page{'s' * (len(todo) != 1)}, {jobs} at a time ({threads} thread{'s' * (threads > 1)} each); "
          f"{'their logs below' if verbose else f'each one logs to {Path(logs)}/'}", flush=True)
    times, futures, reported, numba_s = [], {}, set(), None
    bar = tqdm(total=len(todo), unit="page", desc="pages", file=sys.stderr, leave=False, dynamic_ncols=True,
               disable=not sys.stderr.isatty())  # no carriage-return frames in a log file

    def compiled(block: bool) -> bool:
        """Whether numba's kernels are on disk (waiting for them if `block`)."""
        nonlocal numba_s
        if numba_s is None and (block or numba.poll() is not None):
            out = numba.communicate()[0].strip().splitlines()
            numba_s = float(out[-1]) if numba.returncode == 0 and out else float("nan")
        return numba_s is not None

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init) as pool:
        def submit():
            """One more page into a free worker: a reading page while numba compiles, then the others
            in their order (the kernels are on disk before any of them needs them)."""
            queue = rest if rest and compiled(block=not reading) else reading
            src, page, params = queue.pop(0)
            futures[pool.submit(_run_page, (src, page, {**params, **extra}, threads, book, logs, verbose))] = page

        try:
            while reading or rest or len(reported) < len(futures):
                while (reading or rest) and sum(not f.done() for f in futures) < jobs:
                    submit()
                wait([f for f in futures if not f.done()], timeout=1.0, return_when=FIRST_COMPLETED)
                for f in [f for f in futures if f.done() and f not in reported]:
                    reported.add(f)
                    times.append(f.result())  # a failed page raises here (PageFailed: its error and log)
                    bar.update()
                    with tqdm.external_write_mode(file=sys.stdout):  # the bar cleared, the line, the bar again
                        print(page_line(times[-1]), flush=True)
            compiled(block=True)
        except BaseException:
            for f in futures:
                f.cancel()
            for proc in list(getattr(pool, "_processes", {}).values()):  # the running pages too
                proc.terminate()
            numba.kill()
            pool.shutdown(wait=True)
            for _, page, _ in todo:  # the temporary file of a page killed before its own clean-up
                for tmp in (Path(book) / page).parent.glob(".tmp-*.ipynb"):
                    tmp.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
    times.sort(key=lambda t: [p[1] for p in todo].index(t["page"]))
    return times, numba_s


def page_line(t: dict) -> str:
    """A finished page in one line: its name, seconds, and the runs it trained and read."""
    runs = ", ".join(f"{n} {what}" for n, what in ((t["trained"], "trained"), (t["read"], "read")) if n) or "no run"
    return f"  {t['page'].removesuffix('.ipynb'):<40} {t['wall']:5.0f} s   {runs}"


def main(args) -> int:
    import logging
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="      %(message)s")
    for noisy in ("traitlets", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    todo = PAGES
    if args.only is not None and not all(o.strip() for o in args.only):
        raise ConfigError(f"--only takes page names (prefixes, e.g. 01 paper/03), got {args.only}; "
                          f"pages: {[p[1].removesuffix('.ipynb') for p in PAGES]}")
    if args.only:
        todo = select(PAGES, args.only, args.profile)
        if not todo:
            raise ConfigError(f"no page matches {args.only}; pages: {[p[1].removesuffix('.ipynb') for p in PAGES]}")
    extra = {}
    for item in args.p or []:
        if len(item) != 2:
            raise ConfigError("-p takes a name and a value, e.g. -p steps 500")
        extra[item[0]] = _parse_value(item[1])
    if args.profile:
        extra["profile"] = args.profile
    for name in ("runs_dir", "data_dir"):  # relative to where the command runs, not to each page's folder
        if isinstance(extra.get(name), str) and extra[name]:
            extra[name] = str(Path(extra[name]).expanduser().absolute())
    if isinstance(extra.get("data_dir"), str) and not Path(extra["data_dir"]).is_dir():
        raise ConfigError(f"parameter 'data_dir': {extra['data_dir']} is not a folder; pass the folder that holds "
                          f"the datasets (-p data_dir PATH or DNNKNN_DATA)")
    from .profiles import Params
    for _, _, params in todo:  # a wrong parameter stops here, in one line, before any page runs
        P = Params.from_notebook(**{**params, **extra})
        if P.device.startswith("cuda"):  # the pages train here, unlike a grid submitted from a login node
            from .train import resolve_device
            resolve_device(P.device)
    total, times, numba_s, html_s = time.time(), [], 0.0, None
    if not args.no_execute:
        times, numba_s = run_pages(todo, extra, max(1, args.jobs), verbose=verbose)
    executed = time.time() - total
    if not args.no_build:
        t = time.time()
        index = build(verbose=verbose)
        html_s = time.time() - t
    if times:
        print(timing_table(times, numba_s, html_s, executed))
    if not args.no_build:
        print(f"book built in {time.time() - total:.0f} s: open {index}")
    return 0


def _train_eval_seconds(page: str, since: float, runs_dir: str | None = None) -> tuple[float, float, int]:
    """(training, evaluation) seconds of the runs that `page` trained (meta.json "page") after
    `since`, in the store the notebooks use (-p runs_dir, else ./runs or $DNNKNN_RUNS), and how
    many runs those were."""
    from .runs import default_store_dir
    root = ROOT / (Path(runs_dir).expanduser() if runs_dir else default_store_dir())  # an absolute path stays
    train = knn = 0.0
    count = 0
    for m in root.glob("*/meta.json"):
        if m.parent.name.startswith(".") or m.stat().st_mtime < since:  # .tmp-*: a run being written
            continue
        try:
            meta = json.loads(m.read_text())
            meta["wall_time_s"] + 0.0
        except (ValueError, KeyError, TypeError, OSError):  # a damaged record: the store reports it when read
            continue
        if meta.get("page") == page:
            knn += meta.get("eval_time_s", 0.0)
            train += meta["wall_time_s"] - meta.get("eval_time_s", 0.0)
            count += 1
    return train, knn, count


def timing_table(times: list[dict], numba_s: float, html_s: float | None, executed: float | None = None) -> str:
    """Where `make book`'s time went, per page: the kernel's start and papermill (the page's wall
    time less its cells), training and evaluation (embedding and k-NN) of the runs it trained,
    and the rest of its cells (reading runs, waiting for a run another page trains, figures)."""
    lines = ["", "| page | total (s) | kernel start + papermill | training | evaluation | other cells |",
             "|---|---|---|---|---|---|"]
    for t in times:
        other = t["cells"] - t["train"] - t["knn"]
        lines.append(f"| {t['page']} | {t['wall']:.0f} | {t['wall'] - t['cells']:.0f} | {t['train']:.0f} | "
                     f"{t['knn']:.0f} | {other:.0f} |")
    sums = {k: sum(t[k] for t in times) for k in ("wall", "cells", "train", "knn")}
    lines.append(f"| all pages | {sums['wall']:.0f} | {sums['wall'] - sums['cells']:.0f} | {sums['train']:.0f} | "
                 f"{sums['knn']:.0f} | {sums['cells'] - sums['train'] - sums['knn']:.0f} |")
    lines.append(f"\nnumba kernels, compiled beside the first pages: {numba_s:.0f} s")
    if executed is not None:
        lines.append(f"all pages, run side by side: {executed:.0f} s of wall time")
    if html_s is not None:
        lines.append(f"HTML build (jupyter-book): {html_s:.0f} s")
    return "\n".join(lines)
