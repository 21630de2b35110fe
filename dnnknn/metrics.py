"""The paper's measures of agreement between a network and a k-NN on its embedding (section 3).

    MC     = p(knn = l     | dnn = l)        eq. (1)  "mutually correct"
    ME     = p(knn = dnn   | dnn != l)       eq. (2)  "mutually erroneous"
    P_SAME = p(knn = dnn) = MC*acc + ME*(1-acc)   eq. (3)

ME is undefined when the network makes no mistake: it is NaN then, unless `me_if_undefined`
gives a value (the paper's appendix E uses 1 for its plots).
"""
from __future__ import annotations

import numpy as np


def _arrays(*xs):
    out = [np.asarray(x) for x in xs]
    n = len(out[0])
    if any(a.ndim != 1 or len(a) != n for a in out):
        raise ValueError(f"predictions and labels must be 1-D of one length, got {[a.shape for a in out]}")
    if n == 0:
        raise ValueError("no samples")
    return out


def accuracy(pred, labels) -> float:
    pred, labels = _arrays(pred, labels)
    return float((pred == labels).mean())


def mc(knn_pred, dnn_pred, labels) -> float:
    """p(k-NN correct | DNN correct); NaN if the DNN is never correct."""
    knn_pred, dnn_pred, labels = _arrays(knn_pred, dnn_pred, labels)
    ok = dnn_pred == labels
    return float((knn_pred[ok] == labels[ok]).mean()) if ok.any() else float("nan")


def me(knn_pred, dnn_pred, labels, me_if_undefined: float | None = None) -> float:
    """p(k-NN = DNN | DNN wrong); NaN (or `me_if_undefined`) if the DNN makes no mistake."""
    knn_pred, dnn_pred, labels = _arrays(knn_pred, dnn_pred, labels)
    wrong = dnn_pred != labels
    if not wrong.any():
        return float("nan") if me_if_undefined is None else float(me_if_undefined)
    return float((knn_pred[wrong] == dnn_pred[wrong]).mean())


def p_same(knn_pred, dnn_pred) -> float:
    knn_pred, dnn_pred = _arrays(knn_pred, dnn_pred)
    return float((knn_pred == dnn_pred).mean())


def generalization_error(train_acc: float, test_acc: float) -> float:
    """Test error minus training error (= train accuracy - test accuracy), the paper's appendix C
    quantity (it calls it "training error minus test error" but reports positive gaps)."""
    return float(train_acc) - float(test_acc)


def agreement(knn_pred, dnn_pred, labels, me_if_undefined: float | None = None) -> dict[str, float]:
    """All measures for one split: dnn_acc, knn_acc, MC, ME, P_SAME."""
    return {
        "dnn_acc": accuracy(dnn_pred, labels),
        "knn_acc": accuracy(knn_pred, labels),
        "MC": mc(knn_pred, dnn_pred, labels),
        "ME": me(knn_pred, dnn_pred, labels, me_if_undefined),
        "P_SAME": p_same(knn_pred, dnn_pred),
    }


def spread(values) -> tuple[float, float, int]:
    """(mean, sample std, n) of the defined (non-NaN) values over runs; std is NaN for fewer than two."""
    v = np.asarray([x for x in values if not np.isnan(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)
