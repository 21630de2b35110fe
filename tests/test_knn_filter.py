"""The 8-bit filter and exact re-rank (`dnnknn/knn_filter.py`) against the fp32 search it replaces:
the same neighbours, in the same order, with the same float32 distances, on inputs built to break
it (ties at the k-th distance, duplicated references, values clipped at the code range's ends,
k = 1000, as many references as k)."""
import numpy as np
import pytest

from dnnknn import knn
from dnnknn.knn_filter import SAD_WIDTH, quantise

pytestmark = pytest.mark.skipif(not SAD_WIDTH, reason="no vpsadbw on this CPU: the fp32 search runs alone")


def _both(q, r, kk):
    """(filtered, fp32) searches of the same queries: (values, indices, re-ranked per query)."""
    v, i, counts = knn.l1_filtered(np.ascontiguousarray(q), np.ascontiguousarray(r), kk, pilot=False)
    ref_v, ref_i = knn._search_cpu(q, r, kk, ("l1",), None, filtered=False)["l1"]
    return (v, i, counts), (ref_v, ref_i)


def _assert_same(q, r, kk):
    (v, i, counts), (ref_v, ref_i) = _both(q, r, kk)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(v, ref_v)  # bit for bit: the re-rank runs the fp32 kernel
    return counts


def _unit(rng, n, d, relu=True):
    x = rng.standard_normal((n, d)).astype(np.float32)
    if relu:  # post-ReLU, like the embeddings: many exact zeros (never a whole row of them)
        x = np.maximum(x, 0)
        x[x.max(axis=1) == 0, 0] = 1.0
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("d", [640, 64, 70, 127, 33, 17, 15, 3, 1])  # every remainder of a vector
def test_same_neighbours_as_the_fp32_search(d):
    rng = np.random.default_rng(d)
    r, q = _unit(rng, 5001, d), _unit(rng, 301, d)  # odd: a tile's last reference alone
    _assert_same(q, r, 30)


def test_ties_at_the_kth_distance_and_duplicated_references():
    rng = np.random.default_rng(1)
    r = _unit(rng, 6000, 128)
    r[100:400] = r[7]  # 301 copies of one reference: every query ties among them
    r[5000:5010] = r[4000]
    q = np.concatenate([r[7:8] + 1e-3, r[4000:4001], _unit(rng, 100, 128)])
    q[2:40] = r[7] + rng.standard_normal((38, 128)).astype(np.float32) * 1e-2
    for kk in (1, 30, 150, 301, 302, 700):
        _assert_same(q, r, kk)


def test_values_at_and_beyond_the_code_range():
    # the step comes from the 99.9th percentile: the few larger values clip, their error in the bound
    rng = np.random.default_rng(2)
    r, q = _unit(rng, 5000, 96), _unit(rng, 200, 96)
    r[:20] *= 40  # far outside the references' usual range: clipped at 255
    q[:20] = r[:20] * 1.001
    q[20:40] = -1.0  # below every offset: clipped at 0
    q[40:60] = 0.0
    _assert_same(q, r, 30)
    (_, (wr, wq)) = quantise(r, q)
    assert wr[:20].min() > wr[20:].max()  # clipping shows in the slack, so the bound stays true


def test_k_1000_and_as_many_references_as_k():
    rng = np.random.default_rng(3)
    r, q = _unit(rng, 8000, 64), _unit(rng, 100, 64)
    _assert_same(q, r, 1000)
    _assert_same(q[:10], r[:300], 300)  # every reference is a neighbour


def test_the_bound_holds_for_every_pair():
    # lb <= d <= ub for the float64 distance, with lb, ub the codes' sum of byte differences -+ slack
    rng = np.random.default_rng(4)
    r, q = _unit(rng, 700, 200, relu=False), _unit(rng, 50, 200, relu=False) * 1.5
    (cr, cq), (wr, wq) = quantise(r, q)
    s = float(np.quantile(r[::max(1, len(r) // 2048)] - r.min(0), 0.999)) / 255  # quantise's step
    sad = np.abs(cq[:, None, :].astype(np.int64) - cr[None].astype(np.int64)).sum(-1)
    d = np.abs(q[:, None].astype(np.float64) - r[None].astype(np.float64)).sum(-1)
    slack = wq[:, None] + wr[None]
    assert (s * (sad - slack) <= d).all() and (d <= s * (sad + slack)).all()


def _clustered(rng, n, d, centres):
    """Points around a few centres, like a trained network's embeddings: the filter keeps few."""
    x = centres[rng.integers(0, len(centres), n)] + 0.05 * rng.standard_normal((n, d)).astype(np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def test_the_sample_missing_the_k_nearest_falls_back_to_every_reference():
    # the references the strided sample sees (every 19th of 20,000) are the nearest: its 10th smallest
    # bound (the rank k = 30 asks of 1,053 samples) then keeps fewer than k, and the pass runs again
    rng = np.random.default_rng(7)
    m, d = 20000, 32
    r = 1.0 + rng.random((m, d)).astype(np.float32)
    q = np.zeros((1, d), np.float32)
    r[::19] = 0.01 * (1 + np.arange(len(r[::19]), dtype=np.float32)[:, None] / len(r[::19]))
    _assert_same(np.repeat(q, 8, 0), r, 30)


def test_chunks_after_the_pilot_and_the_fallback():
    rng = np.random.default_rng(8)
    centres = rng.standard_normal((300, 48)).astype(np.float32)
    r, q = _clustered(rng, 8000, 48, centres), _clustered(rng, 700, 48, centres)
    v, i, counts = knn.l1_filtered(q, r, 30, chunk=50)
    assert (counts[knn.FILTER_PILOT:] > 0).all() and counts.mean() < knn.FILTER_MAX_KEPT * len(r)
    ref_v, ref_i = knn._search_cpu(q, r, 30, ("l1",), None, filtered=False)["l1"]
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(v, ref_v)
    # vectors whose distances bunch together: the pilot hands the rest to the fp32 kernel
    r, q = _unit(rng, 8000, 48, relu=False), _unit(rng, 300, 48, relu=False)
    v, i, counts = knn.l1_filtered(q, r, 600)
    assert (counts[knn.FILTER_PILOT:] == 0).all()
    np.testing.assert_array_equal(i, knn._search_cpu(q, r, 600, ("l1",), None, filtered=False)["l1"][1])


def test_degenerate_codes():
    rng = np.random.default_rng(9)
    for r in (np.ones((5000, 20), np.float32),  # one point 5000 times: every distance ties
              np.where(rng.random((5000, 64)) < 0.9995, 0, 1).astype(np.float32),  # almost all zeros
              (rng.standard_normal((5000, 8)) * 1e14).astype(np.float32)):  # near the size limit
        q = np.concatenate([r[:20], rng.standard_normal((20, r.shape[1])).astype(np.float32) * r.max()])
        _assert_same(q, r, 30)


def test_search_uses_the_filter_and_gives_the_fp32_answer(monkeypatch):
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((300, 80)).astype(np.float32)
    r, q = _clustered(rng, 9000, 80, centres), _clustered(rng, 400, 80, centres)
    calls = []
    inner = knn.filtered_l1
    monkeypatch.setattr(knn, "filtered_l1", lambda *a: (inner(*a), calls.append(a[9].copy()))[0])
    d, i = knn.search(q, r, 30, "l1")["l1"]
    assert sum(map(len, calls)) == len(q)  # every query went through the filter
    ref_d, ref_i = knn._search_cpu(q, r, 30, ("l1",), None, filtered=False)["l1"]
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(d, ref_d)
    # the train set against itself (Table 2), leave-one-out as well
    calls.clear()
    for ex in (False, True):
        a = knn.search(r, r, 5, "l1", exclude_self=ex)["l1"][1]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(knn, "use_filter", lambda *a: False)
            np.testing.assert_array_equal(a, knn.search(r, r, 5, "l1", exclude_self=ex)["l1"][1])
    assert sum(map(len, calls)) == 2 * len(r)


@pytest.mark.skipif(SAD_WIDTH != 64, reason="the AVX2 kernel is forced on an AVX-512 CPU")
def test_the_avx2_kernel_gives_the_fp32_answer_too(tmp_path):
    """A CPU with AVX2 and no AVX-512 runs the 32-byte `vpsadbw`: forced here in a process of its own
    (its numba cache apart), on every vector remainder, ties and clipped values."""
    import os
    import subprocess
    import sys
    script = """
import numpy as np
from dnnknn import knn, knn_filter
assert knn_filter.SAD_WIDTH == 32
rng = np.random.default_rng(0)
for d in (640, 70, 33, 1):
    r = np.maximum(rng.standard_normal((4001, d)), 0).astype(np.float32)
    r[::7] = r[3]  # duplicated references: ties at the k-th distance
    r[5, 0] = 1e3  # beyond the code range
    q = np.concatenate([r[:50], np.maximum(rng.standard_normal((151, d)), 0).astype(np.float32)])
    v, i, counts = knn.l1_filtered(q, r, 30, pilot=False)
    ref_v, ref_i = knn._search_cpu(q, r, 30, ("l1",), None, filtered=False)["l1"]
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(v, ref_v)
    assert (counts < len(r)).mean() > 0.9  # it filtered (not the clipped query, whose slack keeps every reference)
print("ok")
"""
    env = {**os.environ, "DNNKNN_SAD_WIDTH": "32", "NUMBA_CACHE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_full_blocks_of_queries_and_whole_tiles_of_references():
    """The re-rank walks the references tile by tile for a block of queries: references a multiple of
    TILE with ties across a tile's edge, blocks of QB queries and a ragged last one, a single tile."""
    import numba
    from dnnknn.knn_filter import QB, TILE
    threads = numba.get_num_threads()
    numba.set_num_threads(min(2, threads))  # 2 threads: qb = QB for this chunk of queries
    try:
        rng = np.random.default_rng(11)
        r = _unit(rng, 16 * TILE, 64)
        r[TILE - 6:TILE + 6] = r[0]  # ties across the first tile's edge
        r[-8:] = r[1]  # and in the last tile
        q = np.concatenate([r[:1] + 1e-3, r[1:2], _unit(rng, 4 * QB + 4, 64)])  # 4 full blocks, then 6 queries
        for kk in (12, 30):
            counts = _assert_same(q, r, kk)
            assert counts[0] >= 12 and counts[1] >= 8  # the tied copies were candidates
        _assert_same(q[:13], r[:200], 30)  # one tile, not full
    finally:
        numba.set_num_threads(threads)
