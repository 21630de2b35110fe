import numpy as np
import pytest
from sklearn.decomposition import PCA as SkPCA
from sklearn.neighbors import KNeighborsClassifier

from dnnknn.errors import ConfigError
from dnnknn.knn import PCA, KNNClassifier, search, vote


def _data(n=1500, m=333, d=37, c=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, c, n),
            rng.standard_normal((m, d)).astype(np.float32))


@pytest.mark.parametrize("metric,p", [("l1", 1), ("l2", 2)])
def test_predictions_equal_sklearn(metric, p):
    x, y, q = _data()
    ks = (1, 2, 5, 30, 150)
    mine = KNNClassifier(metric=metric).fit(x, y).predict_many(q, ks=ks)
    fused = KNNClassifier(metric=metric).fit(x, y).predict_many(q, ks=ks, metrics=("l1", "l2"))
    for k in ks:
        sk = KNeighborsClassifier(n_neighbors=k, p=p, algorithm="brute").fit(x, y)
        ref = sk.predict(q)
        np.testing.assert_array_equal(mine[(metric, k)], ref)
        np.testing.assert_array_equal(fused[(metric, k)], ref)
        # the authors' rule: arg-max of predict_proba (ties to the lowest class)
        np.testing.assert_array_equal(mine[(metric, k)], sk.predict_proba(q).argmax(1))


@pytest.mark.parametrize("metric,p", [("l1", 1), ("l2", 2)])
def test_neighbours_and_distances_equal_sklearn(metric, p):
    x, y, q = _data(n=800, m=97, d=640, seed=1)
    d_ref, i_ref = KNeighborsClassifier(n_neighbors=20, p=p, algorithm="brute").fit(x, y).kneighbors(q)
    for chunk in (None, 8, 40):  # chunking must not change anything
        d, i = search(q, x, 20, metric, chunk=chunk)[metric]
        np.testing.assert_array_equal(i, i_ref)
        np.testing.assert_allclose(d, d_ref, rtol=1e-5)


def _brute64(q, x, metric):
    q, x = q.astype(np.float64), x.astype(np.float64)
    if metric == "l1":
        return np.abs(q[:, None] - x[None]).sum(-1)
    return np.sqrt(((q[:, None] - x[None]) ** 2).sum(-1))


@pytest.fixture
def dense_calls(monkeypatch):
    """Counts the rows that went the dense way (small reference sets, or fallback)."""
    from dnnknn import knn
    calls = []

    def counting(d, *a):
        calls.append(len(d))
        return knn_select_dense(d, *a)
    knn_select_dense = knn.select_dense
    monkeypatch.setattr(knn, "select_dense", counting)
    return calls


@pytest.fixture(params=["host", "avx512", "avx2"])
def isa(request, monkeypatch):
    """Runs a test with the host's kernels and with each instruction set's block shapes (both
    compile for the host, so both are checked here whatever the machine)."""
    from dnnknn import knn
    if request.param != "host":
        monkeypatch.setattr(knn, "_ISA", request.param)
    return request.param


def test_threshold_path_is_exact(dense_calls, isa):
    # >= 8192 references: thresholds from a sample, candidates only (no distance matrix)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9000, 24)).astype(np.float32)
    q = rng.standard_normal((150, 24)).astype(np.float32)
    for metrics in (("l1",), ("l2",), ("l1", "l2")):
        res = search(q, x, 500, metrics)
        for mt in metrics:
            d, i = res[mt]
            ref = _brute64(q, x, mt)
            # the returned neighbours are the 500 nearest (up to float32 rounding), sorted
            np.testing.assert_allclose(np.take_along_axis(ref, i, 1), np.sort(ref, 1)[:, :500], rtol=1e-5)
            np.testing.assert_allclose(d, np.take_along_axis(ref, i, 1), rtol=1e-4)
            assert (np.diff(d, axis=1) >= 0).all()
            assert np.mean(i == np.argsort(ref, 1, kind="stable")[:, :500]) > 0.999
    assert dense_calls == []  # no query needed the fallback
    chunked = search(q, x, 30, ("l1", "l2"), chunk=64)
    for mt in ("l1", "l2"):
        np.testing.assert_array_equal(chunked[mt][1], search(q, x, 30, mt)[mt][1][:, :30])


def test_both_metrics_give_the_same_distances_as_each_alone(isa):
    # one kernel per metric set, but the same arithmetic per pair: identical results
    rng = np.random.default_rng(5)
    x = rng.standard_normal((9000, 640)).astype(np.float32)
    q = rng.standard_normal((40, 640)).astype(np.float32)
    for refs in (x, x[:3000]):  # threshold path and dense path
        both = search(q, refs, 50, ("l1", "l2"))
        for mt in ("l1", "l2"):
            alone = search(q, refs, 50, mt)[mt]
            np.testing.assert_array_equal(both[mt][0], alone[0])
            np.testing.assert_array_equal(both[mt][1], alone[1])


def test_threshold_fallback_on_duplicates(dense_calls, isa):
    # 7000 copies of one point: a query next to it keeps them all as candidates (over the cap),
    # so it is redone densely; the copies tie exactly and come out in index order
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9000, 16)).astype(np.float32)
    x[1000:8000] = x[0]
    q = np.concatenate([x[:1] + 1e-3, rng.standard_normal((20, 16)).astype(np.float32)])
    for mt in ("l1", "l2"):
        d, i = search(q, x, 40, mt)[mt]
        assert i[0].tolist() == [0] + list(range(1000, 1039))
        assert (d[0] == d[0, 0]).all()
        ref = _brute64(q[1:], x, mt)
        np.testing.assert_allclose(np.take_along_axis(ref, i[1:], 1), np.sort(ref, 1)[:, :40], rtol=1e-5)
    assert len(dense_calls) == 2 and dense_calls[0] < 21  # only the flagged rows went dense


def test_torch_path_matches_cpu_kernels():
    # the CUDA code path (torch.cdist / matrix-multiply form + topk), run here on CPU tensors
    import torch
    from dnnknn.knn import _search_torch
    x, _, q = _data(n=600, m=50, d=64, seed=6)
    res = _search_torch(torch.from_numpy(q), torch.from_numpy(x), 25, ("l1", "l2"), chunk=16)
    for mt in ("l1", "l2"):
        d, i = search(q, x, 25, mt)[mt]
        v = res[mt][0].numpy()
        np.testing.assert_array_equal(res[mt][1].numpy(), i)
        np.testing.assert_allclose(np.sqrt(v) if mt == "l2" else v, d, rtol=1e-4, atol=1e-5)


def test_generated_kernels_are_current():
    from dnnknn import knn_codegen
    assert knn_codegen.PATH.read_text() == knn_codegen.render(), \
        "dnnknn/knn_kernels.py is stale: run python -m dnnknn.knn_codegen"


def test_exclude_self_is_leave_one_out():
    x, y, _ = _data(n=400)
    d, i = search(x, x, 5, "l1", exclude_self=True)["l1"]
    assert not (i == np.arange(400)[:, None]).any()
    d_all, i_all = search(x, x, 6, "l1")["l1"]
    assert (i_all[:, 0] == np.arange(400)).all()  # self is the nearest when kept
    np.testing.assert_array_equal(i, i_all[:, 1:])
    # sklearn's kneighbors() without X is leave-one-out too
    _, i_sk = KNeighborsClassifier(n_neighbors=5, p=1, algorithm="brute").fit(x, y).kneighbors()
    np.testing.assert_array_equal(i, i_sk)


def test_vote_tie_goes_to_lowest_class():
    lab = np.array([[3, 1, 1, 3, 0], [2, 2, 0, 0, 4]])
    out = vote(lab, (1, 2, 4, 5), num_classes=5)
    assert out[1].tolist() == [3, 2]
    assert out[2].tolist() == [1, 2]  # {3, 1} tie -> 1
    assert out[4].tolist() == [1, 0]  # {3,1,1,3} -> 1; {2,2,0,0} -> 0


def test_pca_matches_sklearn_up_to_sign():
    x, _, q = _data(n=500, d=30)
    mine = PCA(8).fit(x).transform(q)
    ref = SkPCA(8, svd_solver="full").fit(x).transform(q)
    signs = np.sign((mine * ref).sum(0))
    np.testing.assert_allclose(mine * signs, ref, atol=2e-4)


def test_bad_input_messages():
    x, y, q = _data(n=50)
    with pytest.raises(ConfigError, match="larger than the 50"):
        search(q, x, 51)
    with pytest.raises(ConfigError, match="unknown metric"):
        search(q, x, 3, "cosine")
    with pytest.raises(ConfigError, match="positive integer"):
        search(q, x, 2.5)
    with pytest.raises(ConfigError, match="features"):
        search(q[:, :3], x, 3)
    with pytest.raises(ConfigError, match="NaN"):
        search(np.full((2, x.shape[1]), np.nan, np.float32), x, 3)
    with pytest.raises(ConfigError, match="fit"):
        KNNClassifier().predict(q)
