"""One process computes a run: a lock file per run key, holding the holder's PID and host.

Not the `filelock` package, though its `SoftFileLease` (3.30+; 4.3.1 comes with torch here) also
records PID and host, refreshes a heartbeat and takes over stale locks: it judges a lease expired
only after a contender has watched it unchanged for the whole lease on its own clock, so every
process that arrives after a job died on another node waits the full lease (10 minutes here),
where this lock reads the file's age and takes over at once; and an empty lock file (its writer
killed between creating and writing it) is never taken over there (read as an older release's
holder), where here it is stale after the same timeout as a silent lock. It would also make an
unpinned transitive dependency a pinned one for a 100-line class. (Read in filelock 4.3.1.)
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import ConfigError


class RunLock:
    """An O_EXCL lock file holding {pid, host}, its time refreshed every `beat` seconds while held.
    A second process waits for the holder (one line saying so) or, with wait=False, stops with that
    line. A lock is stale, and taken over, when its holder is a dead process on this host or when it
    has not been refreshed for `stale_after` seconds (a job killed on another node); the takeover
    renames the stale file first, so of several waiters exactly one takes it."""

    def __init__(self, path: Path, label: str, wait: bool = True, poll: float = 1.0, beat: float = 30.0,
                 stale_after: float = 600.0):
        self.path, self.label, self.wait, self.poll = Path(path), label, wait, poll
        self.beat, self.stale_after = beat, stale_after

    def _read(self) -> tuple[dict | None, float]:
        try:
            return json.loads(self.path.read_text() or "{}"), self.path.stat().st_mtime
        except FileNotFoundError:
            return None, 0.0
        except OSError:
            return {}, time.time()
        except ValueError:  # being written, or damaged: stale once its file is as old as a silent lock's
            try:
                return {}, self.path.stat().st_mtime
            except OSError:
                return None, 0.0

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _stale(self, holder: dict, mtime: float) -> bool:
        if time.time() - mtime > self.stale_after:
            return True
        pid = holder.get("pid")
        return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not self._alive(pid)

    def _take_over(self, holder: dict) -> bool:
        """Move the stale lock aside; True if it was the one judged stale (else put it back)."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False  # another waiter moved it first
        try:
            moved = json.loads(aside.read_text() or "{}")
        except (OSError, ValueError):
            moved = {}
        if moved != holder:  # a fresh lock was taken meanwhile: give it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        who = (f"PID {holder['pid']} on {holder.get('host', '?')} is gone" if holder.get("pid") is not None
               else "its lock file names no holder and has not changed for the stale timeout")
        print(f"taking over the stale lock of {self.label} ({who})", file=sys.stderr, flush=True)
        return True

    def _heartbeat(self):
        while not self._stop.wait(self.beat):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def __enter__(self):
        import threading

        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        said = False
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder, mtime = self._read()
                if holder is None:
                    continue
                if self._stale(holder, mtime):
                    self._take_over(holder)
                    continue
                line = (f"{self.label} is being computed by PID {holder.get('pid', '?')} on "
                        f"{holder.get('host', '?')} (lock {self.path})")
                if not self.wait:
                    raise ConfigError(f"{line}; wait for it, or run again without --no-wait")
                if not said:
                    print(f"waiting: {line}", file=sys.stderr, flush=True)
                    said = True
                time.sleep(self.poll)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._stop = threading.Event()
            threading.Thread(target=self._heartbeat, daemon=True).start()
            return self

    def __exit__(self, *exc):
        self._stop.set()
        self.path.unlink(missing_ok=True)
        return False
