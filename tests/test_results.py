"""Compact records travel with the repository (results/) and give the same tables as the original run."""
import pandas as pd
import pytest

from dnnknn import RunConfig, RunStore
from dnnknn.profiles import RESULTS_DIR
from dnnknn.train import pred_key
from dnnknn.metrics import agreement
from dnnknn.runs import Run, export



def test_exported_record_gives_the_same_tables(tmp_path):
    cfg = RunConfig(dataset="mnist5k", model="mlp640", steps=10, eval_steps=(0, 10), limit=(500, 200),
                    ks=(1, 30), eval_train=True)
    original = RunStore(tmp_path / "store").get(cfg, progress=False)
    path = export(RunStore(tmp_path / "store"), original.key, tmp_path / "results")
    assert sorted(p.name for p in path.iterdir()) == sorted(["config.json", "meta.json", "measures.csv",
                                                               "losses.csv", "predictions.npz", "manifest.json"])
    shipped = RunStore(tmp_path / "fresh", extra=[tmp_path / "results"]).get(cfg, train=False)
    assert shipped.path == path
    for split in ("test", "train"):
        pd.testing.assert_frame_equal(shipped.table(split), original.table(split))


@pytest.mark.parametrize("path", sorted(p for p in RESULTS_DIR.glob("*") if p.is_dir()), ids=lambda p: p.name)
def test_committed_results_are_consistent(path):
    """Every committed record: its measures recompute from its predictions, and its key is its config's."""
    run = Run(path)
    assert RunStore().key(run.config) == run.key
    p = run.predictions()
    assert len(run.measures) > 0
    for r in run.measures.itertuples():
        knn = p[f"{r.step}/{r.split}/{r.layer}/{r.metric}/{r.k}/{r.pca}"]
        got = agreement(knn, p[pred_key(r.step, r.split)], p[f"labels/{r.split}"])
        for name in ("dnn_acc", "knn_acc", "MC", "ME", "P_SAME"):  # NaN only where NaN is right
            assert got[name] == pytest.approx(getattr(r, name), nan_ok=True), (r, name)
