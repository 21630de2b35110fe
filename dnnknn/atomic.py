"""Atomic writes: a file or a folder appears whole under its name, or not at all.

Temporary names come from `tempfile.mkstemp` / `mkdtemp` in the target's folder: created with
O_CREAT | O_EXCL (and O_NOFOLLOW), so a symlink or a file planted at a guessable name is never
followed or overwritten. The rename onto the final name replaces a symlink there, never its target.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

TMP_PREFIX = ".tmp-"  # readers skip names that start with it (and with ".")
OLD = "-old-"  # ...and an older copy set aside while its replacement is renamed in: .tmp-<name>-old-<random>
STALE_S = 3600.0  # a temporary file or folder untouched this long was left by a killed process


@contextlib.contextmanager
def open_temp(path: str | os.PathLike, mode: str = "wb", perms: int = 0o644):
    """A new temporary file beside `path`, open for writing; renamed onto `path` (with permissions
    `perms`) when the block ends, removed when it raises. The file object's `.name` is its path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            os.fchmod(f.fileno(), perms)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if type(e) in (OSError, IOError) and e.errno is not None and e.filename is None:  # a failed write names no file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_bytes(path: str | os.PathLike, data, perms: int = 0o644) -> Path:
    with open_temp(path, perms=perms) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def publish_dir(root: str | os.PathLike, name: str, fill) -> Path:
    """Write the folder root/name atomically: `fill(tmp)` writes into a new temporary folder beside
    it, which is renamed to root/name. An older copy is renamed aside first and removed last, so a
    kill at any point leaves either copy whole (the old one, aside, under a TMP_PREFIX name)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sweep(root)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{name}-", dir=root))
    try:
        fill(tmp)
        tmp.chmod(0o755)
        final = root / name
        aside = None
        if final.is_symlink() or final.exists():
            aside = root / f"{TMP_PREFIX}{name}{OLD}{secrets.token_hex(6)}"  # renamed to, never opened
            os.rename(final, aside)
            os.utime(aside, follow_symlinks=False)  # fresh: no sweep takes it for a killed writer's
        try:
            os.rename(tmp, final)
        except BaseException:
            if aside is not None:
                os.rename(aside, final)  # the old copy back under its name
            raise
        if aside is not None:
            remove(aside)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove(path: Path):
    """A file, a symlink (not its target) or a folder."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def sweep(folder: Path, older_than: float = STALE_S):
    """Remove the temporary files and folders in `folder` that a killed writer left behind; an old copy
    set aside by a writer killed before it renamed the new one in goes back under its name."""
    now = time.time()
    for p in folder.glob(f"{TMP_PREFIX}*"):
        try:
            name = p.name[len(TMP_PREFIX):].rsplit(OLD, 1)[0] if OLD in p.name else None
            if name and now - p.lstat().st_mtime > older_than and not (folder / name).exists():
                os.rename(p, folder / name)
            elif now - p.lstat().st_mtime > older_than:
                remove(p)
        except OSError as e:  # another process's, or already gone
            print(f"warning: could not remove the stale temporary {p} ({e.strerror})", file=sys.stderr)
