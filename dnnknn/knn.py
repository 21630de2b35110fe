"""Exact brute-force k-NN on embeddings: L1 and L2, every k from one search, CPU and CUDA.

Why this design
- L1 has no matrix-multiply shortcut, and it is the paper's default metric. On CPU the distances
  come from numba kernels (`knn_kernels.py`, written by `knn_codegen.py`) that hold a block of
  8 queries x 2 references in vector registers and vectorise the sum over dimensions (AVX-512 or
  AVX2, whatever the host has), sweeping tiles of 128 references that stay in cache; half of the
  additions go through the FMA units so that the adders are not the only busy ones. numba is a
  small, well-kept dependency with no compiler at install time, and it caches the compiled
  kernels on disk (`benchmarks/knn.py`: about 8x faster than faiss's METRIC_L1 here). L2 is the
  matrix-multiply form |q|^2 + |r|^2 - 2 q.r (one FMA per dimension, like faiss's IndexFlatL2
  and scikit-learn) computed by the same kind of kernel; asked together, both metrics come from
  one pass over the data.
- The distance matrix is never written. Each query first gets a threshold from its distances to
  ~3% of the references, sampled (an order statistic chosen so that, with high probability,
  about 1.2-2 k references fall below it); the pass over all references keeps only the distances at
  or below the threshold, and the k nearest are sorted out of those (`knn_select.py`). When
  at least k were kept, the threshold bounds the k-th distance, so the result is exact; a query
  that kept fewer (rare) is redone densely. Small reference sets go the dense way directly.
- On CUDA, distances come from `torch.cdist(p=1)` and the matrix-multiply form, in query chunks
  sized from the free GPU memory, and `torch.topk`.
- Memory stays bounded: per block of queries, candidate lists of a few k entries; the dense way
  works in query chunks. The neighbours at the largest k are sorted once by (distance, index);
  every smaller k reads a prefix of that list.

Exactness: distances are computed in float32, neighbours sorted by distance with ties broken by
the lower reference index. The predictions equal scikit-learn's brute-force
`KNeighborsClassifier` wherever no (float32) distance tie decides the vote (tests/test_knn.py).

Vote and tie rule: uniform majority vote among the k neighbours; a tied vote goes to the lowest
class index. This is the authors' rule (arg-max of scikit-learn's `predict_proba`), and also
scikit-learn's `predict`.

Train-set queries: when the queries are the training set itself, `exclude_self=True` removes each
point from its own neighbours (leave-one-out). The paper's train-set numbers (Figure 5, Table 2,
appendix E) were computed *without* exclusion: the authors' code queries the fitted k-NN with the
very training points, so each point counts itself among its neighbours. `exclude_self=False` is
therefore the default everywhere.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch

from . import knn_kernels
from .errors import ConfigError
from .knn_select import select_dense, vote_kernel

METRICS = ("l1", "l2")


def _host_isa() -> str:
    """'avx512' when the CPU has AVX-512 (32 vector registers: bigger register blocks), else 'avx2'."""
    try:
        import llvmlite.binding as ll
        return "avx512" if ll.get_host_cpu_features().get("avx512f", False) else "avx2"
    except Exception:  # noqa: BLE001 - unknown host: the smaller blocks are safe everywhere
        return "avx2"


_ISA = _host_isa()
_SAMPLE = 1024  # at least this many sampled references set each query's threshold
_EMPTY = np.empty(0, np.float32)


def _blocks(n: int) -> int:
    """Queries per parallel block: up to 512 (fewer passes over the references), but at least
    two blocks per thread."""
    per = -(-n // (2 * numba.get_num_threads()))
    return int(min(512, max(8, -(-per // 8) * 8)))


def _search_cpu(q: np.ndarray, r: np.ndarray, kk: int, metrics: tuple[str, ...],
                chunk: int | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (values (n, kk) float32 - squared for l2 - , indices (n, kk) int64)}."""
    tag = "".join(metrics)
    n, m = len(q), len(r)
    with_l2 = "l2" in metrics
    qsq = np.einsum("ij,ij->i", q, q) if with_l2 else _EMPTY
    rsq = np.einsum("ij,ij->i", r, r) if with_l2 else _EMPTY
    vals = np.empty((len(metrics), n, kk), np.float32)
    idxs = np.empty((len(metrics), n, kk), np.int64)
    if n and m >= 8 * _SAMPLE and kk <= m // 16:
        # ~3% of the references (1,024 to 8,192) set the thresholds: the rank-th smallest sampled
        # distance, 3 standard deviations above the expected rank of the kk-th, keeps ~1.2-2 kk
        ns = min(8192, max(_SAMPLE, m // 32))
        sample = np.sort(np.random.default_rng(0).choice(m, ns, replace=False))
        rs = np.ascontiguousarray(r[sample])
        rssq = rsq[sample] if with_l2 else _EMPTY
        lam = kk * ns / m  # expected sampled references among the kk nearest
        rank = min(ns - 1, math.ceil(lam + 3 * math.sqrt(lam) + 3))
        cap = int(3 * (rank + 1) * m / ns) + 512  # 3x the expected count
        sparse = (rank + 1) / ns < 0.02  # expected candidates < 2% of the references
        bad = np.zeros(n, np.bool_)
        step = chunk or n
        for s in range(0, n, step):
            e = min(n, s + step)
            nb = _blocks(e - s)
            whole = step >= n  # else a chunk: the kernel wants contiguous outputs
            v = vals if whole else np.empty((len(metrics), e - s, kk), np.float32)
            i = idxs if whole else np.empty((len(metrics), e - s, kk), np.int64)
            workers = min(-(-(e - s) // nb), numba.get_num_threads())
            kernel = getattr(knn_kernels, f"search_{tag}_{_ISA}")
            kernel(q[s:e], qsq[s:e] if with_l2 else _EMPTY, r, rsq, rs, rssq, rank, kk, cap, sparse,
                   nb, workers, v, i, bad[s:e], knn_kernels.C)
            if not whole:
                vals[:, s:e], idxs[:, s:e] = v, i
        redo = np.flatnonzero(bad)
    else:
        redo = np.arange(n)
    if len(redo):  # dense: every distance, in chunks of bounded memory
        step = chunk or max(8, (256 * 2**20) // (4 * m * len(metrics)))
        out = v = i = None
        for s in range(0, len(redo), step):
            rows = redo[s:s + step]
            if out is None or out.shape[1] != len(rows):  # reused: fresh pages cost page faults
                out = np.empty((len(metrics), len(rows), m), np.float32)
                v, i = np.empty((len(rows), kk), np.float32), np.empty((len(rows), kk), np.int64)
            kernel = getattr(knn_kernels, f"dense_{tag}_{_ISA}")
            kernel(np.ascontiguousarray(q[rows]), qsq[rows] if with_l2 else _EMPTY, r, rsq, out,
                   _blocks(len(rows)), knn_kernels.C)
            for x in range(len(metrics)):
                select_dense(out[x], kk, v, i)
                vals[x, rows], idxs[x, rows] = v, i
    return {mt: (vals[x], idxs[x]) for x, mt in enumerate(metrics)}


def _pairwise_torch(q: torch.Tensor, r: torch.Tensor, metrics: tuple[str, ...]) -> dict:
    out = {}
    for metric in metrics:
        if metric == "l1":
            out["l1"] = torch.cdist(q, r, p=1.0)
        else:
            d = torch.addmm((r * r).sum(1)[None, :], q, r.T, alpha=-2.0)
            out["l2"] = d.add_((q * q).sum(1)[:, None]).clamp_min_(0)
    return out


def _select(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest of each row, sorted by (distance, index)."""
    v, i = torch.topk(d, k, dim=1, largest=False, sorted=False)
    o = torch.argsort(i, dim=1)  # index order first, then a stable sort by distance
    v, i = v.gather(1, o), i.gather(1, o)
    o = torch.sort(v, dim=1, stable=True).indices
    return v.gather(1, o), i.gather(1, o)


def _check_metrics(metrics) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ConfigError(f"unknown metric {bad[0] if bad else metrics!r}; choose from {METRICS}")
    return tuple(m for m in METRICS if m in metrics)


def _as_float_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not torch.is_tensor(x):
        raise ConfigError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ConfigError(f"{name} must be 2-D (samples, features), got shape {tuple(x.shape)}")
    if not (torch.isfinite(x.sum()) or torch.isfinite(x).all()):  # the sum first: no bool copy
        raise ConfigError(f"{name} contains NaN or infinite values")
    return x.float()


def search(queries, refs, k: int, metrics=("l1",), exclude_self: bool = False,
           chunk: int | None = None, device=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Exact k nearest references of each query, for each metric in one pass.

    queries (n, d), refs (m, d): arrays or tensors. Returns {metric: (distances (n, k) float32,
    indices (n, k) int64)}, sorted nearest first; L2 distances are true (not squared) distances.
    exclude_self: queries *are* refs (same rows, same order); drop each point from its own list."""
    metrics = _check_metrics(metrics)
    q = _as_float_tensor(queries, "queries")
    r = _as_float_tensor(refs, "refs")
    if q.shape[1] != r.shape[1]:
        raise ConfigError(f"queries have {q.shape[1]} features but refs have {r.shape[1]}")
    if exclude_self and len(q) != len(r):
        raise ConfigError("exclude_self=True needs the queries to be the reference set itself")
    m = len(r) - (1 if exclude_self else 0)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    if k > m:
        raise ConfigError(f"k={k} is larger than the {m} available reference points; "
                          f"choose k <= {m}")
    dev = torch.device(device) if device is not None else q.device
    kk = k + 1 if exclude_self else k
    if chunk is not None and (not isinstance(chunk, (int, np.integer)) or chunk < 1):
        raise ConfigError(f"chunk must be a positive integer (queries per batch), got {chunk!r}")
    if dev.type == "cpu":
        res = _search_cpu(np.ascontiguousarray(q.cpu().numpy()), np.ascontiguousarray(r.cpu().numpy()),
                          kk, metrics, chunk)
        res = {mt: (torch.from_numpy(v), torch.from_numpy(i)) for mt, (v, i) in res.items()}
    else:
        res = _search_torch(q.to(dev), r.to(dev), kk, metrics, chunk)
    out = {}
    for mt, (v, i) in res.items():
        if exclude_self:
            v, i = _drop_self(v, i, torch.arange(len(i), device=i.device))
        if mt == "l2":
            v = v.sqrt()
        out[mt] = (v.cpu().numpy(), i.cpu().numpy())
    return out


def _search_torch(q: torch.Tensor, r: torch.Tensor, kk: int, metrics: tuple[str, ...], chunk):
    if chunk is None:
        free, _ = torch.cuda.mem_get_info(q.device)
        chunk = max(8, min(8192, int(free * 0.4) // (4 * len(r) * (len(metrics) + 2))))
    out = {mt: ([], []) for mt in metrics}
    for s in range(0, len(q), chunk):
        for mt, d in _pairwise_torch(q[s:s + chunk], r, metrics).items():
            v, i = _select(d, kk)
            out[mt][0].append(v)
            out[mt][1].append(i)
    return {mt: (torch.cat(v), torch.cat(i)) for mt, (v, i) in out.items()}


def _drop_self(v, i, rows):
    """Remove each row's own index (or, if absent because of exact duplicates, its last entry)."""
    is_self = i == rows[:, None]
    none = ~is_self.any(1)
    is_self[none, -1] = True
    # keep only the first self hit per row
    first = is_self.int().cumsum(1) == 1
    drop = is_self & first
    n, kk = i.shape
    return v[~drop].reshape(n, kk - 1), i[~drop].reshape(n, kk - 1)


def vote(neighbor_labels, ks, num_classes: int) -> dict[int, np.ndarray]:
    """Majority vote over the first k neighbours for each k; ties go to the lowest class.
    neighbor_labels (n, K) int with K >= max(ks) -> {k: predictions (n,)}. The counts grow
    incrementally from one k to the next, so all ks cost one pass over the K neighbours."""
    lab = np.asarray(neighbor_labels)
    # the labels are their own indices into an identity table (long enough that a label
    # >= num_classes is reported as a bad label, not as a bad index)
    return vote_neighbors(lab, np.arange(max(num_classes, int(lab.max(initial=0)) + 1)), ks, num_classes)


def vote_neighbors(idx, ref_labels, ks, num_classes: int) -> dict[int, np.ndarray]:
    """`vote` on the labels ref_labels[idx] of the neighbours idx (n, K), without building that
    (n, K) array (a numba pass over idx)."""
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    ref_labels = np.ascontiguousarray(ref_labels, dtype=np.int64)
    ks = sorted(set(int(k) for k in ks))
    if idx.ndim != 2 or not ks or ks[0] < 1 or ks[-1] > idx.shape[1]:
        raise ConfigError(f"vote needs neighbours (n, K) with K >= max(ks) = {ks[-1] if ks else None}, "
                          f"got shape {idx.shape}")
    if len(ref_labels) and (ref_labels.min() < 0 or ref_labels.max() >= num_classes):
        raise ConfigError(f"labels must lie in [0, {num_classes}), got {ref_labels.min()}..{ref_labels.max()}")
    if idx.size and (idx.min() < 0 or idx.max() >= len(ref_labels)):
        raise ConfigError(f"neighbour indices must lie in [0, {len(ref_labels)})")
    out = np.empty((len(ks), len(idx)), np.int64)
    vote_kernel(ref_labels, idx, np.array(ks, np.int64), num_classes, out)
    return dict(zip(ks, out))


class PCA:
    """PCA fitted on the reference (training) embeddings, in float64 (appendix B: 64 dims)."""

    def __init__(self, n_components: int):
        if not isinstance(n_components, (int, np.integer)) or n_components < 1:
            raise ConfigError(f"PCA dimension must be a positive integer, got {n_components!r}")
        self.n_components = int(n_components)

    def fit(self, x) -> "PCA":
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        if self.n_components > min(x.shape):
            raise ConfigError(f"PCA to {self.n_components} dims needs at least that many "
                              f"samples and features, got shape {tuple(x.shape)}")
        self.mean_ = x.mean(0)
        xc = x - self.mean_
        evals, evecs = torch.linalg.eigh(xc.T @ xc)  # ascending
        self.components_ = evecs[:, -self.n_components:].flip(1)  # (d, p), largest first
        self.explained_variance_ = evals[-self.n_components:].flip(0) / max(1, len(x) - 1)
        return self

    def transform(self, x) -> np.ndarray:
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        return ((x - self.mean_) @ self.components_).float().numpy()


class KNNClassifier:
    """Exact k-NN classifier, scikit-learn style.

    >>> knn = KNNClassifier(k=30, metric="l1").fit(train_emb, train_labels)
    >>> knn.predict(test_emb)                       # (n,) predictions for k=30
    >>> knn.predict_many(test_emb, ks=(1, 5, 30))   # {("l1", k): predictions}, one search
    """

    def __init__(self, k: int = 30, metric: str = "l1", pca_dim: int | None = None,
                 device=None, chunk: int | None = None):
        self.k, self.metric, self.pca_dim = k, metric, pca_dim
        self.device, self.chunk = device, chunk
        _check_metrics(metric)

    def fit(self, x, y, num_classes: int | None = None) -> "KNNClassifier":
        x = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float32)
        y = np.asarray(y.detach().cpu() if torch.is_tensor(y) else y).astype(np.int64)
        if x.ndim != 2 or len(x) != len(y):
            raise ConfigError(f"fit needs x (n, d) and y (n,), got {x.shape} and {y.shape}")
        if len(y) and y.min() < 0:
            raise ConfigError("labels must be non-negative class indices")
        self.pca_ = PCA(self.pca_dim).fit(x) if self.pca_dim else None
        self.x_ = self.pca_.transform(x) if self.pca_ else x
        self.y_ = y
        self.num_classes_ = int(num_classes or (y.max() + 1 if len(y) else 1))
        if len(y) and y.max() >= self.num_classes_:
            raise ConfigError(f"labels go up to {y.max()} but num_classes={num_classes}; "
                              f"pass num_classes > {y.max()} or leave it out")
        return self

    def _prep(self, x):
        x = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float32)
        return self.pca_.transform(x) if self.pca_ else x

    def kneighbors(self, x, k: int | None = None, exclude_self: bool = False, metrics=None):
        if not hasattr(self, "x_"):
            raise ConfigError("call fit(...) before predicting")
        return search(self._prep(x), self.x_, k or self.k, metrics or (self.metric,),
                      exclude_self=exclude_self, chunk=self.chunk, device=self.device)

    def predict_many(self, x, ks=None, metrics=None, exclude_self: bool = False) -> dict:
        """{(metric, k): predictions} for every k and metric, from one search per call."""
        ks = sorted(set(ks or (self.k,)))
        res = self.kneighbors(x, max(ks), exclude_self, metrics)
        return {(mt, k): p for mt, (_, idx) in res.items()
                for k, p in vote_neighbors(idx, self.y_, ks, self.num_classes_).items()}

    def predict(self, x, exclude_self: bool = False) -> np.ndarray:
        return self.predict_many(x, (self.k,), (self.metric,), exclude_self)[(self.metric, self.k)]


__all__ = ["search", "vote", "vote_neighbors", "PCA", "KNNClassifier", "METRICS"]
