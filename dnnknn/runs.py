"""The run store: each run's records saved once, atomically, keyed by its configuration.

Layout of a store (a folder: the `root` argument, else `$DNNKNN_RUNS`, else `./runs`):

    <root>/<key>/config.json       the resolved RunConfig
    <root>/<key>/meta.json         code version, device, wall time, dates
    <root>/<key>/measures.csv      one row per (step, split, layer, metric, k, pca)
    <root>/<key>/losses.csv        training loss and learning rate per step
    <root>/<key>/predictions.npz   every prediction the measures came from, and the labels
    <root>/.partial/<key>/ckpt.pt  checkpoint of a run in progress (resumed when asked again)

`key` hashes the resolved configuration and the library version. A finished run is written into
a temporary folder and renamed into place, so a folder named by a key is always complete.
Read-only stores (such as the repository's committed `results/`) can be searched as well.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .config import RunConfig
from .errors import ConfigError, DnnKnnError

RUN_FILES = ("config.json", "meta.json", "measures.csv", "losses.csv", "predictions.npz")


def default_store_dir() -> Path:
    return Path(os.environ.get("DNNKNN_RUNS") or "runs").expanduser()


def code_version() -> str:
    """Library version plus the git commit of the source tree (with '+dirty' when modified)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", str(here)], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{__version__}" + (f"+g{sha}" if sha else "") + ("+dirty" if dirty else "")


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


class Run:
    """A finished run read from a store: its config, provenance, measures and predictions."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config = RunConfig.from_dict(json.loads((self.path / "config.json").read_text()))
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.measures = pd.read_csv(self.path / "measures.csv")
        self.losses = pd.read_csv(self.path / "losses.csv")
        self._pred = None

    @property
    def key(self) -> str:
        return self.path.name

    def predictions(self) -> dict[str, np.ndarray]:
        if self._pred is None:
            with np.load(self.path / "predictions.npz") as z:
                self._pred = {k: z[k] for k in z.files}
        return self._pred

    def table(self, split="test", layer="embedding", metric=None, k=None, pca=0,
              me_if_undefined: float | None = None) -> pd.DataFrame:
        """Measures by step for one split (default: the run's first metric and k)."""
        m = self.measures
        metric = metric or self.config.metrics[0]
        k = k or (30 if 30 in self.config.ks else self.config.ks[0])
        t = m[(m.split == split) & (m.layer == layer) & (m.metric == metric) & (m.k == k) & (m.pca == pca)]
        t = t.sort_values("step").reset_index(drop=True)
        if me_if_undefined is not None:
            t = t.assign(ME=t.ME.fillna(me_if_undefined))
        return t

    def final(self, **kw) -> pd.Series:
        return self.table(**kw).iloc[-1]

    def provenance(self) -> str:
        c, m = self.config, self.meta
        return (f"{c.label()}; device {m['device_name']}; code {m['code_version']}; "
                f"{m['wall_time_s']:.0f} s; run {self.key}")

    def __repr__(self):
        return f"Run({self.config.label()!r}, key={self.key!r})"


class RunStore:
    """Finds, trains and saves runs. `extra` folders (e.g. committed `results/`) are read-only."""

    def __init__(self, root: str | os.PathLike | None = None, extra=()):
        self.root = Path(root).expanduser() if root else default_store_dir()
        self.extra = [Path(p) for p in extra]

    def key(self, cfg: RunConfig) -> str:
        return cfg.key(__version__)

    def find(self, cfg: RunConfig) -> Run | None:
        key = self.key(cfg)
        for folder in [self.root, *self.extra]:
            if all((folder / key / f).exists() for f in RUN_FILES):
                return Run(folder / key)
        return None

    def get(self, cfg: RunConfig, data_dir=None, progress: bool = True, train: bool = True) -> Run:
        """The run for `cfg`: from the store when there, else trained now (resuming from a
        checkpoint when one exists) and saved."""
        run = self.find(cfg)
        if run is not None:
            return run
        if not train:
            raise ConfigError(f"run {cfg.label()} ({self.key(cfg)}) is not in {self.root}; "
                              f"train it first (python -m dnnknn train ...)")
        return self.train(cfg, data_dir=data_dir, progress=progress)

    def train(self, cfg: RunConfig, data_dir=None, progress: bool = True) -> Run:
        from .data import load_dataset
        from .train import fit, resolve_device

        dev = resolve_device(cfg.device)
        rcfg = dataclasses.replace(cfg.resolve(), device=dev.type)  # as run; not in the key
        key = self.key(cfg)
        data = load_dataset(rcfg.dataset, data_dir, labels=rcfg.labels, label_seed=rcfg.label_seed,
                            limit=rcfg.limit)
        workdir = self.root / ".partial" / key
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            rec = fit(rcfg, data, workdir, progress=progress)
        except BaseException as e:
            if isinstance(e, DnnKnnError):  # bad input or divergence: nothing to resume
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        meta = {"key": key, "label": rcfg.label(), "code_version": code_version(),
                "library_version": __version__, "device": dev.type, "device_name": device_name(str(dev)),
                "wall_time_s": round(rec.wall, 2), "started": started,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dataset_repr": repr(data),
                "torch": __import__("torch").__version__}
        path = self._write(key, rcfg, meta, rec.rows, rec.losses, rec.arrays)
        shutil.rmtree(workdir, ignore_errors=True)
        return Run(path)

    def _write(self, key, cfg, meta, rows, losses, arrays) -> Path:
        def fill(tmp: Path):
            (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            pd.DataFrame(rows).to_csv(tmp / "measures.csv", index=False)
            pd.DataFrame(losses, columns=["step", "loss", "lr"]).to_csv(tmp / "losses.csv", index=False)
            np.savez_compressed(tmp / "predictions.npz", **arrays)

        return _publish(self.root, key, fill)

    def runs(self) -> list[Run]:
        out = []
        for folder in [self.root, *self.extra]:
            if folder.is_dir():
                out += [Run(p) for p in sorted(folder.iterdir())
                        if p.is_dir() and all((p / f).exists() for f in RUN_FILES)]
        return out


def export(store: RunStore, key: str, to: str | os.PathLike | None = None) -> Path:
    """Copy a finished run's compact records (no checkpoints) into `to` (default results/)."""
    src = store.root / key
    if not all((src / f).exists() for f in RUN_FILES):
        raise ConfigError(f"no finished run {key!r} in {store.root}; `python -m dnnknn export` lists them")
    dest_root = Path(to) if to else Path(__file__).resolve().parents[1] / "results"
    return _publish(dest_root, key, lambda tmp: [shutil.copy2(src / f, tmp / f) for f in RUN_FILES])


def _publish(root: Path, key: str, fill) -> Path:
    """Write a run folder atomically: `fill(tmp)` writes into a temporary folder beside it, which is
    then renamed to root/key (replacing an older copy), so a folder named by a key is always whole."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    tmp.chmod(0o755)
    try:
        fill(tmp)
        final = root / key
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
