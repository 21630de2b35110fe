"""Exact selection of the k nearest, for the CPU search (numba, compiled once and cached on disk).

Both paths end in `sorted_topk`: candidates (distance, index) that arrive in increasing index
order are sorted by distance with a stable LSD radix sort on the float bits (non-negative floats
order like their bit patterns), so ties keep the lower index first. That is exactly scikit-learn's
(distance, index) order, and it costs a few passes over ~1.3k candidates instead of a comparison
sort (which made k = 1000 cost as much as the distances themselves).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_MASK = np.uint32(0x7FFFFFFF)  # drop the sign bit: -0.0 sorts as 0.0


@njit(nogil=True, cache=True)
def sorted_topk(cv, ci, c, kk, out_v, out_i, key, key2, pos, pos2, hist):
    """The kk smallest of the c candidates cv[:c] (float32 >= 0) with indices ci[:c] (increasing),
    sorted by (distance, index), into out_v/out_i (kk,). key/key2 (uint32) and pos/pos2 (int32)
    hold >= c entries, hist 256: scratch, passed in so a thread allocates it once."""
    lo = np.uint32(0xFFFFFFFF)
    hi = np.uint32(0)
    bits = cv.view(np.uint32)
    for a in range(c):
        b = bits[a] & _MASK
        key[a] = b
        pos[a] = a
        lo = min(lo, b)
        hi = max(hi, b)
    for a in range(c):
        key[a] -= lo
    span = hi - lo
    shift = 0
    while shift < 32 and (span >> np.uint32(shift)) > 0:
        hist[:] = 0
        for a in range(c):
            hist[(key[a] >> np.uint32(shift)) & np.uint32(255)] += 1
        total = 0
        for h in range(256):
            cnt = hist[h]
            hist[h] = total
            total += cnt
        for a in range(c):
            h = (key[a] >> np.uint32(shift)) & np.uint32(255)
            dst = hist[h]
            hist[h] = dst + 1
            key2[dst] = key[a]
            pos2[dst] = pos[a]
        key, key2 = key2, key
        pos, pos2 = pos2, pos
        shift += 8
    for a in range(kk):
        p = pos[a]
        out_v[a] = cv[p]
        out_i[a] = ci[p]


@njit(nogil=True, cache=True)
def sample_threshold(row, rank, buf):
    """The rank-th smallest (from 0) value of a row of sample distances: the rank + 1 smallest seen
    so far are kept sorted in buf (rank is small - at most ~100 of ~1k - so insertions are rare)."""
    for a in range(rank + 1):
        v = row[a]
        p = a
        while p > 0 and buf[p - 1] > v:
            buf[p] = buf[p - 1]
            p -= 1
        buf[p] = v
    for a in range(rank + 1, len(row)):
        v = row[a]
        if v < buf[rank]:
            p = rank
            while p > 0 and buf[p - 1] > v:
                buf[p] = buf[p - 1]
                p -= 1
            buf[p] = v
    return buf[rank]


@njit(parallel=True, nogil=True, cache=True)
def vote_kernel(lookup, idx, ks, num_classes, out):
    """out[t, i] = the most common lookup[idx[i, :ks[t]]] (ties to the lowest class), for ks
    ascending; the counts grow from one k to the next, so all ks cost one pass."""
    n = idx.shape[0]
    nblocks = min(n, 64)
    for b in prange(nblocks):
        counts = np.empty(num_classes, np.int64)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            counts[:] = 0
            done = 0
            for t in range(len(ks)):
                for a in range(done, ks[t]):
                    counts[lookup[idx[i, a]]] += 1
                done = ks[t]
                best = 0
                for c in range(1, num_classes):
                    if counts[c] > counts[best]:
                        best = c
                out[t, i] = best


@njit(parallel=True, nogil=True, cache=True)
def select_dense(D, kk, vals, idxs):
    """The kk smallest of each row of D (n, m), sorted by (distance, index), into vals/idxs (n, kk).

    A threshold a little above the kk-th value - from a strided sample of the row when the row is
    long, else the exact kk-th value (introselect) - keeps about 1.25 kk candidates in one
    branch-free pass; if an unlucky sample kept fewer than kk, the exact kk-th value is used.
    Rows go in blocks so that each thread allocates its buffers once."""
    n, m = D.shape
    step = max(1, m // max(1024, 2 * kk))
    ns = (m + step - 1) // step
    rank = min(ns - 1, int(kk * ns / m * 1.25) + 16)
    nblocks = min(n, 256)
    for b in prange(nblocks):
        cv = np.empty(m, np.float32)
        ci = np.empty(m, np.int32)
        key, key2 = np.empty(m, np.uint32), np.empty(m, np.uint32)
        pos, pos2 = np.empty(m, np.int32), np.empty(m, np.int32)
        hist = np.empty(256, np.int64)
        sample = np.empty(ns, np.float32)
        for i in range(b * n // nblocks, (b + 1) * n // nblocks):
            row = D[i]
            if step > 1 and rank < ns - 1:
                for a in range(ns):
                    sample[a] = row[a * step]
                thr = np.partition(sample, rank)[rank]
            else:
                thr = np.partition(row, kk - 1)[kk - 1]
            while True:
                c = 0
                for j in range(m):
                    ci[c] = j
                    c += row[j] <= thr
                if c >= kk:
                    break
                thr = np.partition(row, kk - 1)[kk - 1]  # an unlucky sample: the exact value
            for a in range(c):
                cv[a] = row[ci[a]]
            sorted_topk(cv, ci, c, kk, vals[i], idxs[i], key, key2, pos, pos2, hist)
