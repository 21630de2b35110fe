"""Exact brute-force k-NN on embeddings: L1 and L2, every k from one search, CPU and CUDA.

Why this design
- L1 has no matrix-multiply shortcut, and it is the paper's default metric. On CPU the distances
  come from a numba kernel (`_pairwise_cpu`) that keeps a tile of 32 references and a block of 8
  queries hot in cache and registers, and vectorises the sum over dimensions with AVX2: on a 2-core
  AVX2 machine that is close to the machine's limit (one subtraction, absolute value and addition
  per dimension) and about 6x faster than faiss's `METRIC_L1` (see `benchmarks/knn.py`). numba is
  a small, well-kept dependency with no compiler at install time; the kernels compile once per
  process (about a second; the selection kernel is cached on disk).
- The kernel is load-bound, so when both metrics are asked for it computes the squared L2 distance
  in the same pass for almost nothing. L2 alone uses the matrix-multiply form
  |q|^2 + |r|^2 - 2 q.r (numpy's BLAS, like faiss's IndexFlatL2 and scikit-learn), the norms
  added inside the selection while each row is in cache.
- On CUDA, distances come from `torch.cdist(p=1)` and the matrix-multiply form, in query chunks
  sized from the free GPU memory.
- Queries go in chunks, so memory stays bounded (a chunk x references distance block, never a
  queries x references x dims tensor; the blocks are reused from chunk to chunk). The neighbours
  at the largest k are selected once (`_select_kernel` on CPU, `torch.topk` on CUDA) and sorted by
  (distance, index); every smaller k reads a prefix of that list.

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

import numpy as np
import torch
from numba import njit, prange

from .errors import ConfigError

METRICS = ("l1", "l2")

# ---------------------------------------------------------------------------------------------
# CPU kernel. The 8-query block is written out by a template: 8 (or 16) scalar accumulators that
# LLVM keeps in vector registers, while the loop over dimensions is vectorised.

_QB, _TJ = 8, 32  # queries per register block, references per cache tile

_KERNEL_TEMPLATE = '''
def kernel(Q, R, o1, o2):
    # Q (n, d) with n % 8 == 0, R (m, d) -> o1 (n, m) L1 distances, o2 (n, m) squared L2
    n, d = Q.shape
    m = R.shape[0]
    for t in prange((m + TJ - 1) // TJ):
        for i in range(0, n, 8):
            for j in range(t * TJ, min(m, (t + 1) * TJ)):
{init}
                for k in range(d):
                    r = R[j, k]
{body}
{store}
'''


def _build_kernel(with_l2: bool):
    init, body, store = [], [], []
    for q in range(_QB):
        init.append(f"s{q} = np.float32(0.0); e{q} = np.float32(0.0)")
        body.append(f"a{q} = Q[i + {q}, k] - r; s{q} += abs(a{q})" + (f"; e{q} += a{q} * a{q}" if with_l2 else ""))
        store.append(f"o1[i + {q}, j] = s{q}" + (f"; o2[i + {q}, j] = e{q}" if with_l2 else ""))
    src = _KERNEL_TEMPLATE.format(
        init="\n".join(" " * 16 + s for s in init),
        body="\n".join(" " * 20 + s for s in body),
        store="\n".join(" " * 16 + s for s in store))
    scope = {"np": np, "prange": prange, "TJ": _TJ}
    exec(compile(src, f"<dnnknn.knn kernel l2={with_l2}>", "exec"), scope)  # noqa: S102
    return njit(parallel=True, fastmath=True, nogil=True)(scope["kernel"])


_KERNELS: dict[bool, object] = {}


@njit(parallel=True, nogil=True, cache=True)
def _select_kernel(D, k, vals, idxs, qadd, radd):
    """The k smallest of each row of D (n, m), sorted by (distance, index), into vals/idxs (n, k).
    If qadd/radd are not empty, row i is first replaced by max(D[i] + qadd[i] + radd, 0) (the
    norms of the matrix-multiply form of L2, added while the row is in cache).

    Exact, and cheaper than a full top-k: a threshold a little above the k-th value - from a strided
    sample of the row when the row is long, else the exact k-th value (introselect) - keeps about
    1.25k candidates in one branch-free pass (if an unlucky sample kept fewer than k, the exact k-th
    value is used). The candidates are sorted on one 64-bit key, (float bits << 32) | index: for
    non-negative floats the bits order like the values, and the index breaks ties. Rows go in
    blocks so that each thread allocates its buffers once."""
    n, m = D.shape
    step = max(1, m // max(1024, 2 * k))
    ns = (m + step - 1) // step
    rank = min(ns - 1, int(k * ns / m * 1.25) + 16)
    add = len(radd) > 0
    nblocks = min(n, 256)
    for b in prange(nblocks):
        cand = np.empty(m, np.int64)
        keys = np.empty(m, np.uint64)
        sample = np.empty(ns, D.dtype)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            row = D[i]
            if add:
                qa = qadd[i]
                for j in range(m):
                    row[j] = max(row[j] + qa + radd[j], np.float32(0.0))
            bits = row.view(np.uint32)
            if step > 1 and rank < ns - 1:
                for c in range(ns):
                    sample[c] = row[c * step]
                thr = np.partition(sample, rank)[rank]
            else:
                thr = np.partition(row, k - 1)[k - 1]
            cnt = 0
            for j in range(m):
                cand[cnt] = j
                cnt += row[j] <= thr
            if cnt < k:
                thr = np.partition(row, k - 1)[k - 1]
                cnt = 0
                for j in range(m):
                    cand[cnt] = j
                    cnt += row[j] <= thr
            for c in range(cnt):
                j = cand[c]
                keys[c] = (np.uint64(bits[j] & np.uint32(0x7FFFFFFF)) << np.uint64(32)) | np.uint64(j)
            kk = keys[:cnt]
            kk.sort()
            for c in range(k):
                j = np.int64(kk[c] & np.uint64(0xFFFFFFFF))
                idxs[i, c] = j
                vals[i, c] = row[j]


_EMPTY = np.empty(0, np.float32)


def _select_cpu(d: np.ndarray, k: int, qadd=_EMPTY, radd=_EMPTY) -> tuple[torch.Tensor, torch.Tensor]:
    vals = np.empty((len(d), k), np.float32)
    idxs = np.empty((len(d), k), np.int64)
    _select_kernel(d, k, vals, idxs, qadd, radd)
    return torch.from_numpy(vals), torch.from_numpy(idxs)


def _pairwise_cpu(q: np.ndarray, r: np.ndarray, metrics: tuple[str, ...], buffers: dict) -> dict[str, np.ndarray]:
    """Distances (n, m) float32 for each metric ('l2' gives squared distances) from the kernel,
    written into `buffers` (reused from chunk to chunk: fresh 100s of MB would cost page faults)."""
    n = len(q)
    with_l2 = "l2" in metrics
    if with_l2 not in _KERNELS:
        _KERNELS[with_l2] = _build_kernel(with_l2)
    pad = (-n) % _QB
    if pad:
        q = np.concatenate([q, np.zeros((pad, q.shape[1]), q.dtype)])
    rows = len(q)
    o1 = _buffer(buffers, "l1", rows, len(r))
    o2 = _buffer(buffers, "l2", rows, len(r)) if with_l2 else o1[:1, :1]
    _KERNELS[with_l2](q, r, o1, o2)
    out = {"l1": o1[:n]}
    if with_l2:
        out["l2"] = o2[:n]
    return out


def _buffer(buffers: dict, name: str, rows: int, cols: int) -> np.ndarray:
    buf = buffers.get(name)
    if buf is None or buf.shape[0] < rows or buf.shape[1] != cols:
        buf = buffers[name] = np.empty((rows, cols), np.float32)
    return buf[:rows]


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
    if not torch.isfinite(x).all():
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
    on_cpu = dev.type == "cpu"
    if on_cpu:
        qn = np.ascontiguousarray(q.cpu().numpy())
        rn = np.ascontiguousarray(r.cpu().numpy())
    else:
        q, r = q.to(dev), r.to(dev)
    if chunk is None:
        if on_cpu:
            budget = 512 * 2**20
        else:
            free, _ = torch.cuda.mem_get_info(dev)
            budget = int(free * 0.4)
        chunk = max(_QB, min(8192, budget // (4 * len(r) * (len(metrics) + 2))) // _QB * _QB)
    out = {mt: ([], []) for mt in metrics}
    rnorm = (rn * rn).sum(1) if on_cpu and metrics == ("l2",) else None
    buffers: dict[str, np.ndarray] = {}
    for s in range(0, len(q), chunk):
        if on_cpu and metrics == ("l2",):
            # matrix-multiply form (numpy's BLAS): -2 q.r, the norms added inside the selection
            qc = qn[s:s + chunk]
            d = np.matmul(qc * np.float32(-2), rn.T, out=_buffer(buffers, "mm", len(qc), len(rn)))
            selected = {"l2": _select_cpu(d, kk, (qc * qc).sum(1), rnorm)}
        elif on_cpu:
            dist = _pairwise_cpu(qn[s:s + chunk], rn, metrics, buffers)
            selected = {mt: _select_cpu(d, kk) for mt, d in dist.items()}
        else:
            selected = {mt: _select(d, kk) for mt, d in _pairwise_torch(q[s:s + chunk], r, metrics).items()}
        for mt, (v, i) in selected.items():
            if exclude_self:
                v, i = _drop_self(v, i, torch.arange(s, s + len(i), device=i.device))
            if mt == "l2":
                v = v.sqrt()
            out[mt][0].append(v.cpu())
            out[mt][1].append(i.cpu())
    return {mt: (torch.cat(v).numpy(), torch.cat(i).numpy()) for mt, (v, i) in out.items()}


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


def vote(neighbor_labels: np.ndarray, ks, num_classes: int) -> dict[int, np.ndarray]:
    """Majority vote over the first k neighbours for each k; ties go to the lowest class.
    neighbor_labels (n, K) int with K >= max(ks) -> {k: predictions (n,)}. The counts grow
    incrementally from one k to the next, so all ks cost one pass over the K neighbours."""
    lab = torch.as_tensor(neighbor_labels, dtype=torch.int64)
    counts = torch.zeros(len(lab), num_classes, dtype=torch.int32)
    out, done = {}, 0
    for k in sorted(set(int(k) for k in ks)):
        new = lab[:, done:k]
        counts.scatter_add_(1, new, torch.ones_like(new, dtype=torch.int32))
        done = k
        out[k] = counts.argmax(1).numpy()  # argmax returns the first (lowest) maximum
    return out


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
                for k, p in vote(self.y_[idx], ks, self.num_classes_).items()}

    def predict(self, x, exclude_self: bool = False) -> np.ndarray:
        return self.predict_many(x, (self.k,), (self.metric,), exclude_self)[(self.metric, self.k)]


__all__ = ["search", "vote", "PCA", "KNNClassifier", "METRICS"]
