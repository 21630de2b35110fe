"""One process computes a run: a lock file per run key, holding the holder's PID, host and a nonce
(not the `filelock` package: the book's list of choices says why)."""
from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import sys
import time
from pathlib import Path

from . import atomic
from .errors import ConfigError


def identity() -> dict:
    """Where a PID means this process: the host, this boot of it, and the PID namespace (a container on the
    same host name has its own PIDs)."""
    def read(f, how):
        try:
            return how(f)
        except OSError:
            return None
    return {"host": socket.gethostname(),
            "boot": read("/proc/sys/kernel/random/boot_id", lambda f: Path(f).read_text().strip()),
            "pidns": read("/proc/self/ns/pid", os.readlink)}


class RunLock:
    """An O_EXCL lock file holding {pid, host, boot, pidns, nonce}, its time refreshed every `beat`
    seconds while held. A second process waits for the holder (one line saying so) or, with wait=False,
    stops with that line. A lock is stale, and taken over, when its holder is a dead process here (the
    same host, boot and PID namespace: elsewhere a PID says nothing) or when it has not been refreshed
    for `stale_after` seconds (a job killed on another node; a time in the future, or a lock that is not
    a regular file, counts from when it was first seen). The takeover renames the stale file first, so of
    several waiters exactly one takes it. Only the holder, by its nonce, ever removes or refreshes it."""

    def __init__(self, path: Path, label: str, wait: bool = True, poll: float = 1.0, beat: float = 30.0,
                 stale_after: float = 600.0):
        self.path, self.label, self.wait, self.poll = Path(path), label, wait, poll
        self.beat, self.stale_after = beat, stale_after
        self._seen = {}  # (mtime or kind) -> when this process first saw it, for clocks it cannot trust

    def _read(self) -> tuple[dict | None, float]:
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return None, 0.0
        if not stat.S_ISREG(st.st_mode):  # a folder, a FIFO, a symlink: never opened (a FIFO would block)
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            return {"irregular": kind}, self._first_seen(kind)
        try:
            return json.loads(self.path.read_text() or "{}"), st.st_mtime
        except FileNotFoundError:
            return None, 0.0
        except (OSError, ValueError):  # being written, or damaged: stale once its file is as old as a silent lock's
            return {}, st.st_mtime

    def _first_seen(self, what) -> float:
        return self._seen.setdefault(what, time.time())

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
        now = time.time()
        if mtime > now + 60:  # a time in the future: from another host's clock, or set by hand
            mtime = self._first_seen(("future", mtime))
        if now - mtime > self.stale_after:
            return True
        pid, here = holder.get("pid"), identity()
        return (all(holder.get(k) == here[k] and here[k] is not None for k in ("host", "boot", "pidns"))
                and isinstance(pid, int) and not self._alive(pid))

    def _take_over(self, holder: dict) -> bool:
        """Move the stale lock aside; True if it was the one judged stale (else put it back)."""
        aside = self.path.with_name(f"{self.path.name}.stale-{secrets.token_hex(6)}")  # unique across hosts
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False  # another waiter moved it first
        if "irregular" in holder and not stat.S_ISREG(aside.lstat().st_mode):
            atomic.remove(aside)
            print(f"taking over the lock of {self.label}: {self.path} was {holder['irregular']}, not a lock file, "
                  f"for {self.stale_after:.0f} s", file=sys.stderr, flush=True)
            return True
        try:
            moved = json.loads(aside.read_text() or "{}")
        except (OSError, ValueError):
            moved = {}
        if moved != holder:  # a fresh lock was taken meanwhile (a regular file where we saw another): give it back
            try:
                os.link(aside, self.path)
            except OSError:  # another lock is there already, or the aside vanished
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        pid = holder.get("pid")
        who = ("its lock file names no holder and has not changed for the stale timeout" if pid is None else
               f"PID {pid} on {holder.get('host', '?')} is gone" if not self._silent(holder) and isinstance(pid, int)
               and not self._alive(pid) else f"PID {pid} on {holder.get('host', '?')}: not refreshed for "
               f"{self.stale_after:.0f} s")
        print(f"taking over the stale lock of {self.label} ({who})", file=sys.stderr, flush=True)
        return True

    def _silent(self, holder: dict) -> bool:
        here = identity()
        return not all(holder.get(k) == here[k] for k in ("host", "boot", "pidns"))

    def held(self) -> bool:
        """Whether the lock file is still this holder's (not taken over as stale meanwhile)."""
        try:
            return stat.S_ISREG(self.path.lstat().st_mode) and json.loads(self.path.read_text()).get("nonce") == self._me["nonce"]
        except (OSError, ValueError, AttributeError):
            return False

    def _heartbeat(self):
        while not self._stop.wait(self.beat):
            if self.held():
                try:
                    os.utime(self.path)
                except OSError:
                    pass

    def __enter__(self):
        import threading

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._me = {"pid": os.getpid(), **identity(), "nonce": secrets.token_hex(8)}
        said = False
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                holder, mtime = self._read()
                if holder is None:
                    continue
                if self._stale(holder, mtime):
                    self._take_over(holder)
                    continue
                what = (f"{self.path} is {holder['irregular']}, not a lock file; it is taken over once it has "
                        f"stayed so for {self.stale_after:.0f} s, or remove it" if "irregular" in holder else
                        f"{self.label} is being computed by PID {holder.get('pid', '?')} on {holder.get('host', '?')} "
                        f"(lock {self.path})")
                if not self.wait:
                    raise ConfigError(f"{what}; wait for it, or run again without --no-wait")
                if not said:
                    print(f"waiting: {what}", file=sys.stderr, flush=True)
                    said = True
                time.sleep(self.poll)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._me, f)
            self._stop = threading.Event()
            threading.Thread(target=self._heartbeat, daemon=True).start()
            return self

    def __exit__(self, *exc):
        self._stop.set()
        mine = self.held()
        if mine:  # moved aside first, then checked: a lock taken over in between is put back, not removed
            aside = self.path.with_name(f"{self.path.name}.release-{self._me['nonce']}")
            try:
                os.rename(self.path, aside)
                if json.loads(aside.read_text()).get("nonce") != self._me["nonce"]:
                    os.link(aside, self.path)
                    mine = False
            except (OSError, ValueError):
                pass
            aside.unlink(missing_ok=True)
        if not mine:
            print(f"warning: the lock of {self.label} was taken over while this process held it (it was silent "
                  f"for {self.stale_after:.0f} s); the new holder's lock is left in place", file=sys.stderr, flush=True)
        return False
