import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.neighbors import KNeighborsClassifier

from dnnknn.errors import ConfigError
from dnnknn.knn import KNNClassifier, fit_pca, project, search, vote


def _data(n=1500, m=333, d=37, c=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, c, n),
            rng.standard_normal((m, d)).astype(np.float32))


@pytest.mark.parametrize("metric,p", [("l1", 1), ("l2", 2)])
def test_predictions_equal_sklearn(metric, p):
    x, y, q = _data()
    ks = (1, 2, 5, 30, 150)
    mine = KNNClassifier(metric=metric).fit(x, y).predict_many(q, ks=ks)
    both = KNNClassifier(metric=metric).fit(x, y).predict_many(q, ks=ks, metrics=("l1", "l2"))
    for k in ks:
        sk = KNeighborsClassifier(n_neighbors=k, p=p, algorithm="brute").fit(x, y)
        ref = sk.predict(q)
        np.testing.assert_array_equal(mine[(metric, k)], ref)
        np.testing.assert_array_equal(both[(metric, k)], ref)
        # the authors' rule: arg-max of predict_proba (ties to the lowest class)
        np.testing.assert_array_equal(mine[(metric, k)], sk.predict_proba(q).argmax(1))


@pytest.mark.parametrize("metric,p", [("l1", 1), ("l2", 2)])
@pytest.mark.parametrize("unit", [False, True])
def test_neighbours_and_distances_equal_sklearn(metric, p, unit):
    x, y, q = _data(n=800, m=97, d=640, seed=1)
    if unit:  # unit vectors near the references, like the embeddings: the L2 search's
        q = x[:97] + 0.5 * q  # |r|^2 - 2 q.r is then negative for the nearest
        x, q = x / np.linalg.norm(x, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)
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


@pytest.mark.parametrize("n,m,d", [(1, 1, 1), (5, 7, 13), (13, 301, 640), (64, 130, 3)])
def test_distance_kernels_on_odd_shapes(n, m, d):
    # the 4 x 2 register block and the 128-reference tiles meet every kind of remainder
    from dnnknn.knn import _distances, _prepare
    rng = np.random.default_rng(n + m + d)
    q, r = rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((m, d)).astype(np.float32)
    for metric in ("l1", "l2"):
        out = np.full((n, m), np.nan, np.float32)
        _distances(metric, _prepare(metric, q, "queries"), _prepare(metric, r, "refs"), out)
        ref = _brute64(q, r, metric)
        np.testing.assert_allclose(out, ref if metric == "l1" else ref ** 2, rtol=1e-4, atol=1e-3)


def test_large_reference_set_is_exact():
    # the sampled thresholds keep the true k nearest
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9000, 24)).astype(np.float32)
    q = rng.standard_normal((150, 24)).astype(np.float32)
    res = search(q, x, 500, ("l1", "l2"))
    for mt in ("l1", "l2"):
        d, i = res[mt]
        ref = _brute64(q, x, mt)
        # the returned neighbours are the 500 nearest (up to float32 rounding), sorted
        np.testing.assert_allclose(np.take_along_axis(ref, i, 1), np.sort(ref, 1)[:, :500], rtol=1e-5)
        np.testing.assert_allclose(d, np.take_along_axis(ref, i, 1), rtol=1e-4)
        assert (np.diff(d, axis=1) >= 0).all()
        assert np.mean(i == np.argsort(ref, 1, kind="stable")[:, :500]) > 0.999
        np.testing.assert_array_equal(search(q, x, 30, mt, chunk=64)[mt][1], i[:, :30])  # chunks


def test_sample_rank_equals_sort():
    # the threshold's rank-th smallest sampled value, on random, descending (every value is
    # inserted) and tied inputs, and on a strided view as select_dense passes it
    from dnnknn.knn_kernels import smallest_at
    rng = np.random.default_rng(5)
    for x in (rng.standard_normal(1042).astype(np.float32), np.arange(300, 0, -1, dtype=np.float32),
              rng.integers(0, 4, 500).astype(np.float32), rng.random(5000, dtype=np.float32)[::7]):
        for r in (0, 1, 7, 62, len(x) - 1):
            assert smallest_at(x, r, np.empty(r + 1, np.float32)) == np.sort(x)[r]


def test_ties_come_in_index_order():
    # 7000 copies of one point: they tie exactly and come out in index order, as in scikit-learn
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


def test_pca_matches_an_svd_up_to_sign():
    x, _, q = _data(n=500, d=30)
    mine = project(fit_pca(x, 8), q)
    xc = x.astype(np.float64) - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)  # the reference: principal axes from the SVD
    ref = (q - x.mean(0)) @ vt[:8].T
    signs = np.sign((mine * ref).sum(0))
    np.testing.assert_allclose(mine * signs, ref, atol=2e-4)


@parametrize_with_checks([KNNClassifier(k=3), KNNClassifier(k=2, metric="l2", pca_dim=2)])
def test_knn_classifier_is_a_scikit_learn_estimator(estimator, check):
    check(estimator)


def test_knn_classifier_keeps_the_labels_it_was_given():
    x, y, q = _data(n=200)
    names = np.array(["cat", "dog", "eel", "fox", "gnu"])[y % 5]
    knn = KNNClassifier(k=5).fit(x, names)
    assert set(knn.predict(q)) <= set(names)
    codes = KNNClassifier(k=5).fit(x, y % 5).predict(q)
    assert (knn.predict(q) == np.array(["cat", "dog", "eel", "fox", "gnu"])[codes]).all()


def test_bad_input_messages():
    x, y, q = _data(n=50)
    with pytest.raises(ConfigError, match="k=51 is larger than the training set \\(50 points"):
        search(q, x, 51)
    with pytest.raises(ConfigError, match="unknown metric"):
        search(q, x, 3, "cosine")
    with pytest.raises(ConfigError, match="positive integer"):
        search(q, x, 2.5)
    with pytest.raises(ConfigError, match="features"):
        search(q[:, :3], x, 3)
    with pytest.raises(ConfigError, match="NaN"):
        search(np.full((2, x.shape[1]), np.nan, np.float32), x, 3)
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError, match="Call 'fit'"):
        KNNClassifier().predict(q)
