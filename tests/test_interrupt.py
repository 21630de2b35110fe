"""Ctrl-C while the book executes: one line, exit 130, the committed pages as they were and no
temporary page left. The book runs in a copy of the repository (it writes into book/), and the
interrupt is sent once the page is training (a line of its log), never after a sleep."""
import os
import signal
import subprocess
import sys
import threading

from .conftest import copy_tree, run_cli


def _wait_for(proc, needle: str, timeout: float) -> tuple[bool, list[str], threading.Thread]:
    """Read the process's stderr (its log) until a line holds `needle`; keep reading after, to the
    end of the stream (join the thread returned before reading the last lines)."""
    seen, lines = threading.Event(), []

    def reader():
        for line in proc.stderr:
            lines.append(line)
            if needle in line:
                seen.set()
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    return seen.wait(timeout), lines, thread


def _wait_in_file(path, needle: str, timeout: float) -> bool:
    """Whether `needle` appears in the file within `timeout` seconds (read as it grows)."""
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and needle in path.read_text(errors="replace"):
            return True
        time.sleep(0.2)  # polling the page's log for the line, not a guess at how long it takes
    return False


def test_ctrl_c_during_the_book(tmp_path):
    tree = tmp_path / "repo"
    copy_tree(tree, numba_cache=True)  # the page starts once the k-NN kernels are compiled: with them, at once
    page = tree / "book" / "01_knn_during_training.ipynb"
    before = page.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(tree), "DNNKNN_RUNS": str(tmp_path / "runs"), "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "dnnknn", "book", "--only", "01", "--no-build", "--jobs", "1",
           "-p", "models", '["mlp640"]', "-p", "steps", "5000", "-p", "eval_every", "1000"]
    # its own session: the signal goes to the driver's process group, as a terminal's Ctrl-C does.
    # SIGINT at its default, as in a terminal: a suite started in the background (`make test &`,
    # nohup) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = tree / "_build" / "logs" / "01_knn_during_training.log"  # the page's output goes to its log
    try:
        _, lines, reader = _wait_for(proc, "interrupted:", timeout=0)  # collects the driver's stderr
        started = _wait_in_file(log, "training mlp640 on mnist5k", timeout=600)
        assert started, ("".join(lines)[-2000:], log.read_text()[-2000:] if log.exists() else "no log")
        assert list((tree / "book").glob(".tmp-*.ipynb"))  # the page is being written
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=300)
        reader.join(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    after = "".join(lines)  # the driver's terminal output: its first line, then the interruption
    assert proc.returncode == 130, (proc.returncode, after[-3000:])
    assert "Traceback" not in after and "zmq" not in after.lower() and "KeyboardInterrupt" not in after, after[-3000:]
    assert [ln for ln in after.splitlines() if ln.strip()][-1] == \
        "interrupted: the pages that had not finished were left as they were"
    assert page.read_bytes() == before
    assert not list((tree / "book").rglob(".tmp-*"))


def test_a_full_disk_is_one_line_and_loses_nothing(tmp_path):
    """Files may not grow past 1 MiB (the shell's `ulimit -f 1024`): the first checkpoint cannot be
    written. One line, exit 2, nothing published; the same command with room then trains the run."""
    import resource
    cmd = [sys.executable, "-m", "dnnknn", "train", "--no-progress", "--steps", "6", "--eval-every", "3",
           "--limit", "300", "100", "--k", "1", "5", "--device", "cpu"]
    env = {**os.environ, "DNNKNN_RUNS": str(tmp_path / "runs")}

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    full = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, preexec_fn=small_files)
    lines = [ln for ln in full.stderr.splitlines() if ln.strip()]
    assert full.returncode == 2 and len(lines) == 1, full.stderr[-2000:]
    assert lines[0].startswith("error: File too large (") and "nothing unfinished was published" in lines[0]
    assert "ckpt" in lines[0] and str(tmp_path / "runs") in lines[0]  # names the file
    assert not [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    room = run_cli(cmd[3:], env={"DNNKNN_RUNS": tmp_path / "runs"})  # the same command, in this process
    assert room.returncode == 0 and "records:" in room.stdout, room.stderr[-2000:]
