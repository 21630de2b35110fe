"""Exact brute-force k-NN on embeddings: L1 and L2, every k from one search, CPU and CUDA.

How a search goes: queries in chunks; each chunk's distances to every reference are written into
one reused (chunk, references) buffer of at most 256 MB, and the k nearest of each row are
selected and sorted by (distance, index). On CPU:
- L1 (the paper's default; no matrix-multiply shortcut): the numba kernel `l1_distances`
  (`knn_kernels.py`), register-blocked and vectorised over dimensions, about 5x faster than
  faiss's METRIC_L1 (`benchmarks/knn.py`). Past 4,096 references, on an x86 CPU with AVX2 or
  AVX-512, the search first goes through `knn_filter.py`: 8-bit codes bound every distance, and
  only the references the bounds cannot rule out are re-ranked by that same kernel, so the
  neighbours and distances are the fp32 search's, bit for bit. A first 64 queries decide: if they
  re-rank more than 1% of the references (vectors whose distances bunch together, a large k), the
  fp32 kernel does the rest. On trained embeddings it re-ranks ~0.1% and is 2.5-3x faster.
- L2 (Table 1 only): the matrix form |q|^2 + |r|^2 - 2 q.r through BLAS (one GEMM of
  [q, 1, |q|^2] and [-2 r, |r|^2, 1]), like faiss's IndexFlatL2 and scikit-learn.
- Selection: `select_dense` (numba): a threshold from a strided sample of the row keeps ~1.2-2 k
  candidates in one branch-free pass, and a stable radix sort orders them.
On CUDA: `torch.cdist(p=1)` / the matrix form, in query chunks sized from free GPU memory, and
`torch.topk`. The neighbours at the largest k are sorted once; every smaller k reads a prefix.

Adding a metric: one with a matrix form (cosine, inner product) is a branch in `_distances` (and
in `_pairwise_torch`) that turns the Gram matrix into distances; one without is a copy of the L1
kernel with its one line `abs(x - r)` changed. Then add its name to METRICS.

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

import numba
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import ConfigError
from .knn_filter import QB, SAD_BUFFER, SAD_WIDTH, filtered_l1, quantise
from .knn_kernels import l1_distances, select_dense, vote_kernel
from .names import METRICS


def _numpy(a):
    return a.detach().cpu().numpy() if torch.is_tensor(a) else a

_BUFFER = 256 * 2**20  # bytes of distances per chunk of queries


def _prepare(metric: str, x: np.ndarray, side: str) -> np.ndarray:
    """Points as `_distances` reads them: as they are (l1); for l2 the references as
    [-2 r, |r|^2, 1] and the queries as [q, 1, |q|^2], so that one GEMM gives |q - r|^2."""
    if metric == "l1":
        return x
    sq, one = np.einsum("ij,ij->i", x, x)[:, None], np.ones((len(x), 1), np.float32)
    return np.hstack([-2 * x, sq, one] if side == "refs" else [x, one, sq])


def _distances(metric: str, q: np.ndarray, ref: np.ndarray, out: np.ndarray):
    """out (n, m) = distances of the prepared queries to the prepared references (squared for
    l2, and may round a hair below 0: `_finish` clamps)."""
    if metric == "l1":
        # blocks of queries: at least two per thread, at most 512 (each block streams r once)
        nb = min(512, max(8, -(-len(q) // (2 * numba.get_num_threads()))))
        l1_distances(q, ref, out, nb, np.float32(-1.0))
    else:
        _gemm(q, ref.T, out)


def _gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray):
    """out = a @ b through numpy's BLAS (~10% faster than torch.mm here), one single-threaded call
    per thread on its share of the rows: BLAS's own thread pool keeps spinning after each call,
    which slowed the selection that follows by ~40% (measured: 3-6% off the whole L2 search)."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits
    rows = np.array_split(np.arange(len(a)), max(1, numba.get_num_threads()))
    parts = [slice(r[0], r[-1] + 1) for r in rows if len(r)]
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(len(parts)) as pool:
        list(pool.map(lambda s: np.matmul(a[s], b, out=out[s]), parts))


def _finish(metric: str, vals: np.ndarray):
    if metric == "l2":
        np.maximum(vals, 0, out=vals)


FILTER_MIN_REFS = 4096  # below it the fp32 search alone is as fast (benchmarks/knn.py)
FILTER_PILOT = 64  # queries searched through the filter before deciding whether it pays (~1% of a test set)
FILTER_MAX_KEPT = 0.01  # re-ranking more than this share of the references, the filter is slower


def use_filter(n: int, m: int, kk: int) -> bool:
    """Whether an L1 search of n queries against m references starts through the 8-bit filter."""
    return bool(SAD_WIDTH) and m >= FILTER_MIN_REFS and kk <= m // 8 and n >= FILTER_PILOT


def l1_filtered(q: np.ndarray, r: np.ndarray, kk: int, chunk: int | None = None, pilot: bool = True):
    """The L1 search through the 8-bit filter and the fp32 re-rank (`knn_filter`): (values, indices,
    candidates re-ranked per query). With `pilot`, when the first FILTER_PILOT queries re-ranked more
    than FILTER_MAX_KEPT of the references, the fp32 search does the rest (their counts stay 0).
    chunk: queries per call (default 2,048), as `search`'s."""
    (cr, cq), (wr, wq) = quantise(r, q)
    n, m, d = len(q), len(r), q.shape[1]
    gamma = 2 * (d + 1) * 2.0**-24
    chunk = chunk or 2048
    assert cq.shape[1] == cr.shape[1] and cq.shape[1] % 64 == 0  # the SAD reads whole 64-byte blocks
    vals, idxs = np.empty((n, kk), np.float32), np.empty((n, kk), np.int64)
    counts = np.zeros(n, np.int64)
    threads, s = numba.get_num_threads(), 0
    while s < n:
        if pilot and s == FILTER_PILOT and counts[:s].mean() > FILTER_MAX_KEPT * m:
            vals[s:], idxs[s:] = _search_cpu(q[s:], r, kk, ("l1",), chunk, filtered=False)["l1"]
            break
        e = min(n, FILTER_PILOT if pilot and s == 0 else s + chunk)
        # queries sharing each tile of codes and rows: a multiple of 4, few enough that every thread has some
        per_thread = -(-(e - s) // threads)
        qb = int(max(4, min(QB, SAD_BUFFER // (4 * m) // 4 * 4, -(-per_thread // 4) * 4)))
        filtered_l1(q[s:e], r, cq[s:e], cr, wq[s:e], wr, kk, vals[s:e], idxs[s:e], counts[s:e],
                    np.float32(-1.0), gamma, threads, qb)
        s = e
    return vals, idxs, counts


def _search_cpu(q: np.ndarray, r: np.ndarray, kk: int, metrics: tuple[str, ...],
                chunk: int | None, filtered: bool | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (values (n, kk) float32 - squared for l2 - , indices (n, kk) int64)}. filtered: L1
    through the 8-bit filter (True), the fp32 kernel alone (False), or as `use_filter` decides."""
    n, m = len(q), len(r)
    step = chunk or max(8, _BUFFER // (4 * m))
    out = {}
    for metric in metrics:
        if metric == "l1" and (use_filter(n, m, kk) if filtered is None else filtered) and SAD_WIDTH:
            out[metric] = l1_filtered(q, r, kk, chunk)[:2]
            continue
        ref, qp = _prepare(metric, r, "refs"), _prepare(metric, q, "queries")
        vals, idxs = np.empty((n, kk), np.float32), np.empty((n, kk), np.int64)
        buf = np.empty((min(n, step), m), np.float32)  # reused: fresh pages cost page faults
        for s in range(0, n, step):
            e = min(n, s + step)
            _distances(metric, qp[s:e], ref, buf[:e - s])
            select_dense(buf[:e - s], kk, vals[s:e], idxs[s:e])
        _finish(metric, vals)
        out[metric] = (vals, idxs)
    return out


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


MAX_ABS = 1e15  # above it a squared L2 distance over a few thousand dimensions overflows float32 (3.4e38)


def _as_float_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not torch.is_tensor(x):
        raise ConfigError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ConfigError(f"{name} must be 2-D (samples, features), got shape {tuple(x.shape)}")
    if not (torch.isfinite(x.sum()) or torch.isfinite(x).all()):  # the sum first: no bool copy
        raise ConfigError(f"{name} contain NaN or infinite values; check the network's outputs on those inputs")
    if x.numel() and float(x.abs().max()) > MAX_ABS:
        raise ConfigError(f"{name} reach {float(x.abs().max()):.3g}: their float32 distances would overflow; "
                          f"scale the features down (e.g. normalise them) below {MAX_ABS:g}")
    return x.float()


def check_k(k: int, n_refs: int, exclude_self: bool = False, what: str = "k"):
    """k against the training (reference) set's size, before any work."""
    m = n_refs - (1 if exclude_self else 0)
    if k > m:
        raise ConfigError(f"k={k} is larger than the training set ({m} points"
                          f"{' besides the query itself' if exclude_self else ''}); choose {what} <= {m}")


def search(queries, refs, k: int, metrics=("l1",), exclude_self: bool = False,
           chunk: int | None = None, device=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Exact k nearest references of each query, for each metric in one pass.

    queries (n, d), refs (m, d): arrays or tensors. Returns {metric: (distances (n, k) float32,
    indices (n, k) int64)}, sorted nearest first; L2 distances are true (not squared) distances.
    exclude_self: queries *are* refs (same rows, same order); drop each point from its own list."""
    metrics = _check_metrics(metrics)
    q = _as_float_tensor(queries, "the query vectors (test set)")
    r = _as_float_tensor(refs, "the reference vectors (training set)")
    if q.shape[1] != r.shape[1]:
        raise ConfigError(f"queries have {q.shape[1]} features but refs have {r.shape[1]}")
    if exclude_self and len(q) != len(r):
        raise ConfigError("exclude_self=True needs the queries to be the reference set itself")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    check_k(k, len(r), exclude_self)
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


def predict_spaces(train_feat, train_y, query_feat, num_classes: int, ks, metrics, pca_dims=(),
                   exclude_self: bool = False, device=None) -> dict:
    """{(metric, k, pca): predictions} for every k and metric, on the features as they are (pca 0)
    and after PCA to each of pca_dims fitted on train_feat (dims beyond the features skipped):
    one search per metric and space."""
    spaces = [(0, train_feat, query_feat)]
    for p in pca_dims:
        if p <= train_feat.shape[1]:
            pca = fit_pca(train_feat, p)
            spaces.append((p, project(pca, train_feat), project(pca, query_feat)))
    out = {}
    for p, ref, qry in spaces:
        res = search(qry, ref, max(ks), metrics, exclude_self=exclude_self, device=device)
        for metric, (_, idx) in res.items():
            for k, pred in vote_neighbors(idx, train_y, ks, num_classes).items():
                out[(metric, k, p)] = pred
    return out


def fit_pca(x, n_components: int):
    """scikit-learn's PCA fitted on the reference (training) embeddings in float64 (appendix B: 64
    dims), from the covariance matrix's eigenvectors (`covariance_eigh`, the algorithm dnnknn 0.2
    wrote by hand: 60,000 x 640 embeddings to 64 dims in 1.8 s against its 2.1 s, equal to 1e-6)."""
    from sklearn.decomposition import PCA

    if not isinstance(n_components, (int, np.integer)) or isinstance(n_components, bool) or n_components < 1:
        raise ConfigError(f"PCA dimension must be a positive integer, got {n_components!r}")
    x = np.asarray(x, dtype=np.float64)
    if n_components > min(x.shape):
        raise ConfigError(f"PCA to {n_components} dims needs at least that many samples and features, "
                          f"got n_samples={x.shape[0]}, n_features={x.shape[1]}")
    return PCA(int(n_components), svd_solver="covariance_eigh").fit(x)


def project(pca, x) -> np.ndarray:
    """x (n, d) in the fitted PCA's space, float32 (n, n_components)."""
    return pca.transform(np.asarray(x, dtype=np.float64)).astype(np.float32)


class KNNClassifier(ClassifierMixin, BaseEstimator):
    """Exact k-NN classifier: a scikit-learn estimator (its `check_estimator` suite runs in the
    tests) whose search returns every k and metric from one pass.

    >>> knn = KNNClassifier(k=30, metric="l1").fit(train_emb, train_labels)
    >>> knn.predict(test_emb)                       # (n,) predictions for k=30
    >>> knn.predict_many(test_emb, ks=(1, 5, 30))   # {("l1", k): predictions}, one search
    """

    def __init__(self, k: int = 30, metric: str = "l1", pca_dim: int | None = None, device=None,
                 chunk: int | None = None):
        self.k, self.metric, self.pca_dim = k, metric, pca_dim
        self.device, self.chunk = device, chunk

    def fit(self, x, y) -> "KNNClassifier":
        from sklearn.utils.multiclass import check_classification_targets

        _check_metrics(self.metric)
        if not (isinstance(self.k, (int, np.integer)) and not isinstance(self.k, bool) and self.k > 0):
            raise ConfigError(f"k must be a positive integer, got {self.k!r}")
        x, y = validate_data(self, _numpy(x), _numpy(y), dtype=np.float32)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)  # labels -> 0..C-1, as voted
        self.pca_ = fit_pca(x, self.pca_dim) if self.pca_dim else None
        self.x_ = project(self.pca_, x) if self.pca_ else x
        self.y_ = codes.astype(np.int64)
        return self

    def _prep(self, x):
        check_is_fitted(self)
        x = validate_data(self, _numpy(x), dtype=np.float32, reset=False)
        return project(self.pca_, x) if self.pca_ else x

    def kneighbors(self, x, k: int | None = None, exclude_self: bool = False, metrics=None):
        """{metric: (distances, indices)} of the k nearest training points of each row of x."""
        return search(self._prep(x), self.x_, k or self.k, metrics or (self.metric,),
                      exclude_self=exclude_self, chunk=self.chunk, device=self.device)

    def predict_many(self, x, ks=None, metrics=None, exclude_self: bool = False) -> dict:
        """{(metric, k): predictions} for every k and metric, from one search per call."""
        ks = sorted(set(ks or (self.k,)))
        res = self.kneighbors(x, max(ks), exclude_self, metrics)
        return {(mt, k): self.classes_[p] for mt, (_, idx) in res.items()
                for k, p in vote_neighbors(idx, self.y_, ks, len(self.classes_)).items()}

    def predict(self, x, exclude_self: bool = False) -> np.ndarray:
        return self.predict_many(x, (self.k,), (self.metric,), exclude_self)[(self.metric, self.k)]


def warm_up() -> float:
    """Compile the CPU kernels (or load them from numba's on-disk cache); returns the seconds."""
    import time
    t = time.perf_counter()
    x = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    KNNClassifier(k=3).fit(x, np.arange(40) % 3).predict_many(x[:5], ks=(1, 3), metrics=METRICS)
    return time.perf_counter() - t


__all__ = ["search", "vote", "vote_neighbors", "predict_spaces", "check_k", "fit_pca", "project", "KNNClassifier", "METRICS"]
