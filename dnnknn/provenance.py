"""What made a run and that its files are the ones written: the code version, the device's name, and
each run folder's manifest (size and SHA-256 of every file, checked on every read)."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

from . import __version__
from .errors import DnnKnnError

RUN_FILES = ("config.json", "meta.json", "measures.csv", "losses.csv", "predictions.npz")
MANIFEST = "manifest.json"


class DamagedRun(DnnKnnError):
    """A run folder whose files do not match its manifest."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path):
    files = {f: {"bytes": (folder / f).stat().st_size, "sha256": _sha256(folder / f)} for f in RUN_FILES}
    (folder / MANIFEST).write_text(json.dumps(files, indent=1))


def verify(folder: Path):
    """Raise DamagedRun naming the first file that is missing or differs from the manifest."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise DamagedRun(f"run {folder.name}: {MANIFEST} is missing") from None
    except (OSError, ValueError):
        raise DamagedRun(f"run {folder.name}: {MANIFEST} is unreadable") from None
    for f in RUN_FILES:
        path, want = folder / f, manifest.get(f) if isinstance(manifest, dict) else None
        if not (isinstance(want, dict) and isinstance(want.get("bytes"), int) and isinstance(want.get("sha256"), str)):
            raise DamagedRun(f"run {folder.name}: {MANIFEST} is damaged (no size and checksum for {f})")
        if not path.is_file():
            raise DamagedRun(f"run {folder.name}: {f} is missing")
        if path.stat().st_size != want["bytes"]:
            raise DamagedRun(f"run {folder.name}: {f} is damaged ({path.stat().st_size} bytes, "
                             f"{want['bytes']} expected)")
        if _sha256(path) != want["sha256"]:
            raise DamagedRun(f"run {folder.name}: {f} is damaged (its contents differ from the checksum "
                             f"in {MANIFEST})")


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
