"""What a shared run store can hold cannot run code or overwrite a file (issue 34's severe cases)."""
import os
import pickle

import numpy as np
import pytest
import torch

from dnnknn import RunConfig, RunStore, atomic
from dnnknn.errors import UnsafeCheckpoint

TINY = dict(dataset="mnist5k", model="mlp640", steps=6, eval_steps=(0, 6), limit=(300, 100), ks=(1, 5))


class Payload:  # unpickling it calls os.system: what a crafted checkpoint would do
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return RunStore(tmp_path_factory.mktemp("clean")).get(RunConfig(**TINY), progress=False)


def _partial(store, cfg):
    folder = store.root / ".partial" / store.key(cfg)
    folder.mkdir(parents=True)
    return folder


@pytest.mark.parametrize("inside", [False, True], ids=["payload alone", "payload inside a genuine checkpoint"])
def test_a_crafted_checkpoint_runs_nothing_and_the_run_trains_from_scratch(tmp_path, capsys, clean, inside):
    store, cfg = RunStore(tmp_path / "s"), RunConfig(**TINY)
    marker = tmp_path / "payload-ran"
    folder = _partial(store, cfg)
    if inside:  # a genuine checkpoint of this run at step 3, with the payload as an extra key
        stop = RunConfig(**{**TINY, "steps": 3, "eval_steps": (0, 3)})
        from dnnknn.train import fit
        from dnnknn.data import load_dataset
        fit(stop.resolve(), load_dataset("mnist5k", limit=(300, 100)), tmp_path / "w", progress=False)
        ck = torch.load(tmp_path / "w" / "ckpt.pt", weights_only=True)
        torch.save({**ck, "extra": Payload(marker)}, folder / "ckpt.pt")
    else:
        (folder / "ckpt.pt").write_bytes(pickle.dumps(Payload(marker)))
    run = store.get(cfg, progress=False)
    err = capsys.readouterr().err
    assert not marker.exists()  # nothing ran
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "cannot be read" in warnings[0] and "from step 0" in warnings[0], err
    assert run.measures.equals(clean.measures)  # trained from scratch: the numbers of a clean run


def test_a_symlink_at_a_temporary_name_is_never_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    store, cfg = RunStore(tmp_path / "s"), RunConfig(**TINY)
    folder = _partial(store, cfg)
    for name in ("ckpt.tmp", "ckpt.pt.tmp", ".tmp-ckpt.pt"):  # the names a writer could have used
        (folder / name).symlink_to(victim)
    (store.root / f".tmp-{store.key(cfg)}").symlink_to(victim)
    store.get(cfg, progress=False)  # ckpt.tmp: the name this store once used; the others: names a writer might
    assert victim.read_text() == "precious"
    (tmp_path / "link").symlink_to(victim)  # a symlink at the final name is replaced, not followed
    atomic.write_text(tmp_path / "link", "new")
    assert victim.read_text() == "precious" and not (tmp_path / "link").is_symlink()
    (tmp_path / "k").symlink_to(tmp_path / "victim-folder", target_is_directory=True)
    atomic.publish_dir(tmp_path, "k", lambda d: (d / "f").write_text("1"))  # a run folder's name too
    assert (tmp_path / "k").is_dir() and not (tmp_path / "k").is_symlink() and not (tmp_path / "victim-folder").exists()


def test_a_symlinked_checkpoint_is_refused_in_one_line(tmp_path):
    store, cfg = RunStore(tmp_path / "s"), RunConfig(**TINY)
    folder = _partial(store, cfg)
    (tmp_path / "elsewhere.pt").write_bytes(b"x")
    (folder / "ckpt.pt").symlink_to(tmp_path / "elsewhere.pt")
    with pytest.raises(UnsafeCheckpoint, match="is a symlink; remove"):
        store.get(cfg, progress=False)


def test_a_checkpoint_others_can_write_or_own_is_refused(tmp_path):
    store, cfg = RunStore(tmp_path / "s"), RunConfig(**TINY)
    folder = _partial(store, cfg)
    ck = folder / "ckpt.pt"
    ck.write_bytes(b"x")
    ck.chmod(0o666)
    with pytest.raises(UnsafeCheckpoint, match="can be written by other users"):
        store.get(cfg, progress=False)
    ck.chmod(0o600)
    if os.getuid() == 0:  # only root can give a file away
        os.chown(ck, 12345, -1)
        with pytest.raises(UnsafeCheckpoint, match="belongs to user id 12345"):
            store.get(cfg, progress=False)


def test_a_checkpoint_holds_tensors_and_plain_data_only(tmp_path):
    from dnnknn.train import fit
    from dnnknn.data import load_dataset
    fit(RunConfig(**TINY).resolve(), load_dataset("mnist5k", limit=(300, 100)), tmp_path, progress=False)
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # no allowed globals: it loads, so it holds none
    assert set(ck) == {"model", "opt", "records", "step", "wall"} and ck["step"] == 6
    assert (tmp_path / "ckpt.pt").stat().st_mode & 0o077 == 0 and (tmp_path.stat().st_mode & 0o077) == 0


def test_an_npz_header_that_declares_a_huge_array_is_refused(tmp_path):
    from dnnknn.runs import DamagedRun, check_npz
    import io
    import zipfile
    np.savez(tmp_path / "p.npz", a=np.zeros(4, np.int64))
    header = np.lib.format.header_data_from_array_1_0(np.zeros(4, np.int64))
    header["shape"] = (2**30,)  # what np.load would allocate: 8 GiB, from a file of a few bytes
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as z:
        z.writestr("a.npy", buf.getvalue() + bytes(32))
    check_npz(tmp_path / "p.npz")
    with pytest.raises(DamagedRun, match="unpacks to"):
        check_npz(tmp_path / "big.npz")
