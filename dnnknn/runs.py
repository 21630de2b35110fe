"""The run store: each run's records saved once, atomically, keyed by its configuration.

Layout of a store (a folder: the `root` argument, else `$DNNKNN_RUNS`, else `./runs`):

    <root>/<key>/config.json       the resolved RunConfig
    <root>/<key>/meta.json         code version, device, wall time, dates
    <root>/<key>/measures.csv      one row per (step, split, layer, metric, k, pca)
    <root>/<key>/losses.csv        training loss and learning rate per step
    <root>/<key>/predictions.npz   every prediction the measures came from, and the labels
    <root>/<key>/manifest.json     size and SHA-256 of each file above, written last
    <root>/.partial/<key>/ckpt.pt  checkpoint of a run in progress (resumed when asked again)
    <root>/.partial/<key>.lock     held (PID, host) while a process computes that run

`key` hashes what determines the run's numbers (the resolved configuration without the device,
an image folder's fingerprint) and the library version. A finished run is written into a
temporary folder and renamed into place; on reading, its files are checked against the manifest,
and a damaged run is reported in one line and treated as missing (so it is recomputed).
Read-only stores (such as the repository's committed `results/`) can be searched as well.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, atomic
from .config import RunConfig
from .errors import ConfigError, DnnKnnError, UnsafeCheckpoint
from .lock import RunLock
from .provenance import MANIFEST, RUN_FILES, DamagedRun, code_version, device_name, verify, write_manifest  # noqa: F401


COMMITTED = Path(__file__).resolve().parents[1] / "results"  # the repository's results/, written by `export` only


def default_store_dir() -> Path:
    return Path(os.environ.get("DNNKNN_RUNS") or "runs").expanduser()


MAX_ARRAY_MIB = 256.0  # the largest array a run's predictions.npz may unpack to (the paper's are under 1 MiB)


MAX_ARRAYS = 100_000  # arrays in one predictions.npz (a paper-profile run has a few hundred)


def _note_read(key: str):
    """Add a run read to $DNNKNN_RUNS_READ (one key a line), where `python -m dnnknn book` counts
    the runs each page read."""
    path = os.environ.get("DNNKNN_RUNS_READ")
    if path:
        with open(path, "a") as f:
            f.write(key + "\n")


def check_npz(path: Path, max_mib: float = MAX_ARRAY_MIB):
    """Every array in an npz file at most `max_mib`, by the size both the zip's directory and the array's
    own .npy header declare (np.load sizes the array from the header); nothing is loaded."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if len(infos) > MAX_ARRAYS:
                raise DamagedRun(f"{path} holds {len(infos):,} arrays, more than a run's record ({MAX_ARRAYS:,})")
            big = []
            for i in infos:
                with z.open(i) as f:
                    version = np.lib.format.read_magic(f)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0)(f)
                size = max(i.file_size, int(np.prod(shape, dtype=object)) * dtype.itemsize)
                if size > max_mib * 2**20:
                    big.append((i.filename, size))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DamagedRun(f"{path} is not an npz file of arrays ({type(e).__name__}: {' '.join(str(e).split())[:80]})") from None
    if big:
        raise DamagedRun(f"{path}: array {big[0][0]} unpacks to {big[0][1] / 2**20:,.0f} MiB, over the "
                         f"{max_mib:g} MiB a run's array may hold; it is not a run's record")


class Run:
    """A finished run read from a store: its config, provenance, measures and predictions."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        verify(self.path)
        try:
            self.config = RunConfig.from_record(json.loads((self.path / "config.json").read_text()))
            self.meta = json.loads((self.path / "meta.json").read_text())
            self.measures = pd.read_csv(self.path / "measures.csv")
            self.losses = pd.read_csv(self.path / "losses.csv")
        except (ValueError, KeyError, TypeError, DnnKnnError) as e:  # intact bytes, unusable content
            raise DamagedRun(f"run {self.path.name}: cannot be read ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:120]})") from None
        self._pred = None

    @property
    def key(self) -> str:
        return self.path.name

    def predictions(self) -> dict[str, np.ndarray]:
        if self._pred is None:
            path = self.path / "predictions.npz"
            check_npz(path)
            try:
                with np.load(path) as z:  # allow_pickle=False, numpy's default: an object array is refused
                    self._pred = {k: z[k] for k in z.files}
            except ValueError as e:
                raise DamagedRun(f"run {self.key}: predictions.npz holds something other than numbers "
                                 f"({' '.join(str(e).split())[:80]}); it is never unpickled: train the run again") from None
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
        """The last evaluation's row of `table(**kw)`."""
        t = self.table(**kw)
        if t.empty:
            c = self.config
            raise ConfigError(f"run {self.key} has no rows for {kw or 'its defaults'} (it has splits "
                              f"{sorted(set(self.measures.split))}, metrics {list(c.metrics)}, k {list(c.ks)}"
                              f"{'' if c.eval_train else '; the training set was not evaluated: train with eval_train=True (--eval-train) for it'})")
        return t.iloc[-1]

    def at(self, step: int | None = None, **kw) -> pd.Series:
        """`table(**kw)`'s row at `step` (None: the last evaluation)."""
        if step is None:
            return self.final(**kw)
        t = self.table(**kw)
        if not (t.step == step).any():
            raise ConfigError(f"run {self.key} has no {kw.get('split', 'test')} evaluation at step {step}; "
                              f"it has {list(t.step)}")
        return t[t.step == step].iloc[0]

    def last_step(self, **equal) -> pd.DataFrame:
        """Every measure of the last evaluation, filtered by column values (split="test", ...)."""
        m = self.measures
        sel = m.step == m.step.max()
        for col, v in equal.items():
            sel &= m[col] == v
        return m[sel]

    def __repr__(self):
        return f"Run({self.config.label()!r}, key={self.key!r})"


class RunStore:
    """Finds, trains and saves runs. `extra` folders (e.g. committed `results/`) are read-only."""

    def __init__(self, root: str | os.PathLike | None = None, extra=()):
        if isinstance(root, str) and not root.strip():
            raise ConfigError("the run store's folder is empty (--runs-dir \"\"); give a folder, or leave the "
                              "option out for $DNNKNN_RUNS or ./runs")
        self.root = Path(root).expanduser() if root else default_store_dir()
        self.extra = [Path(p) for p in extra]

    def key(self, cfg: RunConfig) -> str:
        return cfg.key(__version__)

    def find(self, cfg: RunConfig, quiet: bool = False) -> Run | None:
        """The finished run for `cfg`, verified against its manifest; a damaged copy is reported
        in one line (unless quiet) and skipped (a later copy, or a new run, takes its place)."""
        key = self.key(_as_config(cfg))
        for folder in [self.root, *self.extra]:
            if (folder / key).is_dir():
                try:
                    run = self._open(folder / key)
                    _note_read(key)
                    return run
                except DamagedRun as e:
                    if not quiet:
                        print(f"warning: {e} in {folder}; it will be recomputed", file=sys.stderr, flush=True)
        return None

    def busy(self, cfg: RunConfig) -> bool:
        """Whether a process (this machine's or another's) holds the lock of `cfg`'s run: training it now."""
        return (self.root / ".partial" / f"{self.key(_as_config(cfg))}.lock").exists()

    def _open(self, folder: Path) -> Run:
        """The run in `folder`, checked against its manifest and against its own key: a config.json
        that describes another run than the folder's name (edited, or the folder renamed) is damage."""
        run = Run(folder)
        if self.key(run.config) != folder.name:
            raise DamagedRun(f"run {folder.name}: its config.json describes another run (key "
                             f"{self.key(run.config)}, under library version {__version__}): edited, or the "
                             f"folder renamed")
        return run

    def get(self, cfg: RunConfig, data_dir=None, progress: bool = True, train: bool = True) -> Run:
        """The run for `cfg`: from the store when there, else trained now (resuming from a
        checkpoint when one exists) and saved."""
        cfg = _as_config(cfg)
        run = self.find(cfg)
        if run is not None:
            return run
        if not train:
            raise ConfigError(f"run {cfg.label()} ({self.key(cfg)}) is not in {self.root}; "
                              f"train it first (python -m dnnknn train ...)")
        return self.train(cfg, data_dir=data_dir, progress=progress)

    def train(self, cfg: RunConfig, data_dir=None, progress: bool = True, wait: bool = True) -> Run:
        """Train `cfg` into the store. While one process computes a run it holds a lock; another
        asking for the same run waits for it (or, with wait=False, stops with one line)."""
        from .data import load_dataset
        from .train import check_fits, resolve_device

        cfg = _as_config(cfg)
        dev = resolve_device(cfg.device)
        rcfg = dataclasses.replace(cfg.resolve(), device=str(dev))  # as run; not in the key
        key = self.key(cfg)
        self._check_writable(key)  # before the data is read or anything trained
        data = load_dataset(rcfg.dataset, data_dir, labels=rcfg.labels, label_seed=rcfg.label_seed,
                            limit=rcfg.limit, pixels=rcfg.pixels)
        check_fits(rcfg, len(data.y_train))  # before anything is written
        with RunLock(self.root / ".partial" / f"{key}.lock", rcfg.label(), wait=wait) as lock:
            run = self.find(cfg, quiet=True)  # finished by the process we waited for
            return run if run is not None else self._train_locked(rcfg, key, dev, data, progress, lock)

    def _check_writable(self, key: str):
        """The store can take this run: its folder can be created and written, and nothing that is
        not a run folder sits where the run will go."""
        where = self.root / key
        if self.root.resolve() == COMMITTED.resolve():
            raise ConfigError(f"{self.root} holds the committed runs, which only `export` writes: train into a run "
                              f"store (--runs-dir elsewhere, default ./runs), then `python -m dnnknn export KEY`")
        if where.exists() and not where.is_dir():
            raise ConfigError(f"{where} is a file where the run's folder should go; move it away or use "
                              f"another --runs-dir")
        p = self.root.absolute()
        while not p.exists() and p != p.parent:  # the deepest folder that exists: where it will be made
            p = p.parent
        why = (f"{p} is a file" if not p.is_dir() else f"{p} is not writable"
               if not os.access(p, os.W_OK | os.X_OK) else None)
        if why:
            raise ConfigError(f"the run store {self.root} cannot be written ({why}); pass a writable folder "
                              f"with --runs-dir or DNNKNN_RUNS")

    def _train_locked(self, rcfg, key, dev, data, progress, lock=None) -> Run:
        from .train import fit

        workdir = self.root / ".partial" / key
        taken_up = self._adopt_unfinished(key, workdir)
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        version = code_version()  # the code that trains it, read before the tree can change
        try:
            rec = fit(rcfg, data, workdir, progress=progress)
        except BaseException as e:
            if isinstance(e, DnnKnnError) and not isinstance(e, UnsafeCheckpoint) and (lock is None or lock.held()):
                shutil.rmtree(workdir, ignore_errors=True)  # bad input or divergence: nothing to resume
            raise
        meta = {"key": key, "label": rcfg.label(), "code_version": version,
                "library_version": __version__, "device": dev.type, "device_name": device_name(str(dev)),
                "wall_time_s": round(rec.wall, 2), "eval_time_s": round(rec.eval_wall, 2), "started": started,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dataset_repr": repr(data),
                "torch": __import__("torch").__version__, "page": os.environ.get("DNNKNN_PAGE")}
        if taken_up:  # its first steps ran elsewhere: what their export recorded
            meta["resumed_from"] = taken_up
        path = self._write(key, rcfg, meta, rec.rows, rec.losses, rec.arrays)
        if lock is None or lock.held():  # else its checkpoints are a new holder's now
            shutil.rmtree(workdir, ignore_errors=True)
        return Run(path)

    def _adopt_unfinished(self, key: str, workdir: Path) -> dict | None:
        """Without a checkpoint of its own, the run resumes from one exported unfinished
        (`export_unfinished`: results/unfinished/<key>/, or under a read-only folder of this store),
        copied into a private folder of this store; returns what the export recorded of it."""
        if (workdir / "ckpt.pt").exists() or (workdir.exists() and workdir.stat().st_uid != os.getuid()):
            return None  # its own checkpoint, or a folder `fit` refuses (UnsafeCheckpoint)
        for folder in dict.fromkeys([*self.extra, COMMITTED]):
            src = folder / UNFINISHED / key
            if not (src / "ckpt.pt").exists():
                continue
            try:
                info = json.loads((src / "unfinished.json").read_text())
            except (OSError, ValueError):
                info = None
            why = ("is a symlink" if (src / "ckpt.pt").is_symlink() or src.is_symlink() else
                   "has no readable unfinished.json" if not isinstance(info, dict) else
                   f"is of run {info.get('key')!r}" if info.get("key") != key else None)
            if why:
                print(f"warning: not resuming from {src}: it {why}; the run starts from step 0", file=sys.stderr,
                      flush=True)
                return None
            workdir.mkdir(parents=True, exist_ok=True)
            workdir.chmod(0o700)
            atomic.write_bytes(workdir / "ckpt.pt", (src / "ckpt.pt").read_bytes(), perms=0o600)
            print(f"taking up the unfinished run {key} from {src} (step {info.get('step')})", flush=True)
            return {k: info.get(k) for k in ("step", "wall_time_s", "code_version", "device_name", "exported")}
        return None

    def _write(self, key, cfg, meta, rows, losses, arrays) -> Path:
        def fill(tmp: Path):
            (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            pd.DataFrame(rows).to_csv(tmp / "measures.csv", index=False)
            pd.DataFrame(losses, columns=["step", "loss", "lr"]).to_csv(tmp / "losses.csv", index=False)
            np.savez_compressed(tmp / "predictions.npz", **arrays)
            write_manifest(tmp)

        return atomic.publish_dir(self.root, key, fill)

    def runs(self, report=None) -> list[Run]:
        """Every intact finished run; each damaged one is passed to `report` (default: one
        warning line) and left out."""
        out = []
        for folder in [self.root, *self.extra]:
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                if p.is_dir() and not p.name.startswith(".") and (p / "config.json").exists():
                    try:
                        out.append(Run(p))
                    except DamagedRun as e:
                        (report or (lambda e: print(f"warning: {e}; skipped", file=sys.stderr)))(e)
        return out


def export(store: RunStore, key: str, to: str | os.PathLike | None = None) -> Path:
    """Copy a finished run's compact records (no checkpoints) into `to` (default results/),
    after checking them against their manifest (a damaged run is refused)."""
    _check_key(key)
    src = store.root / key
    if not src.is_dir():
        raise ConfigError(f"no finished run {key!r} in {store.root}; `python -m dnnknn export` lists them")
    try:
        store._open(src)
    except DamagedRun as e:
        raise DamagedRun(f"{e}: not exported; train it again (the same command) to recompute it") from None
    dest_root = Path(to) if to else COMMITTED
    out = atomic.publish_dir(dest_root, key, lambda tmp: [shutil.copy2(src / f, tmp / f) for f in (*RUN_FILES, MANIFEST)])
    shutil.rmtree(dest_root / UNFINISHED / key, ignore_errors=True)  # its checkpoint is no longer needed
    return out


UNFINISHED = "unfinished"  # results/unfinished/<key>/: checkpoints of runs that another machine takes up


def export_unfinished(store: RunStore, key: str, to: str | os.PathLike | None = None) -> Path:
    """Copy an unfinished run's last checkpoint (tensors and plain data, read with weights_only)
    and what it is into `to`/unfinished/<key>/ (default results/), where a store that reads `to`
    resumes it (`RunStore.train`); the finished run's `export` removes it."""
    from .train import load_checkpoint

    _check_key(key)
    ckpt = store.root / ".partial" / key / "ckpt.pt"
    if not ckpt.is_file() or ckpt.is_symlink():
        raise ConfigError(f"no checkpoint of an unfinished run {key!r} in {store.root / '.partial'}; "
                          f"`python -m dnnknn export --unfinished` lists them")
    data = ckpt.read_bytes()  # one snapshot: a training run may write a newer checkpoint meanwhile

    def fill(tmp: Path):
        (tmp / "ckpt.pt").write_bytes(data)
        try:  # the copy itself is what is checked and described
            ck = load_checkpoint(tmp / "ckpt.pt", "cpu")
            step, wall = int(ck["step"]), float(ck["wall"])
        except Exception as e:  # noqa: BLE001 - any unreadable file: refused, never exported
            raise DamagedRun(f"the checkpoint {ckpt} cannot be read ({type(e).__name__}); not exported") from None
        info = {"key": key, "step": step, "wall_time_s": round(wall, 1), "code_version": code_version(),
                "device_name": device_name("cpu"), "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / "unfinished.json").write_text(json.dumps(info, indent=1))

    return atomic.publish_dir((Path(to) if to else COMMITTED) / UNFINISHED, key, fill)


def unfinished(store: RunStore) -> list[tuple[str, int]]:
    """(key, step) of each unfinished run's checkpoint in the store, for `export --unfinished`."""
    from .train import load_checkpoint

    out = []
    for ckpt in sorted((store.root / ".partial").glob("*/ckpt.pt")):
        try:
            out.append((ckpt.parent.name, int(load_checkpoint(ckpt, "cpu")["step"])))
        except Exception:  # noqa: BLE001 - being written, or damaged: not listed
            continue
    return out


def _check_key(key):
    if not (isinstance(key, str) and len(key) == 16 and all(c in "0123456789abcdef" for c in key)):
        raise ConfigError(f"{key!r} is not a run key (16 hex digits, a folder name in the store); "
                          f"`python -m dnnknn export` lists them")


def _as_config(cfg) -> RunConfig:
    if not isinstance(cfg, RunConfig):
        raise ConfigError(f"a run is described by a RunConfig, got {type(cfg).__name__} {cfg!r}; e.g. "
                          f"RunConfig(model='mlp640', dataset='mnist5k')")
    return cfg
