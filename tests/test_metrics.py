import math

import numpy as np
import pytest

from dnnknn.metrics import accuracy, agreement, generalization_error, mc, me, p_same


@pytest.mark.parametrize("seed", range(5))
def test_p_same_identity(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, 1000)
    dnn = np.where(rng.random(1000) < 0.6, labels, rng.integers(0, 7, 1000))
    knn = np.where(rng.random(1000) < 0.7, dnn, rng.integers(0, 7, 1000))
    a = accuracy(dnn, labels)
    assert p_same(knn, dnn) == pytest.approx(mc(knn, dnn, labels) * a + me(knn, dnn, labels) * (1 - a))


def test_definitions_on_a_small_case():
    labels = np.array([0, 1, 2, 3])
    dnn = np.array([0, 1, 0, 0])   # correct on 0, 1; wrong on 2, 3
    knn = np.array([0, 2, 0, 1])   # correct where dnn correct: 1 of 2; agrees where dnn wrong: 1 of 2
    m = agreement(knn, dnn, labels)
    assert m == {"dnn_acc": 0.5, "knn_acc": 0.25, "MC": 0.5, "ME": 0.5, "P_SAME": 0.5}
    assert generalization_error(0.99, 0.95) == pytest.approx(0.04)


def test_me_undefined_without_mistakes():
    y = np.arange(5)
    assert math.isnan(me(y, y, y))
    assert me(y, y, y, me_if_undefined=1.0) == 1.0
    assert math.isnan(mc(y, (y + 1) % 5, y))


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one length"):
        accuracy([1, 2], [1])
