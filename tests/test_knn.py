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
